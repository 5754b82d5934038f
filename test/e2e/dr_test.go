//go:build e2e

package e2e

// Disaster recovery: `lifeboat restore --velero-backup` recreates, in a new
// Ceph cluster, every CSI snapshot of a Velero backup the way ceph-csi
// left it, from the repository alone.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	librbd "github.com/ceph/go-ceph/rbd"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/uuid"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/lifeboat-backup/lifeboat/rbd/handle"
	"github.com/lifeboat-backup/lifeboat/test/csidriver"
	"github.com/lifeboat-backup/lifeboat/test/sim"
)

// rehydration is `lifeboat restore --velero-backup -o json`.
type rehydration struct {
	VeleroBackup string `json:"veleroBackup"`
	Volumes      []struct {
		PVC       string   `json:"pvc"`
		BackupID  string   `json:"backupID"`
		OldHandle string   `json:"oldHandle"`
		NewHandle string   `json:"newHandle"`
		Pool      string   `json:"pool"`
		PoolID    int64    `json:"poolID"`
		Namespace string   `json:"namespace"`
		Image     string   `json:"image"`
		Snapshot  string   `json:"snapshot"`
		State     string   `json:"state"`
		Reason    string   `json:"reason"`
		Lacks     []string `json:"lacks"`
	} `json:"volumes"`
	ConfigMap string   `json:"resourceModifierConfigMap"`
	Command   string   `json:"veleroRestoreCommand"`
	Notes     []string `json:"notes"`
}

func (r rehydration) states() map[string]string {
	m := map[string]string{}
	for _, v := range r.Volumes {
		m[v.PVC] = v.State
	}
	return m
}

// poolIDOf reads a pool's id with the admin CLI.
func poolIDOf(t testing.TB, conf, pool string) int64 {
	t.Helper()
	for _, line := range strings.Split(cephTool(t, conf, "ceph", "osd", "lspools"), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == pool {
			id, err := strconv.ParseInt(f[0], 10, 64)
			if err == nil {
				return id
			}
		}
	}
	t.Fatalf("no pool %s in the cluster of %s", pool, conf)
	return 0
}

// renumberPool recreates pool (empty) until its id is not avoid: a new
// cluster numbers pools itself, so this is what a real new site may get.
func renumberPool(t testing.TB, conf, pool string, avoid int64) int64 {
	t.Helper()
	for poolIDOf(t, conf, pool) == avoid {
		cephTool(t, conf, "ceph", "osd", "pool", "create", "filler-"+strconv.FormatInt(time.Now().UnixNano(), 36), "8", "8")
		cephTool(t, conf, "ceph", "osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it")
		cephTool(t, conf, "ceph", "osd", "pool", "create", pool, "8", "8")
		cephTool(t, conf, "rbd", "pool", "init", pool)
	}
	return poolIDOf(t, conf, pool)
}

// startDriver serves our CSI driver (test/csidriver) in the test process
// on a socket of its own, with a config.json of its own.
func startDriver(t *testing.T) (csi.ControllerClient, string) {
	t.Helper()
	dir := t.TempDir()
	cfg, sock := filepath.Join(dir, "config.json"), filepath.Join(dir, "csi.sock")
	d := csidriver.New(csidriver.Options{ConfigPath: cfg, InstanceID: "dr-" + uuid.NewString()[:8],
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx, "unix://"+sock) }()
	t.Cleanup(func() { stop(); <-served })
	waitUntil(t, "the driver's socket", 5*time.Second, func() bool { _, err := os.Stat(sock); return err == nil })
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return csi.NewControllerClient(cc), cfg
}

// omapVal reads one omap value of a replicapool object in namespace ns.
func omapVal(t testing.TB, conf, ns, obj, key string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "val")
	cephTool(t, conf, "rados", "-p", "replicapool", "-N", ns, "getomapval", obj, key, f)
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// repoint makes the world's clusterID name cluster c in ceph-csi's config,
// and its own Secret hold c's CSI key: the new site after a disaster.
func (w *world) repoint(t *testing.T, c *cluster, secret string) {
	t.Helper()
	ctx := context.Background()
	rookMu.Lock()
	err := w.sim.InstallRook(ctx, c.env.Monitors(), env.Get("CEPH_CSI_USER"), env.Get("CEPH_CSI_KEY"))
	rookMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	ns := w.sim.Options().RookNamespace
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: secret},
		Data: map[string][]byte{"userID": []byte(c.env.Get("CEPH_CSI_USER")), "userKey": []byte(c.env.Get("CEPH_CSI_KEY"))}}
	if _, err := w.sim.Kube.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (w *world) rehydrate(t *testing.T, repo *bucket, want int, args ...string) (rehydration, result) {
	t.Helper()
	r := w.run(append(append([]string{"restore", "-o", "json"}, args...), repo.flags()...)...)
	var out rehydration
	if r.code != want {
		t.Fatalf("restore %v: exit %d, want %d: %s\n%s", args, r.code, want, r.stderr, r.stdout)
	}
	mustJSON(t, r.stdout, &out)
	return out, r
}

