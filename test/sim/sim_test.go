package sim_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/lifeboat-backup/lifeboat/kube"
	"github.com/lifeboat-backup/lifeboat/rbd/handle"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rbd"
	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lifeboat-backup/lifeboat/test/sim"
)

// newSim connects a Sim to the local stack (skips without it, fails under
// CI=true).
func newSim(t *testing.T, mod func(*sim.Options)) (*sim.Sim, sim.Env, context.Context) {
	t.Helper()
	env := sim.RequireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	opts := env.Options()
	// The stack's csi-provisioner and csi-snapshotter serve the default
	// driver - also when this env is Reef's, which shares the Pacific
	// stack's API server but names no CSI endpoint: they would provision
	// the claims made here before the Sim makes their PVs. These tests
	// check the fabricated objects, so they take a driver of their own;
	// TestLivePath takes the stack's.
	opts.Driver = uniq("sim") + ".rbd.csi.ceph.com"
	if mod != nil {
		mod(&opts)
	}
	s, err := sim.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	t.Cleanup(func() {
		if err := s.DeleteClasses(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return s, env, ctx
}

func uniq(prefix string) string { return prefix + "-" + uuid.NewString()[:8] }

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// tracker removes whatever a test created, even when it failed half way.
type tracker struct {
	s     *sim.Sim
	ns    string
	vols  []*sim.Volume
	snaps []*sim.Snapshot
}

func track(t *testing.T, s *sim.Sim, ns string) *tracker {
	tr := &tracker{s: s, ns: ns}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var errs []error
		// Newest first: restored volumes and their snapshots before sources.
		for i := len(tr.snaps) - 1; i >= 0; i-- {
			if _, err := s.DeleteSnapshot(ctx, tr.snaps[i]); err != nil {
				errs = append(errs, err)
			}
		}
		for i := len(tr.vols) - 1; i >= 0; i-- {
			v := tr.vols[i]
			if _, err := s.DeleteVolume(ctx, v); err != nil {
				errs = append(errs, err)
			}
		}
		// Trashed images (volumes with snapshots, snapshot clones with
		// restored volumes) can go once nothing hangs from them: repeat
		// until no progress.
		var ids []string
		for _, v := range tr.vols {
			ids = append(ids, v.ID)
		}
		for _, sn := range tr.snaps {
			ids = append(ids, sn.ImageID)
		}
		for progress := true; progress && len(ids) > 0; {
			progress = false
			var left []string
			var last error
			for _, id := range ids {
				if err := s.RemoveTrashed(ctx, id); err != nil {
					left, last = append(left, id), err
				} else {
					progress = true
				}
			}
			if ids = left; !progress {
				errs = append(errs, last)
			}
		}
		if ns != "" {
			if err := s.DeleteNamespace(ctx, ns); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return tr
}

type rbdInfo struct {
	Name       string   `json:"name"`
	ID         string   `json:"id"`
	Size       uint64   `json:"size"`
	Features   []string `json:"features"`
	OpFeatures []string `json:"op_features"`
	Parent     *struct {
		Pool     string `json:"pool"`
		Image    string `json:"image"`
		ID       string `json:"id"`
		Snapshot string `json:"snapshot"`
		Trash    bool   `json:"trash"`
		Overlap  uint64 `json:"overlap"`
	} `json:"parent"`
}

// rbdCLI runs the rbd command line tool (admin) and decodes its JSON.
func rbdCLI(t *testing.T, env sim.Env, out any, args ...string) {
	t.Helper()
	if _, err := exec.LookPath("rbd"); err != nil {
		// The stack installs ceph-common: without it the stack is broken.
		t.Fatalf("rbd CLI not installed: run make stack-install")
	}
	cmd := exec.Command("rbd", append([]string{"-c", env["CEPH_CONF"], "--format", "json"}, args...)...)
	b, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("rbd %v: %v: %s", args, err, ee.Stderr)
		}
		t.Fatalf("rbd %v: %v", args, err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("rbd %v: %v: %s", args, err, b)
	}
}

type rbdSnap struct {
	ID        uint64 `json:"id"`
	Name      string `json:"name"`
	Namespace struct {
		Type         string `json:"type"`
		OriginalName string `json:"original_name"`
	} `json:"namespace"`
}

// TestSnapshotLifecycle walks the whole ceph-csi + Velero life of a volume:
// fill, two CSI snapshots, checks of what they leave in Ceph and
// Kubernetes, a restore (clone of a clone) snapshotted again, deletion of
// the source volume (to the trash), flatten and orphaning.
func TestSnapshotLifecycle(t *testing.T) {
	s, env, ctx := newSim(t, nil)
	ns := uniq("sim")
	tr := track(t, s, ns)
	const size = 64 << 20

	v, err := s.CreateVolume(ctx, ns, "data", size)
	if err != nil {
		t.Fatal(err)
	}
	tr.vols = append(tr.vols, v)
	checkVolume(t, s, env, ctx, v, ns, "data", size)

	// Data, tracked in a model.
	model := make([]byte, size)
	fill1 := []sim.Region{
		{Off: 0, Len: 8 << 20, Kind: sim.Random},
		{Off: 16 << 20, Len: 12<<20 + 4096, Kind: sim.Text},
		{Off: 40<<20 + 123, Len: 1<<20 + 5, Kind: sim.Random}, // unaligned
		{Off: 50 << 20, Len: 2 << 20, Kind: sim.Zero},
		{Off: 60 << 20, Len: 4 << 20, Kind: sim.Random},
	}
	start := time.Now()
	if err := v.Fill(ctx, fill1, 1); err != nil {
		t.Fatal(err)
	}
	t.Logf("filled %d MiB in %v", 27, time.Since(start))
	sim.Render(model, 0, fill1, 1)
	sum1 := sum(model)
	if got := sim.ContentSHA256(size, fill1, 1); got != sum1 {
		t.Fatalf("ContentSHA256 %s != model %s", got, sum1)
	}
	if got, err := v.SHA256(ctx); err != nil || got != sum1 {
		t.Fatalf("volume sha256 = %s, %v; want %s", got, err, sum1)
	}

	start = time.Now()
	snap1, err := s.CreateSnapshot(ctx, v, "backup-1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CreateSnapshot took %v", time.Since(start))
	tr.snaps = append(tr.snaps, snap1)
	checkSnapshot(t, s, env, ctx, v, snap1, "backup-1")
	if got, err := s.ReadSnapshotSHA256(ctx, snap1); err != nil || got != sum1 {
		t.Fatalf("snapshot 1 sha256 = %s, %v; want %s", got, err, sum1)
	}

	// Changes, then a second snapshot (no Velero backup label).
	fill2 := []sim.Region{
		{Off: 4 << 20, Len: 8 << 20, Kind: sim.Random}, // overlaps old data and a hole
		{Off: 20 << 20, Len: 4096, Kind: sim.Text},
		{Off: 60 << 20, Len: 1 << 20, Kind: sim.Discard},
		{Off: 63 << 20, Len: 1 << 20, Kind: sim.Zero},
	}
	if err := v.Fill(ctx, fill2, 2); err != nil {
		t.Fatal(err)
	}
	sim.Render(model, 0, fill2, 2)
	sum2 := sum(model)
	if got, err := v.SHA256(ctx); err != nil || got != sum2 {
		t.Fatalf("volume sha256 after changes = %s, %v; want %s", got, err, sum2)
	}
	snap2, err := s.CreateSnapshot(ctx, v, "")
	if err != nil {
		t.Fatal(err)
	}
	tr.snaps = append(tr.snaps, snap2)
	checkSnapshot(t, s, env, ctx, v, snap2, "")
	for _, c := range []struct {
		snap *sim.Snapshot
		want string
	}{{snap1, sum1}, {snap2, sum2}} {
		if got, err := s.ReadSnapshotSHA256(ctx, c.snap); err != nil || got != c.want {
			t.Fatalf("%s sha256 = %s, %v; want %s", c.snap.ImageName, got, err, c.want)
		}
	}
	// The parent now has two trash snapshots, one per CSI snapshot.
	var parentSnaps []rbdSnap
	rbdCLI(t, env, &parentSnaps, "snap", "ls", "--all", v.Pool+"/"+v.Name)
	var trashNames []string
	for _, ps := range parentSnaps {
		if ps.Namespace.Type != "trash" {
			t.Errorf("parent has non-trash snapshot %+v", ps)
		}
		trashNames = append(trashNames, ps.Namespace.OriginalName)
	}
	slices.Sort(trashNames)
	wantNames := []string{snap1.SnapName, snap2.SnapName}
	slices.Sort(wantNames)
	if !slices.Equal(trashNames, wantNames) {
		t.Errorf("parent trash snapshots %v, want %v", trashNames, wantNames)
	}

	// Restore snapshot 1 into a new PVC: a clone of a clone.
	r, err := s.CreateVolumeFromSnapshot(ctx, snap1, ns, "restored")
	if err != nil {
		t.Fatal(err)
	}
	tr.vols = append(tr.vols, r)
	checkVolume(t, s, env, ctx, r, ns, "restored", size)
	ri := rbdInfo{}
	rbdCLI(t, env, &ri, "info", r.Pool+"/"+r.Name)
	if ri.Parent == nil || ri.Parent.Image != snap1.ImageName || ri.Parent.Snapshot != snap1.SnapName {
		t.Errorf("restored volume parent %+v, want %s@%s", ri.Parent, snap1.ImageName, snap1.SnapName)
	}
	claim, err := s.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "restored", metav1.GetOptions{})
	if err != nil || claim.Spec.DataSource == nil || claim.Spec.DataSource.Name != snap1.VSName || claim.Spec.DataSource.Kind != "VolumeSnapshot" {
		t.Errorf("restored pvc dataSource: %v %+v", err, claim.Spec.DataSource)
	}
	if got, err := r.SHA256(ctx); err != nil || got != sum1 {
		t.Fatalf("restored volume sha256 = %s, %v; want %s", got, err, sum1)
	}
	// Write into the restored volume and snapshot it: csi-snap-3 ->
	// csi-vol-r -> csi-snap-1 -> csi-vol-v.
	rmodel := make([]byte, size) // restored from snapshot 1
	sim.Render(rmodel, 0, fill1, 1)
	fill3 := []sim.Region{
		{Off: 30 << 20, Len: 3 << 20, Kind: sim.Random},
		{Off: 0, Len: 4096, Kind: sim.Discard},
		{Off: 17<<20 + 1000, Len: 5 << 20, Kind: sim.Discard}, // parent data, unaligned, across objects
	}
	if err := r.Fill(ctx, fill3, 3); err != nil {
		t.Fatal(err)
	}
	sim.Render(rmodel, 0, fill3, 3)
	sum3 := sum(rmodel)
	snap3, err := s.CreateSnapshot(ctx, r, "backup-3")
	if err != nil {
		t.Fatal(err)
	}
	tr.snaps = append(tr.snaps, snap3)
	checkSnapshot(t, s, env, ctx, r, snap3, "backup-3")
	if got, err := s.ReadSnapshotSHA256(ctx, snap3); err != nil || got != sum3 {
		t.Fatalf("snapshot of restored volume sha256 = %s, %v; want %s", got, err, sum3)
	}
	if got, err := s.ReadSnapshotSHA256(ctx, snap1); err != nil || got != sum1 {
		t.Fatalf("snapshot 1 changed after restore writes: %s, %v", got, err)
	}

	// Lookups from the objects alone.
	lv, err := s.LookupVolume(ctx, ns, "data")
	if err != nil || lv.Name != v.Name || lv.ID != v.ID || lv.Handle != v.Handle || lv.Size != v.Size || lv.RequestName != v.RequestName {
		t.Errorf("LookupVolume = %+v, %v; want %+v", lv, err, v)
	}
	ls, err := s.LookupSnapshot(ctx, ns, snap1.VSName)
	if err != nil || ls.ImageName != snap1.ImageName || ls.Handle != snap1.Handle || ls.ImageID != snap1.ImageID ||
		ls.ParentImage != v.Name || ls.Source == nil || ls.Source.Name != v.Name || ls.Backup != "backup-1" ||
		ls.Size != size || ls.ContentName != snap1.ContentName || ls.RequestName != snap1.RequestName {
		t.Errorf("LookupSnapshot = %+v, %v; want %+v", ls, err, snap1)
	}

	// Deleting the source volume while snapshots remain: trash.
	trashed, err := s.DeleteVolume(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	if !trashed {
		t.Error("DeleteVolume with snapshots did not trash the image")
	}
	if in, err := s.InTrash(v.ID); err != nil || !in {
		t.Errorf("volume image %s in trash = %v, %v", v.ID, in, err)
	}
	if _, err := s.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pvc data still there: %v", err)
	}
	if _, err := s.Kube.CoreV1().PersistentVolumes().Get(ctx, v.PV, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pv %s still there: %v", v.PV, err)
	}
	if _, err := s.VolumeJournal(v.UUID); err == nil {
		t.Errorf("journal csi.volume.%s survived DeleteVolume", v.UUID)
	}
	ri = rbdInfo{}
	rbdCLI(t, env, &ri, "info", snap1.ImageName, "-p", v.Pool)
	if ri.Parent == nil || !ri.Parent.Trash || ri.Parent.Image != v.Name {
		t.Errorf("snapshot clone parent after delete: %+v", ri.Parent)
	}
	for _, c := range []struct {
		snap *sim.Snapshot
		want string
	}{{snap1, sum1}, {snap2, sum2}, {snap3, sum3}} {
		if got, err := s.ReadSnapshotSHA256(ctx, c.snap); err != nil || got != c.want {
			t.Fatalf("%s sha256 with trashed parent = %s, %v; want %s", c.snap.ImageName, got, err, c.want)
		}
	}

	// Flatten snapshot 2: no parent any more, same data.
	if err := s.Flatten(ctx, snap2); err != nil {
		t.Fatal(err)
	}
	ri = rbdInfo{}
	rbdCLI(t, env, &ri, "info", v.Pool+"/"+snap2.ImageName)
	if ri.Parent != nil {
		t.Errorf("flattened clone still has parent %+v", ri.Parent)
	}
	if got, err := s.ReadSnapshotSHA256(ctx, snap2); err != nil || got != sum2 {
		t.Fatalf("flattened snapshot sha256 = %s, %v; want %s", got, err, sum2)
	}

	// Orphan snapshot 2: objects gone, image and journal kept.
	if err := s.DeleteContent(ctx, snap2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, snap2.ContentName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("VSC %s still there: %v", snap2.ContentName, err)
	}
	if _, err := s.Snap.SnapshotV1().VolumeSnapshots(ns).Get(ctx, snap2.VSName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("VS %s still there: %v", snap2.VSName, err)
	}
	orphan, err := s.SnapshotFromHandle(ctx, snap2.Handle)
	if err != nil || orphan.ImageName != snap2.ImageName || orphan.ParentImage != v.Name || orphan.Size != size {
		t.Fatalf("SnapshotFromHandle(orphan) = %+v, %v", orphan, err)
	}

	// Tear down in the order a cluster would, checking trash handling.
	if trashed, err := s.DeleteSnapshot(ctx, snap3); err != nil || trashed {
		t.Fatalf("DeleteSnapshot(snap3) = %v, %v", trashed, err)
	}
	// snap1's clone still has the restored volume as child: trash.
	if trashed, err := s.DeleteSnapshot(ctx, snap1); err != nil || !trashed {
		t.Fatalf("DeleteSnapshot(snap1) with a restored child = %v, %v", trashed, err)
	}
	if got, err := r.SHA256(ctx); err != nil || got != sum3 {
		t.Fatalf("restored volume after its parent snapshot went to trash = %s, %v; want %s", got, err, sum3)
	}
	if trashed, err := s.DeleteVolume(ctx, r); err != nil || trashed {
		t.Fatalf("DeleteVolume(restored) = %v, %v", trashed, err)
	}
	if trashed, err := s.DeleteSnapshot(ctx, snap2); err != nil || trashed {
		t.Fatalf("DeleteSnapshot(snap2) = %v, %v", trashed, err)
	}
	// Nothing hangs from the trashed images any more: they can go.
	for _, id := range []string{snap1.ImageID, v.ID} {
		if err := s.RemoveTrashed(ctx, id); err != nil {
			t.Fatal(err)
		}
		if in, _ := s.InTrash(id); in {
			t.Errorf("%s still in trash", id)
		}
	}
	dir, err := s.JournalDirectory(s.SnapshotDirectory())
	if err != nil {
		t.Fatal(err)
	}
	for _, sn := range []*sim.Snapshot{snap1, snap2, snap3} {
		if _, ok := dir["csi.snap."+sn.RequestName]; ok {
			t.Errorf("journal directory still has %s", sn.RequestName)
		}
	}
	tr.snaps, tr.vols = nil, nil
}

func checkVolume(t *testing.T, s *sim.Sim, env sim.Env, ctx context.Context, v *sim.Volume, ns, pvc string, size uint64) {
	t.Helper()
	o := s.Options()
	if v.Name != "csi-vol-"+v.UUID || v.Size != size || v.Namespace != ns || v.PVC != pvc {
		t.Errorf("volume %+v", v)
	}
	h, err := handle.Decode(v.Handle)
	if err != nil || h.ClusterID != o.ClusterID || h.PoolID != s.PoolID() || h.UUID != v.UUID {
		t.Errorf("volume handle %s = %+v, %v", v.Handle, h, err)
	}
	// Journal.
	dir, err := s.JournalDirectory(s.VolumeDirectory())
	if err != nil {
		t.Fatal(err)
	}
	if dir["csi.volume."+v.RequestName] != v.UUID {
		t.Errorf("%s[csi.volume.%s] = %q, want %s", s.VolumeDirectory(), v.RequestName, dir["csi.volume."+v.RequestName], v.UUID)
	}
	j, err := s.VolumeJournal(v.UUID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"csi.imagename": v.Name, "csi.volname": v.RequestName, "csi.imageid": v.ID, "csi.volume.owner": ns}
	for k, w := range want {
		if j[k] != w {
			t.Errorf("csi.volume.%s[%s] = %q, want %q", v.UUID, k, j[k], w)
		}
	}
	// Image.
	var info rbdInfo
	rbdCLI(t, env, &info, "info", v.Pool+"/"+v.Name)
	if info.ID != v.ID || info.Size != size {
		t.Errorf("rbd info %+v", info)
	}
	// Kubernetes.
	claim, err := s.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, pvc, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v.RequestName != "pvc-"+string(claim.UID) || claim.Spec.VolumeName != v.PV || claim.Status.Phase != corev1.ClaimBound {
		t.Errorf("pvc %+v", claim)
	}
	if q := claim.Status.Capacity[corev1.ResourceStorage]; q.Value() != int64(size) {
		t.Errorf("pvc capacity %v", q.String())
	}
	pv, err := s.Kube.CoreV1().PersistentVolumes().Get(ctx, v.PV, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != o.Driver || pv.Spec.CSI.VolumeHandle != v.Handle ||
		pv.Spec.CSI.VolumeAttributes["imageName"] != v.Name || pv.Spec.CSI.VolumeAttributes["pool"] != o.Pool ||
		pv.Spec.CSI.VolumeAttributes["clusterID"] != o.ClusterID {
		t.Errorf("pv csi source %+v", pv.Spec.CSI)
	}
	if pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != claim.UID || pv.Status.Phase != corev1.VolumeBound {
		t.Errorf("pv claimRef %+v phase %s", pv.Spec.ClaimRef, pv.Status.Phase)
	}
}

func checkSnapshot(t *testing.T, s *sim.Sim, env sim.Env, ctx context.Context, v *sim.Volume, snap *sim.Snapshot, backup string) {
	t.Helper()
	o := s.Options()
	if snap.ImageName != "csi-snap-"+snap.UUID || snap.SnapName != snap.ImageName || snap.Size != v.Size || snap.ParentImage != v.Name {
		t.Errorf("snapshot %+v", snap)
	}
	h, err := handle.Decode(snap.Handle)
	if err != nil || h.ClusterID != o.ClusterID || h.PoolID != s.PoolID() || h.UUID != snap.UUID {
		t.Errorf("snapshot handle %s = %+v, %v", snap.Handle, h, err)
	}

	// The clone, through go-ceph.
	clone, err := rbd.OpenImageReadOnly(s.IOContext(), snap.ImageName, rbd.NoSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	defer clone.Close()
	features, err := clone.GetFeatures()
	if err != nil {
		t.Fatal(err)
	}
	if features&^rbd.FeatureOperations != rbd.FeatureLayering|rbd.FeatureDeepFlatten {
		fs := rbd.FeatureSet(features)
		t.Errorf("clone features %v, want exactly layering, deep-flatten (+operations)", fs.Names())
	}
	parent, err := clone.GetParent()
	if err != nil {
		t.Fatalf("clone parent: %v", err)
	}
	if parent.Image.ImageName != v.Name || parent.Image.ImageID != v.ID || parent.Snap.ID != snap.ParentSnapID {
		t.Errorf("clone parent %+v, want %s (%s) snap %d", parent, v.Name, v.ID, snap.ParentSnapID)
	}
	snaps, err := clone.GetSnapshotNames()
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 || snaps[0].Name != snap.SnapName {
		t.Errorf("clone snapshots %+v, want one %s", snaps, snap.SnapName)
	} else if ns, err := clone.GetSnapNamespaceType(snaps[0].Id); err != nil || ns != rbd.SnapNamespaceTypeUser {
		t.Errorf("clone snapshot namespace %v, %v", ns, err)
	}

	// The parent's snapshot is in the trash namespace under the CSI name.
	pimg, err := rbd.OpenImageReadOnly(s.IOContext(), v.Name, rbd.NoSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	defer pimg.Close()
	if nsType, err := pimg.GetSnapNamespaceType(snap.ParentSnapID); err != nil || nsType != rbd.SnapNamespaceTypeTrash {
		t.Errorf("parent snapshot %d namespace %v, %v; want trash", snap.ParentSnapID, nsType, err)
	}
	if orig, err := pimg.GetSnapTrashNamespace(snap.ParentSnapID); err != nil || orig != snap.SnapName {
		t.Errorf("parent trash snapshot original name %q, %v; want %s", orig, err, snap.SnapName)
	}
	if kids, err := s.Children(v.Name); err != nil || !slices.Contains(kids, v.Pool+"/"+snap.ImageName) {
		t.Errorf("children of %s: %v, %v", v.Name, kids, err)
	}

	// The same through `rbd info`, as an operator sees it.
	var info rbdInfo
	rbdCLI(t, env, &info, "info", v.Pool+"/"+snap.ImageName)
	slices.Sort(info.Features)
	if !slices.Equal(info.Features, []string{"deep-flatten", "layering", "operations"}) || !slices.Equal(info.OpFeatures, []string{"clone-child"}) {
		t.Errorf("rbd info features %v op_features %v", info.Features, info.OpFeatures)
	}
	if info.Parent == nil || info.Parent.Image != v.Name || info.Parent.Overlap != v.Size || info.Parent.Pool != v.Pool {
		t.Errorf("rbd info parent %+v", info.Parent)
	}
	if info.Parent != nil && (info.Parent.Snapshot == snap.SnapName || uuid.Validate(info.Parent.Snapshot) != nil) {
		t.Errorf("rbd info parent snapshot %q: want a trash uuid", info.Parent.Snapshot)
	}

	// Journal.
	dir, err := s.JournalDirectory(s.SnapshotDirectory())
	if err != nil {
		t.Fatal(err)
	}
	if dir["csi.snap."+snap.RequestName] != snap.UUID {
		t.Errorf("%s[csi.snap.%s] = %q, want %s", s.SnapshotDirectory(), snap.RequestName, dir["csi.snap."+snap.RequestName], snap.UUID)
	}
	j, err := s.SnapshotJournal(snap.UUID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"csi.imagename": snap.ImageName, "csi.snapname": snap.RequestName, "csi.source": v.Name, "csi.imageid": snap.ImageID}
	for k, w := range want {
		if j[k] != w {
			t.Errorf("csi.snap.%s[%s] = %q, want %q", snap.UUID, k, j[k], w)
		}
	}
	if len(j) != len(want) {
		t.Errorf("csi.snap.%s has extra keys: %v", snap.UUID, j)
	}

	// Kubernetes objects.
	vs, err := s.Snap.SnapshotV1().VolumeSnapshots(v.Namespace).Get(ctx, snap.VSName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(vs.Name, "velero-"+v.PVC+"-") || snap.RequestName != "snapshot-"+string(vs.UID) || snap.ContentName != "snapcontent-"+string(vs.UID) {
		t.Errorf("vs name %s uid %s; snapshot %+v", vs.Name, vs.UID, snap)
	}
	if backup == "" {
		if _, ok := vs.Labels["velero.io/backup-name"]; ok {
			t.Errorf("vs has backup label without a backup: %v", vs.Labels)
		}
	} else if vs.Labels["velero.io/backup-name"] != backup {
		t.Errorf("vs labels %v", vs.Labels)
	}
	if vs.Spec.Source.PersistentVolumeClaimName == nil || *vs.Spec.Source.PersistentVolumeClaimName != v.PVC ||
		vs.Spec.VolumeSnapshotClassName == nil || *vs.Spec.VolumeSnapshotClassName != o.SnapshotClass {
		t.Errorf("vs spec %+v", vs.Spec)
	}
	st := vs.Status
	if st == nil || st.BoundVolumeSnapshotContentName == nil || *st.BoundVolumeSnapshotContentName != snap.ContentName ||
		st.ReadyToUse == nil || !*st.ReadyToUse || st.RestoreSize == nil || st.RestoreSize.Value() != int64(v.Size) ||
		st.CreationTime == nil || st.CreationTime.Unix() != snap.CreatedAt.Unix() {
		t.Errorf("vs status %+v", st)
	}
	if vs.Annotations["velero.io/csi-volumesnapshot-handle"] != snap.Handle || vs.Annotations["velero.io/csi-driver-name"] != o.Driver ||
		vs.Annotations["velero.io/csi-vsc-deletion-policy"] != "Retain" || vs.Annotations["velero.io/csi-volumesnapshot-restore-size"] == "" {
		t.Errorf("vs annotations %v", vs.Annotations)
	}
	vsc, err := s.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, snap.ContentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if vsc.Spec.Driver != o.Driver || vsc.Spec.DeletionPolicy != "Retain" || vsc.Spec.Source.VolumeHandle == nil ||
		*vsc.Spec.Source.VolumeHandle != v.Handle || vsc.Spec.VolumeSnapshotRef.UID != vs.UID ||
		vsc.Spec.VolumeSnapshotRef.Name != vs.Name || vsc.Spec.VolumeSnapshotClassName == nil {
		t.Errorf("vsc spec %+v", vsc.Spec)
	}
	if backup != "" && vsc.Labels["velero.io/backup-name"] != backup {
		t.Errorf("vsc labels %v", vsc.Labels)
	}
	cs := vsc.Status
	if cs == nil || cs.SnapshotHandle == nil || *cs.SnapshotHandle != snap.Handle || cs.ReadyToUse == nil || !*cs.ReadyToUse ||
		cs.RestoreSize == nil || *cs.RestoreSize != int64(v.Size) || cs.CreationTime == nil || *cs.CreationTime != snap.CreatedAt.UnixNano() {
		t.Errorf("vsc status %+v", cs)
	}
	if d := time.Since(snap.CreatedAt); d < 0 || d > 5*time.Minute {
		t.Errorf("snapshot creation time %v is off", snap.CreatedAt)
	}
	class, err := s.Snap.SnapshotV1().VolumeSnapshotClasses().Get(ctx, o.SnapshotClass, metav1.GetOptions{})
	if err != nil || class.Labels["velero.io/csi-volumesnapshot-class"] != "true" || class.Driver != o.Driver || class.DeletionPolicy != "Retain" {
		t.Errorf("volumesnapshotclass %+v, %v", class, err)
	}
}

// TestRadosNamespace runs volumes and snapshots in a RADOS namespace that
// the Sim creates.
func TestRadosNamespace(t *testing.T) {
	radosNS := uniq("simns")
	s, env, ctx := newSim(t, func(o *sim.Options) {
		o.RadosNamespace = radosNS
		o.VolumeFeatures = "layering" // Rook's shipped example
	})
	if o := s.Options(); o.StorageClass == sim.DefaultStorageClass || o.SnapshotClass == sim.DefaultSnapshotClass {
		t.Errorf("non-default options share the default classes: %+v", o)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if err := s.DeleteClasses(ctx); err != nil {
			t.Error(err)
		}
		cmd := exec.Command("rbd", "-c", env["CEPH_CONF"], "namespace", "remove", s.Options().Pool+"/"+radosNS)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("rbd namespace remove: %v: %s", err, out)
		}
	})
	ns := uniq("sim")
	tr := track(t, s, ns)
	v, err := s.CreateVolume(ctx, ns, "vol", 10<<20)
	if err != nil {
		t.Fatal(err)
	}
	tr.vols = append(tr.vols, v)
	regions := []sim.Region{{Off: 1 << 20, Len: 3 << 20, Kind: sim.Text}}
	if err := v.Fill(ctx, regions, 5); err != nil {
		t.Fatal(err)
	}
	snap, err := s.CreateSnapshot(ctx, v, "b")
	if err != nil {
		t.Fatal(err)
	}
	tr.snaps = append(tr.snaps, snap)
	if got, err := s.ReadSnapshotSHA256(ctx, snap); err != nil || got != sim.ContentSHA256(10<<20, regions, 5) {
		t.Fatalf("sha256 %s, %v", got, err)
	}
	var info rbdInfo
	rbdCLI(t, env, &info, "info", "--namespace", radosNS, s.Options().Pool+"/"+v.Name)
	// "operations" is there because the volume is now a clone v2 parent
	// with a snapshot in the trash namespace.
	if !slices.Equal(info.Features, []string{"layering", "operations"}) || !slices.Equal(info.OpFeatures, []string{"clone-parent", "snap-trash"}) {
		t.Errorf("volume features %v op_features %v, want layering (+operations; clone-parent, snap-trash)", info.Features, info.OpFeatures)
	}
	info = rbdInfo{}
	rbdCLI(t, env, &info, "info", "--namespace", radosNS, s.Options().Pool+"/"+snap.ImageName)
	if info.Parent == nil || info.Parent.Image != v.Name || !strings.Contains(fmt.Sprint(info.Features), "deep-flatten") {
		t.Errorf("clone %+v", info)
	}
	// The journal lives in the namespace, not the default one.
	valFile := t.TempDir() + "/val"
	if out, err := exec.Command("rados", "-c", env["CEPH_CONF"], "-p", s.Options().Pool, "-N", radosNS,
		"getomapval", "csi.snap."+snap.UUID, "csi.source", valFile).CombinedOutput(); err != nil {
		t.Errorf("rados getomapval in namespace: %v: %s", err, out)
	} else if b, _ := os.ReadFile(valFile); string(b) != v.Name {
		t.Errorf("csi.source in namespace = %q, want %s", b, v.Name)
	}
	if err := exec.Command("rados", "-c", env["CEPH_CONF"], "-p", s.Options().Pool,
		"stat", "csi.snap."+snap.UUID).Run(); err == nil {
		t.Errorf("csi.snap.%s exists outside the namespace", snap.UUID)
	}
	pv, err := s.Kube.CoreV1().PersistentVolumes().Get(ctx, v.PV, metav1.GetOptions{})
	if err != nil || pv.Spec.CSI.VolumeAttributes["radosNamespace"] != radosNS {
		t.Errorf("pv attributes %v, %v", pv.Spec.CSI.VolumeAttributes, err)
	}
}

// TestInstallRook installs the Rook objects into a private namespace and
// checks the config entry merge.
func TestInstallRook(t *testing.T) {
	rookNS := uniq("sim-rook")
	s, env, ctx := newSim(t, func(o *sim.Options) { o.RookNamespace = rookNS })
	t.Cleanup(func() {
		ctx := context.Background()
		_ = s.Kube.CoreV1().ConfigMaps(rookNS).Delete(ctx, sim.RookConfigMap, metav1.DeleteOptions{})
		_ = s.Kube.CoreV1().Secrets(rookNS).Delete(ctx, sim.RookSecret, metav1.DeleteOptions{})
		if err := s.DeleteNamespace(ctx, rookNS); err != nil {
			t.Error(err)
		}
	})
	key, err := s.AuthGetKey(ctx, sim.DefaultCSIUserID)
	if err != nil {
		t.Fatal(err)
	}
	if k := env["CEPH_CSI_KEY"]; k != "" && k != key {
		t.Errorf("AuthGetKey %q != CEPH_CSI_KEY %q", key, k)
	}
	mons := env.Monitors()
	if err := s.InstallRook(ctx, []string{"127.0.0.9:6789"}, "someone", "x"); err != nil {
		t.Fatal(err)
	}
	// Another cluster's entry, with fields we do not know, must survive.
	cm, err := s.Kube.CoreV1().ConfigMaps(rookNS).Get(ctx, sim.RookConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var entries []map[string]any
	if err := json.Unmarshal([]byte(cm.Data[sim.RookConfigKey]), &entries); err != nil {
		t.Fatal(err)
	}
	entries = append(entries, map[string]any{"clusterID": "other", "monitors": []string{"127.0.0.8:6789"}, "cephFS": map[string]any{"subvolumeGroup": "csi"}})
	b, _ := json.Marshal(entries)
	cm.Data[sim.RookConfigKey] = string(b)
	if _, err := s.Kube.CoreV1().ConfigMaps(rookNS).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.InstallRook(ctx, mons, sim.DefaultCSIUserID, key); err != nil {
		t.Fatal(err)
	}
	cm, err = s.Kube.CoreV1().ConfigMaps(rookNS).Get(ctx, sim.RookConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []kube.CSICluster // what lifeboat itself parses
	if err := json.Unmarshal([]byte(cm.Data[sim.RookConfigKey]), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ClusterID != s.Options().ClusterID || !slices.Equal(got[0].Monitors, mons) ||
		got[1].ClusterID != "other" || !strings.Contains(cm.Data[sim.RookConfigKey], "subvolumeGroup") {
		t.Errorf("config %s", cm.Data[sim.RookConfigKey])
	}
	if err := s.UninstallRook(ctx); err != nil {
		t.Fatal(err)
	}
	cm, err = s.Kube.CoreV1().ConfigMaps(rookNS).Get(ctx, sim.RookConfigMap, metav1.GetOptions{})
	if err != nil || strings.Contains(cm.Data[sim.RookConfigKey], `"`+s.Options().ClusterID+`"`) || !strings.Contains(cm.Data[sim.RookConfigKey], `"other"`) {
		t.Errorf("after UninstallRook: %s, %v", cm.Data[sim.RookConfigKey], err)
	}
	if err := s.InstallRook(ctx, mons, sim.DefaultCSIUserID, key); err != nil {
		t.Fatal(err)
	}
	sec, err := s.Kube.CoreV1().Secrets(rookNS).Get(ctx, sim.RookSecret, metav1.GetOptions{})
	if err != nil || string(sec.Data["userID"]) != sim.DefaultCSIUserID || string(sec.Data["userKey"]) != key {
		t.Errorf("secret %v, %v", sec.Data, err)
	}
	// The monitors and key actually work for the CSI user.
	if _, err := exec.LookPath("rbd"); err == nil {
		args := []string{"-m", strings.Join(mons, ","), "--id", sim.DefaultCSIUserID, "--key", key, "ls", s.Options().Pool}
		if out, err := exec.Command("rbd", args...).CombinedOutput(); err != nil {
			t.Errorf("rbd ls as %s with monitors %v: %v: %s", sim.DefaultCSIUserID, mons, err, out)
		}
	}
}

// TestFillLarge measures filling a big volume (LIFEBOAT_SIM_LARGE=2G etc.).
func TestFillLarge(t *testing.T) {
	sizeStr := os.Getenv("LIFEBOAT_SIM_LARGE")
	if sizeStr == "" {
		t.Skip("set LIFEBOAT_SIM_LARGE=2G to measure filling a large volume")
	}
	size, err := sim.ParseSize(sizeStr)
	if err != nil {
		t.Fatal(err)
	}
	s, _, ctx := newSim(t, nil)
	ns := uniq("sim")
	tr := track(t, s, ns)
	v, err := s.CreateVolume(ctx, ns, "big", size)
	if err != nil {
		t.Fatal(err)
	}
	tr.vols = append(tr.vols, v)
	regions := []sim.Region{
		{Off: 0, Len: size / 2, Kind: sim.Random},
		{Off: size / 2, Len: size / 4, Kind: sim.Text},
	}
	start := time.Now()
	if err := v.Fill(ctx, regions, 9); err != nil {
		t.Fatal(err)
	}
	fill := time.Since(start)
	start = time.Now()
	snap, err := s.CreateSnapshot(ctx, v, "big")
	if err != nil {
		t.Fatal(err)
	}
	tr.snaps = append(tr.snaps, snap)
	snapDur := time.Since(start)
	start = time.Now()
	got, err := s.ReadSnapshotSHA256(ctx, snap)
	if err != nil {
		t.Fatal(err)
	}
	read := time.Since(start)
	if want := sim.ContentSHA256(size, regions, 9); got != want {
		t.Fatalf("sha256 %s != %s", got, want)
	}
	mib := float64(size*3/4) / (1 << 20)
	t.Logf("fill %.0f MiB of %s: %v (%.0f MiB/s); snapshot %v; read+sha256 of %s: %v (%.0f MiB/s)",
		mib, sizeStr, fill, mib/fill.Seconds(), snapDur, sizeStr, read, float64(size)/(1<<20)/read.Seconds())
}

// TestLivePath: with the stack's CSI sidecars serving the Sim's driver, the
// Sim's snapshots go through snapshot-controller, csi-snapshotter and lbcsi,
// and its PVCs are pre-bound so csi-provisioner leaves them alone.
func TestLivePath(t *testing.T) {
	env := sim.RequireEnv(t)
	opts := env.Options()
	if opts.LiveDriver == "" || opts.LiveDriver != opts.Driver {
		msg := fmt.Sprintf("the stack runs no CSI sidecars for %s (env CSI_ENDPOINT, CSI_DRIVER): run `make stack-up`", opts.Driver)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	s, _, ctx := newSim(t, func(o *sim.Options) { *o = opts })
	ns := uniq("live")
	tr := track(t, s, ns)
	v, err := s.CreateVolume(ctx, ns, "data", 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	tr.vols = append(tr.vols, v)
	pvc, err := s.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
	if err != nil || v.PV == "pvc-"+string(pvc.UID) || pvc.Spec.VolumeName != v.PV {
		t.Errorf("pvc %v (err %v) not pre-bound to %s", pvc.Spec.VolumeName, err, v.PV)
	}
	regions := []sim.Region{{Off: 0, Len: 2 << 20, Kind: sim.Random}}
	if err := v.Fill(ctx, regions, 7); err != nil {
		t.Fatal(err)
	}
	want := sim.ContentSHA256(8<<20, regions, 7)
	snap, err := s.CreateSnapshot(ctx, v, "b-live")
	if err != nil {
		t.Fatal(err)
	}
	tr.snaps = append(tr.snaps, snap)
	vsc, err := s.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, snap.ContentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// csi-snapshotter wrote the handle lbcsi returned, and the finalizer
	// says a real controller owns the content.
	if vsc.Status == nil || vsc.Status.SnapshotHandle == nil || *vsc.Status.SnapshotHandle != snap.Handle ||
		vsc.Spec.DeletionPolicy != "Retain" || vsc.Labels[sim.VeleroBackupNameLabel] != "b-live" || len(vsc.Finalizers) == 0 {
		t.Errorf("volumesnapshotcontent %s: status %+v policy %s labels %v finalizers %v",
			vsc.Name, vsc.Status, vsc.Spec.DeletionPolicy, vsc.Labels, vsc.Finalizers)
	}
	if got, err := s.ReadSnapshotSHA256(ctx, snap); err != nil || got != want {
		t.Fatalf("snapshot sha256 %s, %v; want %s", got, err, want)
	}
	r, err := s.CreateVolumeFromSnapshot(ctx, snap, ns, "restored")
	if err != nil {
		t.Fatal(err)
	}
	tr.vols = append(tr.vols, r)
	if got, err := r.SHA256(ctx); err != nil || got != want {
		t.Errorf("restored sha256 %s, %v; want %s", got, err, want)
	}
	trashed, err := s.DeleteSnapshot(ctx, snap)
	if err != nil || !trashed {
		t.Errorf("DeleteSnapshot with a restored child = %v, %v; want the clone in the trash", trashed, err)
	}
	if _, err := s.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, snap.ContentName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("volumesnapshotcontent %s after DeleteSnapshot: %v", snap.ContentName, err)
	}
	if j, err := s.SnapshotJournal(snap.UUID); err == nil {
		t.Errorf("journal csi.snap.%s left: %v", snap.UUID, j)
	}
}