// TestRehydrateIntoNewCluster: two CSI snapshots of a Velero backup,
// exported from cluster A, are recreated in a new cluster B whose
// replicapool has another id, under new handles that resolve to the same
// bytes; a foreign image is never touched; a rerun rewrites nothing.
func TestRehydrateIntoNewCluster(t *testing.T) {
	s3Creds(t)
	a, b := newCluster(t, 25300, 28789), newCluster(t, 26300, 29789)
	a.startAsync()
	b.startAsync()
	a.wait(t)
	w, secret := newWorldOn(t, a)
	repo := newRepo(t, "1MiB", "dr-key")
	velero := "nightly-" + w.id

	// 64 MiB volumes; LIFEBOAT_DR_MIB sets another size, to measure.
	size := uint64(64 * MiB)
	if n, err := strconv.Atoi(os.Getenv("LIFEBOAT_DR_MIB")); err == nil && n >= 64 {
		size = uint64(n) * MiB
	}
	m := size / 64 // regions scale with the size
	db := w.volumeWith("db", size, 21,
		sim.Region{Off: 0, Len: 24 * m, Kind: sim.Random}, sim.Region{Off: 24 * m, Len: 8 * m, Kind: sim.Text})
	files := w.volumeWith("files", size, 22, // text and random runs with holes between
		sim.Region{Off: 1 * m, Len: 3 * m, Kind: sim.Text}, sim.Region{Off: 20*m + 4321, Len: 5 * m, Kind: sim.Random},
		sim.Region{Off: 60 * m, Len: 4 * m, Kind: sim.Text})
	snaps := map[string]*sim.Snapshot{w.id + "/db": w.snapshot(db, velero), w.id + "/files": w.snapshot(files, velero)}
	sha := map[string]string{}
	for pvc, s := range snaps {
		sha[pvc] = rbdSHA256(t, a.conf(), w.snapSpec(s))
		w.export(repo, s.ContentName, "--ceph-secret", secret)
	}
	poolA := poolIDOf(t, a.conf(), "replicapool")

	// Cluster A is lost, with every image and journal.
	w.sim.Close()
	a.stop(t)
	b.wait(t)
	poolB := renumberPool(t, b.conf(), "replicapool", poolA)
	w.repoint(t, b, secret)
	args := []string{"--velero-backup", velero, "--ceph-secret", secret, "--velero-namespace", w.id, "--no-velero-volumes"}

	// --dry-run plans and touches nothing.
	plan, _ := w.rehydrate(t, repo, 0, append(args, "--dry-run")...)
	if st := plan.states(); len(st) != 2 || st[w.id+"/db"] != "Planned" || st[w.id+"/files"] != "Planned" {
		t.Fatalf("dry run: %+v", plan.Volumes)
	}
	if nss := cephTool(t, b.conf(), "rbd", "namespace", "ls", "replicapool"); strings.Contains(nss, w.id) {
		t.Fatalf("dry run created RADOS namespace %s:\n%s", w.id, nss)
	}

	start := time.Now()
	out, _ := w.rehydrate(t, repo, 0, args...)
	took := time.Since(start)
	if st := out.states(); st[w.id+"/db"] != "Rehydrated" || st[w.id+"/files"] != "Rehydrated" {
		t.Fatalf("first run: %+v", out.Volumes)
	}
	cm, err := w.sim.Kube.CoreV1().ConfigMaps(w.id).Get(context.Background(), "lifeboat-rehydrate-"+velero, metav1.GetOptions{})
	if err != nil || out.ConfigMap != w.id+"/"+cm.Name || !strings.Contains(out.Command, "--resource-modifier-configmap "+cm.Name) {
		t.Fatalf("ConfigMap %v (%v), output %q, command %q", cm, err, out.ConfigMap, out.Command)
	}
	imageIDs := map[string]string{}
	for _, v := range out.Volumes {
		old, _ := handle.Decode(v.OldHandle)
		nu, err := handle.Decode(v.NewHandle)
		if err != nil || old.PoolID != poolA || nu.PoolID != poolB || nu.UUID != old.UUID || nu.ClusterID != w.id || v.Namespace != w.id {
			t.Errorf("%s: %s → %s (%v), namespace %s; pools A %d, B %d", v.PVC, v.OldHandle, v.NewHandle, err, v.Namespace, poolA, poolB)
		}
		if data := cm.Data["lifeboat-rehydrate.yaml"]; !strings.Contains(data, v.OldHandle) || !strings.Contains(data, v.NewHandle) {
			t.Errorf("the ConfigMap has no rule %s → %s:\n%s", v.OldHandle, v.NewHandle, data)
		}
		// The new handle resolves, through the journal, to the same bytes.
		r := w.run("resolve", v.NewHandle, "-o", "json", "--ceph-secret", secret)
		var res struct {
			Image       struct{ Pool, Name, Snapshot string }
			ImageID     string `json:"imageID"`
			Source      string `json:"source"`
			FromJournal bool   `json:"fromJournal"`
			Features    []string
		}
		if r.code != 0 {
			t.Fatalf("resolve %s: exit %d: %s", v.NewHandle, r.code, r.stderr)
		}
		mustJSON(t, r.stdout, &res)
		s := snaps[v.PVC]
		if !res.FromJournal || res.Image.Name != s.ImageName || res.Image.Snapshot != s.SnapName || res.Source != s.ParentImage ||
			strings.Join(res.Features, ",") != "layering,deep-flatten" {
			t.Errorf("%s resolves to %+v; want %s@%s from the journal, source %s, layering,deep-flatten", v.NewHandle, res, s.ImageName, s.SnapName, s.ParentImage)
		}
		imageIDs[v.PVC] = res.ImageID
		if got := rbdSHA256(t, b.conf(), "replicapool/"+w.id+"/"+v.Image+"@"+v.Snapshot); got != sha[v.PVC] {
			t.Errorf("%s: sha256 in B %s, the snapshot in A had %s", v.PVC, got, sha[v.PVC])
		}
		want := map[string]string{"csi.imagename": s.ImageName, "csi.snapname": s.RequestName, "csi.source": s.ParentImage, "csi.imageid": res.ImageID}
		for k, val := range want {
			if got := omapVal(t, b.conf(), w.id, "csi.snap."+nu.UUID, k); got != val {
				t.Errorf("journal csi.snap.%s: %s = %q, want %q", nu.UUID, k, got, val)
			}
		}
	}

	// A foreign image where files goes: left alone, named, exit 1; db is
	// verified and kept.
	filesImg := "replicapool/" + w.id + "/" + snaps[w.id+"/files"].ImageName
	cephTool(t, b.conf(), "rbd", "snap", "purge", "--no-progress", filesImg)
	cephTool(t, b.conf(), "rbd", "rm", "--no-progress", filesImg)
	cephTool(t, b.conf(), "rbd", "create", "--size", "1M", filesImg)
	out, r := w.rehydrate(t, repo, 1, args...)
	if st := out.states(); st[w.id+"/db"] != "Verified" || st[w.id+"/files"] != "Foreign" {
		t.Fatalf("with a foreign image: %+v", out.Volumes)
	}
	if info := cephTool(t, b.conf(), "rbd", "info", filesImg); !strings.Contains(info, "size 1 MiB") {
		t.Errorf("the foreign image was changed:\n%s", info)
	}
	if !strings.Contains(r.stdout, filesImg) {
		t.Errorf("the output does not name %s:\n%s", filesImg, r.stdout)
	}
	// --force replaces it; then a rerun changes nothing.
	w.rehydrate(t, repo, 0, append(args, "--force")...)
	out, _ = w.rehydrate(t, repo, 0, args...)
	for _, v := range out.Volumes {
		if v.State != "Verified" {
			t.Errorf("rerun: %s is %s (%s)", v.PVC, v.State, v.Reason)
		}
		if v.PVC == w.id+"/db" {
			if id := strings.TrimSpace(cephTool(t, b.conf(), "rbd", "info", "--format", "json", "replicapool/"+w.id+"/"+v.Image)); !strings.Contains(id, imageIDs[v.PVC]) {
				t.Errorf("rerun rewrote %s (image id no longer %s)", v.Image, imageIDs[v.PVC])
			}
		}
		if got := rbdSHA256(t, b.conf(), "replicapool/"+w.id+"/"+v.Image+"@"+v.Snapshot); got != sha[v.PVC] {
			t.Errorf("%s after --force and rerun: sha256 %s, want %s", v.PVC, got, sha[v.PVC])
		}
	}

	// A run interrupted after writing db's image but before its snapshot
	// (lifeboat's mark on it, no snapshot) is finished by the next one.
	dbImg := "replicapool/" + w.id + "/" + snaps[w.id+"/db"].ImageName
	cephTool(t, b.conf(), "rbd", "snap", "purge", "--no-progress", dbImg)
	out, _ = w.rehydrate(t, repo, 0, args...)
	if st := out.states(); st[w.id+"/db"] != "Rehydrated" || st[w.id+"/files"] != "Verified" {
		t.Errorf("after an interrupted run: %+v", out.Volumes)
	}
	if got := rbdSHA256(t, b.conf(), dbImg+"@"+snaps[w.id+"/db"].SnapName); got != sha[w.id+"/db"] {
		t.Errorf("db after an interrupted run: sha256 %s, want %s", got, sha[w.id+"/db"])
	}

	// Measured for the record, both warm: two lifeboat restores, then
	// restore --velero-backup of the same two backups (its images removed).
	var single time.Duration
	for i, v := range out.Volumes {
		start := time.Now()
		rr := runLifeboat(t, append([]string{"restore", v.BackupID, "--to", "replicapool/" + w.id + "/single" + strconv.Itoa(i),
			"--ceph-conf", b.conf()}, repo.flags()...)...)
		single += time.Since(start)
		if rr.code != 0 {
			t.Fatalf("restore %s: %s", v.BackupID, rr.stderr)
		}
	}
	for _, v := range out.Volumes {
		cephTool(t, b.conf(), "rbd", "snap", "purge", "--no-progress", "replicapool/"+w.id+"/"+v.Image)
		cephTool(t, b.conf(), "rbd", "rm", "--no-progress", "replicapool/"+w.id+"/"+v.Image)
	}
	start = time.Now()
	out, _ = w.rehydrate(t, repo, 0, args...)
	took = time.Since(start)
	if st := out.states(); st[w.id+"/db"] != "Rehydrated" || st[w.id+"/files"] != "Rehydrated" {
		t.Fatalf("after removing the images: %+v", out.Volumes)
	}
	t.Logf("restore --velero-backup of 2 volumes (%d MiB each, %d MiB of data): %s; two lifeboat restore: %s",
		size/MiB, 40*m/MiB, took.Round(10*time.Millisecond), single.Round(10*time.Millisecond))

	// Our ceph-csi-faithful driver provisions a volume from each new
	// handle, with the snapshot's bytes; the old handles do not resolve in B.
	ctl, cfgPath := startDriver(t)
	ci := csidriver.ClusterInfo{ClusterID: w.id, Monitors: b.env.Monitors()}
	ci.RBD.RadosNamespace = w.id
	if err := csidriver.SetCluster(cfgPath, ci); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"userID": b.env.Get("CEPH_CSI_USER"), "userKey": b.env.Get("CEPH_CSI_KEY")}
	createFrom := func(name, h string) (*csi.Volume, error) {
		r, err := ctl.CreateVolume(context.Background(), &csi.CreateVolumeRequest{
			Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: int64(size)},
			VolumeCapabilities: []*csi.VolumeCapability{{
				AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
				AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}},
			Parameters: map[string]string{"clusterID": w.id, "pool": "replicapool", "imageFeatures": "layering", "imageFormat": "2"},
			Secrets:    secrets,
			VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
				Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: h}}},
		})
		return r.GetVolume(), err
	}
	for _, v := range out.Volumes {
		if _, err := createFrom("pvc-old-"+uuid.NewString(), v.OldHandle); err == nil {
			t.Errorf("%s: the driver provisioned from the old handle %s in B", v.PVC, v.OldHandle)
		}
		vol, err := createFrom("pvc-"+uuid.NewString(), v.NewHandle)
		if err != nil {
			t.Fatalf("%s: CreateVolume from %s: %v", v.PVC, v.NewHandle, err)
		}
		id, _ := handle.Decode(vol.GetVolumeId())
		img := vol.GetVolumeContext()["imageName"]
		if img == "" {
			img = "csi-vol-" + id.UUID
		}
		if got := rbdSHA256(t, b.conf(), "replicapool/"+w.id+"/"+img); got != sha[v.PVC] {
			t.Errorf("%s: volume %s provisioned from %s has sha256 %s, want %s", v.PVC, img, v.NewHandle, got, sha[v.PVC])
		}
	}

	// verify: a journal without csi.source is a problem ceph-csi would hit.
	h := out.Volumes[0].NewHandle
	content := w.content(h, true, int64(size))
	if r := w.run("verify", content, "--ceph-secret", secret); r.code != 0 {
		t.Errorf("verify of the rehydrated snapshot: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	// Two contents with one handle (e.g. the original and a restored one):
	// resolve names both rather than pick one.
	content2 := w.content(h, true, int64(size))
	rr := w.run("resolve", h, "-o", "json", "--ceph-secret", secret)
	var shared struct {
		Contents []string `json:"volumeSnapshotContents"`
	}
	mustJSON(t, rr.stdout, &shared)
	if rr.code != 0 || len(shared.Contents) != 2 || !slices.Contains(shared.Contents, content) || !slices.Contains(shared.Contents, content2) {
		t.Errorf("resolve %s with two contents: exit %d, contents %v; want %s and %s", h, rr.code, shared.Contents, content, content2)
	}
	nu, _ := handle.Decode(h)
	cephTool(t, b.conf(), "rados", "-p", "replicapool", "-N", w.id, "rmomapkey", "csi.snap."+nu.UUID, "csi.source")
	if r := w.run("verify", content, "--ceph-secret", secret); r.code != 1 || !strings.Contains(r.stdout, "JournalIncomplete") {
		t.Errorf("verify of a journal without csi.source: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := createFrom("pvc-"+uuid.NewString(), h); err == nil || !strings.Contains(err.Error(), "no snap source") {
		t.Errorf("the driver provisioned from a journal without csi.source (%v), as ceph-csi would not", err)
	}

}

// ---------------------------------------------------------------------------
// The headline, on the stack's real path: real Velero, csi-provisioner,
// snapshot-controller + csi-snapshotter and our ceph-csi-faithful driver.

// drSite is a clusterID of the test's own (config.json entry, Rook
// ConfigMap entry, Secret, StorageClass and VolumeSnapshotClass), so the
// stack's defaults are never touched.
type drSite struct {
	t     *testing.T
	p     *realPath
	id    string
	class string // StorageClass and VolumeSnapshotClass name
}

const rookNS = "rook-ceph"

func newDRSite(t *testing.T, p *realPath, a *cluster) *drSite {
	t.Helper()
	ctx := context.Background()
	d := &drSite{t: t, p: p, id: "dr" + strings.ReplaceAll(uuid.NewString(), "-", "")[:8]}
	d.class = d.id
	k, s := p.sim.Kube, p.sim.Snap
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: rookNS, Name: d.id}}
	if _, err := k.CoreV1().Secrets(rookNS).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.CoreV1().Secrets(rookNS).Delete(context.Background(), d.id, metav1.DeleteOptions{}) })
	// The sidecars may read only the Secrets they are granted, as in a
	// cluster: a second Ceph cluster's Secret needs its own grant.
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: rookNS, Name: d.id},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{d.id}, Verbs: []string{"get"}}}}
	bind := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: rookNS, Name: d.id},
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: d.id},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "csi-provisioner", Namespace: "default"},
			{Kind: "ServiceAccount", Name: "csi-snapshotter", Namespace: "default"}}}
	if _, err := k.RbacV1().Roles(rookNS).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.RbacV1().RoleBindings(rookNS).Create(ctx, bind, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k.RbacV1().RoleBindings(rookNS).Delete(context.Background(), d.id, metav1.DeleteOptions{})
		_ = k.RbacV1().Roles(rookNS).Delete(context.Background(), d.id, metav1.DeleteOptions{})
	})
	params := map[string]string{"clusterID": d.id, "pool": "replicapool", "imageFeatures": "layering", "imageFormat": "2",
		"csi.storage.k8s.io/provisioner-secret-name": d.id, "csi.storage.k8s.io/provisioner-secret-namespace": rookNS,
		"csi.storage.k8s.io/controller-expand-secret-name": d.id, "csi.storage.k8s.io/controller-expand-secret-namespace": rookNS,
		"csi.storage.k8s.io/fstype": "ext4"}
	del := corev1.PersistentVolumeReclaimDelete
	if _, err := k.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: d.class},
		Provisioner: realDriver, Parameters: params, ReclaimPolicy: &del}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k.StorageV1().StorageClasses().Delete(context.Background(), d.class, metav1.DeleteOptions{})
	})
	if _, err := s.SnapshotV1().VolumeSnapshotClasses().Create(ctx, &snapv1.VolumeSnapshotClass{ObjectMeta: metav1.ObjectMeta{Name: d.class},
		Driver: realDriver, DeletionPolicy: snapv1.VolumeSnapshotContentRetain,
		Parameters: map[string]string{"clusterID": d.id, "csi.storage.k8s.io/snapshotter-secret-name": d.id,
			"csi.storage.k8s.io/snapshotter-secret-namespace": rookNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.SnapshotV1().VolumeSnapshotClasses().Delete(context.Background(), d.class, metav1.DeleteOptions{})
	})
	t.Cleanup(func() { d.rookEntry(nil) })
	d.pointAt(a)
	return d
}

// pointAt makes the site's clusterID name Ceph cluster c: the driver's
// config.json (under its flock), lifeboat's Rook ConfigMap entry, and the
// Secret's cephx key.
func (d *drSite) pointAt(c *cluster) {
	d.t.Helper()
	setCSICluster(d.t, d.id, c.env.Monitors(), "")
	d.rookEntry(c.env.Monitors())
	ctx := context.Background()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: rookNS, Name: d.id},
		Data: map[string][]byte{"userID": []byte(c.env.Get("CEPH_CSI_USER")), "userKey": []byte(c.env.Get("CEPH_CSI_KEY"))}}
	if _, err := d.p.sim.Kube.CoreV1().Secrets(rookNS).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		d.t.Fatal(err)
	}
}

// rookEntry sets (nil: removes) the clusterID's entry in Rook's ConfigMap.
func (d *drSite) rookEntry(monitors []string) {
	ctx := context.Background()
	cms := d.p.sim.Kube.CoreV1().ConfigMaps(rookNS)
	rookMu.Lock()
	defer rookMu.Unlock()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, sim.RookConfigMap, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			cm, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: sim.RookConfigMap, Namespace: rookNS},
				Data: map[string]string{sim.RookConfigKey: "[]"}}, metav1.CreateOptions{})
		}
		if err != nil {
			return err
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		var entries []map[string]any
		_ = json.Unmarshal([]byte(cm.Data[sim.RookConfigKey]), &entries)
		out, _ := withoutCluster(entries, d.id)
		if monitors != nil {
			out = append(out, map[string]any{"clusterID": d.id, "monitors": monitors})
		}
		b, _ := json.Marshal(out)
		cm.Data[sim.RookConfigKey] = string(b)
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		d.t.Errorf("Rook ConfigMap entry %s: %v", d.id, err)
	}
}

// pvc makes a claim of the site's class that Velero snapshots with the
// site's VolumeSnapshotClass, and writes regions into it through librbd
// on cluster c; it returns the claim and its sha256.
func (d *drSite) pvc(c *cluster, name string, size uint64, seed int64, regions ...sim.Region) (*realPVC, string) {
	d.t.Helper()
	ctx := context.Background()
	sc := d.class
	_, err := d.p.sim.Kube.CoreV1().PersistentVolumeClaims(d.p.ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: d.p.ns,
			Annotations: map[string]string{"velero.io/csi-volumesnapshot-class": d.class}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &sc,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: *resource.NewQuantity(int64(size), resource.BinarySI)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		d.t.Fatalf("creating PVC %s: %v", name, err)
	}
	v := d.p.waitBound(name, 90*time.Second)
	fill(d.t, c.conf(), v.Image, seed, regions)
	return v, sim.ContentSHA256(size, regions, seed)
}

// fill writes regions of the simulator's seeded content into a
// replicapool image through librbd on the cluster of conf, as a pod would
// have written the volume; the rest stays holes.
func fill(t testing.TB, conf, image string, seed int64, regions []sim.Region) {
	t.Helper()
	opts := env.Options()
	opts.CephConf = conf
	s, err := sim.New(context.Background(), opts)
	if err != nil {
		t.Fatalf("connecting to %s: %v", conf, err)
	}
	defer s.Close()
	img, err := librbd.OpenImage(s.IOContext(), image, librbd.NoSnapshot)
	if err != nil {
		t.Fatalf("opening replicapool/%s: %v", image, err)
	}
	defer img.Close()
	buf := make([]byte, MiB)
	for _, r := range regions {
		for off := r.Off; off < r.Off+r.Len; {
			n := min(uint64(len(buf)), r.Off+r.Len-off)
			clear(buf[:n])
			sim.Render(buf[:n], off, regions, seed)
			if _, err := img.WriteAt(buf[:n], int64(off)); err != nil {
				t.Fatalf("writing replicapool/%s at %d: %v", image, off, err)
			}
			off += n
		}
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
}

// setPoolID recreates pool (empty) until its id is want: a new cluster
// numbers pools itself (pool_max + 1), so this is how a test chooses
// whether the new site's pool gets the old id or another.
func setPoolID(t testing.TB, conf, pool string, want int64) {
	t.Helper()
	for id := poolIDOf(t, conf, pool); id != want; id = poolIDOf(t, conf, pool) {
		if id > want {
			t.Fatalf("pool %s already has id %d > %d", pool, id, want)
		}
		cephTool(t, conf, "ceph", "osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it")
		cephTool(t, conf, "ceph", "osd", "pool", "create", pool, "8", "8")
		cephTool(t, conf, "rbd", "pool", "init", pool)
	}
}

// runPrinted runs the velero command lifeboat printed (as the stack's
// admin) and returns the restore's name.
func (p *realPath) runPrinted(t *testing.T, command string) string {
	t.Helper()
	f := strings.Fields(command)
	if len(f) < 4 || f[0] != "velero" || f[1] != "restore" || f[2] != "create" {
		t.Fatalf("lifeboat printed %q, not a velero restore create", command)
	}
	var args []string
	for i := 1; i < len(f); i++ {
		if f[i] == "--namespace" { // the helper sets Velero's namespace itself
			i++
			continue
		}
		args = append(args, f[i])
	}
	out := velero(t, append(args, "--labels", "lifeboat.io/e2e-namespace="+p.ns)...)
	m := regexp.MustCompile(`Restore request "([^"]+)"`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no restore name in velero's output:\n%s", out)
	}
	return m[1]
}

// TestVeleroDisasterRecovery is the seed's story end to end: two PVCs backed up
// by Velero on Ceph cluster A and exported by the agent; A destroyed and
// the namespace deleted; a new cluster B under the same clusterID;
// `lifeboat restore --velero-backup`, then the velero command it printed;
// the PVCs Bound with the bytes they had. Once with B's replicapool at
// another pool id (handles rewritten by a resource modifier), once at the
// same id (no ConfigMap).
func TestVeleroDisasterRecovery(t *testing.T) {
	t.Run("new pool id", func(t *testing.T) { disasterRecovery(t, false) })
	t.Run("same pool id", func(t *testing.T) { disasterRecovery(t, true) })
}

func disasterRecovery(t *testing.T, samePoolID bool) {
	start := time.Now()
	s3Creds(t)
	a, b := newCluster(t, 25300, 28789), newCluster(t, 26300, 29789)
	a.startAsync()
	b.startAsync()
	a.wait(t)
	const poolA = 3
	setPoolID(t, a.conf(), "replicapool", poolA)
	p := newRealPath(t, "dr")
	d := newDRSite(t, p, a)
	w := &world{t: t, sim: p.sim, id: p.ns, driver: realDriver}
	bucket := removedAtEnd(t, "dr-"+p.ns).name
	initRepo(t, bucket)
	repoFlags := []string{"--s3-endpoint", env.Get("S3_ENDPOINT"), "--s3-bucket", bucket}
	cfg := agentConfig(t, bucket, fmt.Sprintf("  includeNamespaces: [%q]\n  leaseName: lifeboat-%s\n", p.ns, d.id))
	agentA := startAgent(t, w, env.Get("KUBECONFIG"), cfg, "dr-a-"+d.id, "--ceph-secret", d.id)

	// A database-like volume (random pages, then text) and a file-like one
	// (text and random runs with holes between).
	db, shaDB := d.pvc(a, "db", 64*MiB, 31, sim.Region{Off: 0, Len: 40 * MiB, Kind: sim.Random}, sim.Region{Off: 40 * MiB, Len: 8 * MiB, Kind: sim.Text})
	files, shaFiles := d.pvc(a, "files", 64*MiB, 32, sim.Region{Off: 2 * MiB, Len: 6 * MiB, Kind: sim.Text},
		sim.Region{Off: 30*MiB + 777, Len: 3 * MiB, Kind: sim.Random}, sim.Region{Off: 56 * MiB, Len: 5 * MiB, Kind: sim.Text})
	want := map[string]string{p.ns + "/db": shaDB, p.ns + "/files": shaFiles}
	vols := map[string]*realPVC{p.ns + "/db": db, p.ns + "/files": files}

	seen := p.watchContents()
	backup := "dr-" + p.ns
	t.Cleanup(func() { // the resource-modifier ConfigMaps restore --velero-backup writes
		for _, b := range []string{backup, backup + "-2"} {
			_ = p.sim.Kube.CoreV1().ConfigMaps(env.Get("VELERO_NAMESPACE")).Delete(context.Background(),
				"lifeboat-rehydrate-"+b, metav1.DeleteOptions{})
		}
	})
	if st := p.veleroBackup(backup); st.CSIVolumeSnapshotsCompleted != 2 {
		t.Fatalf("velero backup %s: %d CSI snapshots completed, want 2", backup, st.CSIVolumeSnapshotsCompleted)
	}
	handles := seen.handlesOf(t, backup, vols)
	ids := map[string]string{}
	waitFor(t, "the agent to export both snapshots", 3*time.Minute, func() bool {
		for pvc, h := range handles {
			if bs := backupsOf(t, bucket, h); len(bs) == 1 {
				ids[pvc] = bs[0]
			}
		}
		return len(ids) == 2
	}, agentA)
	t.Logf("backed up and exported after %s", time.Since(start).Round(time.Second))

	// A second Velero backup that also covers a PVC of another namespace,
	// which the agent does not export: never in the repository.
	var p2 *realPath
	handles2 := map[string]string{}
	backup2 := backup + "-2"
	if !samePoolID {
		p2 = newRealPath(t, "drx")
		d2 := *d
		d2.p = p2
		d2.pvc(a, "scratch", 64*MiB, 33, sim.Region{Off: 0, Len: 4 * MiB, Kind: sim.Text})
		velero(t, "backup", "create", backup2, "--include-namespaces", p.ns+","+p2.ns, "--snapshot-volumes",
			"--labels", "lifeboat.io/e2e-namespace="+p.ns, "--wait")
		if st := veleroGet(t, "backups", backup2); st.Phase != "Completed" || st.CSIVolumeSnapshotsCompleted != 3 {
			t.Fatalf("velero backup %s: %+v", backup2, st)
		}
		handles2 = seen.handlesOf(t, backup2, vols)
		waitFor(t, "the agent to export backup 2's two snapshots", 3*time.Minute, func() bool {
			n := 0
			for _, h := range handles2 {
				n += len(backupsOf(t, bucket, h))
			}
			return len(handles2) == 2 && n == 2
		}, agentA)
	}
	_ = agentA.cmd.Process.Kill()
	exported := len(listBackupsIn(t, bucket))

	// Disaster: the namespaces and cluster A are gone.
	p.deleteNamespace(2 * time.Minute)
	if p2 != nil {
		p2.deleteNamespace(2 * time.Minute)
	}
	a.stop(t)
	b.wait(t)
	poolB := int64(poolA)
	if !samePoolID {
		poolB = poolA + 2
	}
	setPoolID(t, b.conf(), "replicapool", poolB)
	d.pointAt(b)
	t.Logf("cluster B ready (replicapool id %d, A's was %d) after %s", poolB, poolA, time.Since(start).Round(time.Second))

	restore := []string{"restore", "-o", "json", "--velero-backup", backup, "--velero-namespace", env.Get("VELERO_NAMESPACE"), "--ceph-secret", d.id}
	began := time.Now()
	r := w.run(append(restore, repoFlags...)...)
	if r.code != 0 {
		t.Fatalf("restore --velero-backup: exit %d: %s\n%s", r.code, r.stderr, r.stdout)
	}
	t.Logf("restore --velero-backup of 2 volumes: %s", time.Since(began).Round(10*time.Millisecond))
	var out rehydration
	mustJSON(t, r.stdout, &out)
	for _, v := range out.Volumes {
		if v.State != "Rehydrated" || v.OldHandle != handles[v.PVC] || (v.NewHandle != v.OldHandle) == samePoolID {
			t.Errorf("%s: %+v (handle %s)", v.PVC, v, handles[v.PVC])
		}
	}
	if samePoolID != (out.ConfigMap == "") || samePoolID == strings.Contains(out.Command, "--resource-modifier-configmap") {
		t.Errorf("same pool id %v: ConfigMap %q, command %q, notes %v", samePoolID, out.ConfigMap, out.Command, out.Notes)
	}
	if samePoolID && !strings.Contains(strings.Join(out.Notes, " "), "no resource-modifier ConfigMap") {
		t.Errorf("the command does not say no ConfigMap was needed: %v", out.Notes)
	}

	// The printed command → Completed; the PVCs bind with their bytes.
	name := p.runPrinted(t, out.Command)
	if st := veleroGet(t, "restores", name); st.Phase != "Completed" {
		t.Fatalf("velero restore %s: %+v", name, st)
	}
	for pvc := range vols {
		v := p.waitBound(strings.TrimPrefix(pvc, p.ns+"/"), 2*time.Minute)
		if got := rbdSHA256(t, b.conf(), "replicapool/"+v.Image); got != want[pvc] {
			t.Errorf("restored PVC %s (image %s in B): sha256 %s, want %s", pvc, v.Image, got, want[pvc])
		}
	}
	t.Logf("PVCs Bound with their data after %s", time.Since(start).Round(time.Second))

	// Run again: nothing rewritten.
	r = w.run(append(restore, repoFlags...)...)
	mustJSON(t, r.stdout, &out)
	if r.code != 0 || out.states()[p.ns+"/db"] != "Verified" || out.states()[p.ns+"/files"] != "Verified" {
		t.Errorf("rerun: exit %d %+v\n%s", r.code, out.Volumes, r.stderr)
	}

	// The agent against B: the restored snapshots are backed up already.
	agentB := startAgent(t, w, env.Get("KUBECONFIG"), cfg, "dr-b-"+d.id, "--ceph-secret", d.id)
	var restored []string
	for _, c := range p.contents() {
		if c.Labels["velero.io/restore-name"] == name {
			restored = append(restored, c.Name)
			waitFor(t, "the agent to mark "+c.Name+" Exported", time.Minute, func() bool {
				ann := w.annotations(c.Name)
				return ann["lifeboat.io/phase"] == "Exported" && ann["lifeboat.io/backup-id"] != ""
			}, agentB)
		}
	}
	if len(restored) != 2 {
		t.Fatalf("restored VolumeSnapshotContents: %v", restored)
	}
	if n := len(listBackupsIn(t, bucket)); n != exported {
		t.Errorf("the repository holds %d backups, want %d (nothing exported again)", n, exported)
	}
	if r := w.run(append([]string{"verify", "--ceph-secret", d.id}, restored...)...); r.code != 0 {
		t.Errorf("verify of the restored snapshots: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	if !samePoolID {
		// The second backup: a foreign image where db's snapshot goes is
		// left alone; scratch was never exported: named; exit 1 both times.
		img, _ := snapshotImage(t, handles2[p.ns+"/db"])
		spec := "replicapool/" + img
		cephTool(t, b.conf(), "rbd", "create", "--size", "1M", spec)
		args2 := append([]string{"restore", "-o", "json", "--velero-backup", backup2, "--velero-namespace", env.Get("VELERO_NAMESPACE"), "--ceph-secret", d.id}, repoFlags...)
		r := w.run(args2...)
		out = rehydration{}
		mustJSON(t, r.stdout, &out)
		scratch := p2.ns + "/scratch"
		if st := out.states(); r.code != 1 || st[p.ns+"/db"] != "Foreign" || st[p.ns+"/files"] != "Rehydrated" || st[scratch] != "Missing" {
			t.Errorf("backup 2 with a foreign image: exit %d %+v", r.code, out.Volumes)
		}
		if info := cephTool(t, b.conf(), "rbd", "info", spec); !strings.Contains(info, "size 1 MiB") {
			t.Errorf("the foreign image was changed:\n%s", info)
		}
		cephTool(t, b.conf(), "rbd", "rm", "--no-progress", spec)
		r = w.run(args2...)
		out = rehydration{}
		mustJSON(t, r.stdout, &out)
		if st := out.states(); r.code != 1 || st[p.ns+"/db"] != "Rehydrated" || st[p.ns+"/files"] != "Verified" || st[scratch] != "Missing" {
			t.Errorf("backup 2: exit %d %+v", r.code, out.Volumes)
		}
		if r := w.run(append([]string{"restore", "--velero-backup", backup2, "--ceph-secret", d.id}, repoFlags...)...); !strings.Contains(r.stdout, scratch) {
			t.Errorf("the table does not name the never-exported PVC %s:\n%s", scratch, r.stdout)
		}
	}
	// Leave B clean while it still answers: PVCs, then the snapshots.
	p.deleteNamespace(2 * time.Minute)
	for _, n := range restored {
		_ = p.sim.Snap.SnapshotV1().VolumeSnapshotContents().Delete(context.Background(), n, metav1.DeleteOptions{})
	}
	t.Logf("done after %s", time.Since(start).Round(time.Second))
}

func listBackupsIn(t *testing.T, bucket string) []string {
	t.Helper()
	r := runLifeboat(t, "backups", "list", "-o", "json", "--s3-endpoint", env.Get("S3_ENDPOINT"), "--s3-bucket", bucket)
	if r.code != 0 {
		t.Fatalf("backups list: %s", r.stderr)
	}
	var list []struct{ ID string }
	mustJSON(t, r.stdout, &list)
	var ids []string
	for _, b := range list {
		ids = append(ids, b.ID)
	}
	return ids
}
