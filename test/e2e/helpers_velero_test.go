//go:build e2e

package e2e

// Helpers for tests on the stack's real path: PVCs provisioned by
// csi-provisioner through our CSI driver (lbcsi), snapshots by
// snapshot-controller + csi-snapshotter, backups and restores by the real
// Velero server. Names are Rook's defaults (clusterID rook-ceph, StorageClass
// rook-ceph-block, driver rook-ceph.rbd.csi.ceph.com); the simulator's worlds
// use random ones, so the two never meet.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rbd"
	"github.com/google/uuid"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lifeboat-backup/lifeboat/rbd/handle"
	"github.com/lifeboat-backup/lifeboat/test/sim"
)

// The stack's real-path objects (test/stack/controllers.sh).
const (
	realDriver        = "rook-ceph.rbd.csi.ceph.com"
	realClusterID     = "rook-ceph"
	realStorageClass  = "rook-ceph-block"
	realSnapshotClass = "csi-rbdplugin-snapclass"
	realPool          = "replicapool"
)

// realPath is one test's namespace on the stack's real CSI path. Its sim is
// a plain client (default options: pool replicapool, no RADOS namespace,
// the admin ceph.conf) used for librbd reads and writes and the Kubernetes
// clients; it creates nothing by itself.
type realPath struct {
	t   testing.TB
	sim *sim.Sim
	ns  string
}

// newRealPath makes a namespace "<prefix>-<8 hex>" and removes it, its
// snapshots (Ceph images included) and its Velero backups at the end.
func newRealPath(t testing.TB, prefix string) *realPath {
	t.Helper()
	if err := env.Require("CSI_ENDPOINT", "CSI_CONFIG", "VELERO", "VELERO_NAMESPACE"); err != nil {
		t.Fatalf("%v: the stack predates the real CSI path, run `make stack-up`", err)
	}
	s, err := sim.New(context.Background(), env.Options())
	if err != nil {
		t.Fatalf("connecting to the stack: %v", err)
	}
	p := &realPath{t: t, sim: s, ns: prefix + "-" + uuid.NewString()[:8]}
	_, err = s.Kube.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: p.ns}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace %s: %v", p.ns, err)
	}
	t.Cleanup(func() { p.cleanup(); s.Close() })
	return p
}

// realPVC is a claim provisioned by csi-provisioner.
type realPVC struct {
	Namespace, Name string
	PV              string
	Handle          string // CSI volume handle
	Image           string // RBD image in replicapool
	Size            uint64
}

// createPVC creates a ReadWriteOnce block-size claim of the StorageClass
// rook-ceph-block and waits until it is Bound to a provisioned PV.
func (p *realPath) createPVC(name string, size uint64) *realPVC {
	p.t.Helper()
	ctx := context.Background()
	sc := realStorageClass
	_, err := p.sim.Kube.CoreV1().PersistentVolumeClaims(p.ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &sc,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: *resource.NewQuantity(int64(size), resource.BinarySI)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		p.t.Fatalf("creating PVC %s/%s: %v", p.ns, name, err)
	}
	return p.waitBound(name, 90*time.Second)
}

// waitBound waits for PVC ns/name to be Bound and describes its volume.
func (p *realPath) waitBound(name string, timeout time.Duration) *realPVC {
	p.t.Helper()
	ctx := context.Background()
	var pvc *corev1.PersistentVolumeClaim
	deadline := time.Now().Add(timeout)
	for {
		var err error
		pvc, err = p.sim.Kube.CoreV1().PersistentVolumeClaims(p.ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && pvc.Status.Phase == corev1.ClaimBound {
			break
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("PVC %s/%s not Bound after %s (phase %v, err %v); events:\n%s\n(see $LIFEBOAT_STACK_DIR/logs/csi-provisioner.log and lbcsi.log)",
				p.ns, name, timeout, phaseOf(pvc), err, p.events(name))
		}
		time.Sleep(250 * time.Millisecond)
	}
	pv, err := p.sim.Kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		p.t.Fatalf("PV %s of %s/%s: %v", pvc.Spec.VolumeName, p.ns, name, err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != realDriver {
		p.t.Fatalf("PV %s is not a %s CSI volume: %+v", pv.Name, realDriver, pv.Spec.PersistentVolumeSource)
	}
	q := pv.Spec.Capacity[corev1.ResourceStorage]
	r := &realPVC{Namespace: p.ns, Name: name, PV: pv.Name, Handle: pv.Spec.CSI.VolumeHandle, Size: uint64(q.Value())}
	r.Image = pv.Spec.CSI.VolumeAttributes["imageName"] // as ceph-csi's volume context
	if r.Image == "" {
		id, err := handle.Decode(r.Handle)
		if err != nil {
			p.t.Fatalf("PV %s handle %q: %v", pv.Name, r.Handle, err)
		}
		r.Image = sim.VolumePrefix + id.UUID
	}
	return r
}

func phaseOf(pvc *corev1.PersistentVolumeClaim) any {
	if pvc == nil {
		return nil
	}
	return pvc.Status.Phase
}

// events lists the events of one object of the namespace, for failures.
func (p *realPath) events(name string) string {
	evs, err := p.sim.Kube.CoreV1().Events(p.ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range evs.Items {
		fmt.Fprintf(&b, "  %s %s: %s\n", e.Type, e.Reason, e.Message)
	}
	return b.String()
}

// writePVC writes seeded content (the simulator's data: text, random and
// zero blocks) over the whole volume through librbd, as a pod would have,
// and returns its sha256.
func (p *realPath) writePVC(v *realPVC, seed int64) string {
	p.t.Helper()
	regions := []sim.Region{
		{Off: 0, Len: v.Size / 2, Kind: sim.Random},
		{Off: v.Size / 2, Len: v.Size / 4, Kind: sim.Text},
		{Off: 3 * v.Size / 4, Len: v.Size / 4, Kind: sim.Zero},
	}
	img, err := rbd.OpenImage(p.sim.IOContext(), v.Image, rbd.NoSnapshot)
	if err != nil {
		p.t.Fatalf("open %s/%s (PVC %s/%s): %v", realPool, v.Image, v.Namespace, v.Name, err)
	}
	defer img.Close()
	if _, err := io.Copy(io.NewOffsetWriter(img, 0), sim.Content(v.Size, regions, seed)); err != nil {
		p.t.Fatalf("writing %s: %v", v.Image, err)
	}
	if err := img.Flush(); err != nil {
		p.t.Fatalf("flush %s: %v", v.Image, err)
	}
	return sim.ContentSHA256(v.Size, regions, seed)
}

// imageSHA256 is the sha256 of image (at snap when not "") in replicapool.
func (p *realPath) imageSHA256(image, snap string) string {
	p.t.Helper()
	h, err := p.sim.ImageSHA256(context.Background(), image, snap)
	if err != nil {
		p.t.Fatal(err)
	}
	return h
}

// snapshotPVC makes a plain VolumeSnapshot of a PVC (class
// csi-rbdplugin-snapclass, no Velero) and waits until it is ready; it
// returns the bound VolumeSnapshotContent.
func (p *realPath) snapshotPVC(pvc, name string) *snapv1.VolumeSnapshotContent {
	p.t.Helper()
	ctx := context.Background()
	class := realSnapshotClass
	_, err := p.sim.Snap.SnapshotV1().VolumeSnapshots(p.ns).Create(ctx, &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.ns},
		Spec: snapv1.VolumeSnapshotSpec{
			Source:                  snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: &pvc},
			VolumeSnapshotClassName: &class,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		p.t.Fatalf("creating VolumeSnapshot %s/%s: %v", p.ns, name, err)
	}
	var vsc *snapv1.VolumeSnapshotContent
	waitUntil(p.t, "VolumeSnapshot "+p.ns+"/"+name+" ready", 90*time.Second, func() bool {
		vs, err := p.sim.Snap.SnapshotV1().VolumeSnapshots(p.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil || vs.Status == nil || vs.Status.ReadyToUse == nil || !*vs.Status.ReadyToUse || vs.Status.BoundVolumeSnapshotContentName == nil {
			return false
		}
		vsc, err = p.sim.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, *vs.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
		return err == nil
	})
	return vsc
}

// contents lists the VolumeSnapshotContents whose VolumeSnapshot is (was)
// in this namespace.
func (p *realPath) contents() []snapv1.VolumeSnapshotContent {
	p.t.Helper()
	l, err := p.sim.Snap.SnapshotV1().VolumeSnapshotContents().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		p.t.Fatal(err)
	}
	var out []snapv1.VolumeSnapshotContent
	for _, c := range l.Items {
		if c.Spec.VolumeSnapshotRef.Namespace == p.ns {
			out = append(out, c)
		}
	}
	return out
}

// snapshotImage is the RBD image and snapshot behind a ceph-csi snapshot
// handle: ceph-csi's clone csi-snap-<uuid> and its snapshot of the same name.
func snapshotImage(t testing.TB, h string) (image, snap string) {
	t.Helper()
	id, err := handle.Decode(h)
	if err != nil {
		t.Fatalf("snapshot handle %q: %v", h, err)
	}
	return sim.SnapshotPrefix + id.UUID, sim.SnapshotPrefix + id.UUID
}

// deleteNamespace deletes the namespace and waits until the namespace
// controller (kube-controller-manager) has removed it and its contents.
func (p *realPath) deleteNamespace(timeout time.Duration) {
	p.t.Helper()
	ctx := context.Background()
	err := p.sim.Kube.CoreV1().Namespaces().Delete(ctx, p.ns, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		p.t.Fatalf("deleting namespace %s: %v", p.ns, err)
	}
	waitUntil(p.t, "namespace "+p.ns+" to be gone", timeout, func() bool {
		_, err := p.sim.Kube.CoreV1().Namespaces().Get(ctx, p.ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}

// cleanup removes what the test left: its Velero restores and backups
// (`velero backup delete`, which also deletes the backup's CSI snapshots
// through csi-snapshotter: a Backup object deleted by hand would come back
// from the storage location), the namespace (PVCs → PVs → RBD images via
// csi-provisioner), and the snapshots still known to Kubernetes: the class
// keeps them (Retain), so their contents are switched to Delete first.
func (p *realPath) cleanup() {
	ctx := context.Background()
	sel := "lifeboat.io/e2e-namespace=" + p.ns
	for _, kind := range []string{"restore", "backup"} {
		cmd := exec.Command(env.Get("VELERO"), "--kubeconfig", env.Get("KUBECONFIG"), "--namespace", env.Get("VELERO_NAMESPACE"),
			kind, "delete", "--selector", sel, "--confirm")
		cmd.Env = append(os.Environ(), "HOME="+os.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			p.t.Logf("cleanup: velero %s delete: %v\n%s", kind, err, out)
		}
	}
	_ = p.sim.Kube.CoreV1().Namespaces().Delete(ctx, p.ns, metav1.DeleteOptions{})
	vscs := p.sim.Snap.SnapshotV1().VolumeSnapshotContents()
	for _, c := range p.contents() {
		if c.Spec.DeletionPolicy != snapv1.VolumeSnapshotContentDelete {
			_, _ = vscs.Patch(ctx, c.Name, types.MergePatchType, []byte(`{"spec":{"deletionPolicy":"Delete"}}`), metav1.PatchOptions{})
		}
		_ = vscs.Delete(ctx, c.Name, metav1.DeleteOptions{})
	}
	p.unstick(time.Minute)
}

// unstick waits until the contents the test's Velero backups and restores
// made are gone. A content whose snapshot csi-snapshotter cannot delete
// (its Ceph cluster is gone: the disaster-recovery tests remove theirs
// first) would stay Terminating for ever, retried by snapshot-controller
// and csi-snapshotter and seen by every later agent: after 10 s of
// Terminating its finalizers are stripped.
func (p *realPath) unstick(timeout time.Duration) {
	ctx := context.Background()
	vscs := p.sim.Snap.SnapshotV1().VolumeSnapshotContents()
	deadline := time.Now().Add(timeout)
	for {
		l, err := vscs.List(ctx, metav1.ListOptions{})
		if err != nil {
			p.t.Logf("cleanup: listing VolumeSnapshotContents: %v", err)
			return
		}
		left := 0
		for _, c := range l.Items {
			if c.Spec.VolumeSnapshotRef.Namespace != p.ns && !strings.Contains(c.Labels["velero.io/backup-name"], p.ns) {
				continue
			}
			left++
			if d := c.DeletionTimestamp; d != nil && time.Since(d.Time) > 10*time.Second || time.Now().After(deadline) {
				_, _ = vscs.Patch(ctx, c.Name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
				_ = vscs.Delete(ctx, c.Name, metav1.DeleteOptions{})
			}
		}
		// Velero makes the contents that delete a backup's snapshots while
		// it deletes the backup: wait for the Backup objects too.
		out, err := kubectl("get", "backups.velero.io", "-n", env.Get("VELERO_NAMESPACE"), "-l", "lifeboat.io/e2e-namespace="+p.ns, "-o", "name")
		if err == nil && strings.TrimSpace(out) == "" && left == 0 {
			return
		}
		if time.Now().After(deadline.Add(10 * time.Second)) {
			p.t.Logf("cleanup: %d VolumeSnapshotContents of %s still there; backups: %s %v", left, p.ns, out, err)
			return
		}
		time.Sleep(time.Second)
	}
}

// waitUntil polls cond every 250 ms until it holds, or fails the test.
func waitUntil(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// kubectl runs kubectl as the stack's admin.
func kubectl(args ...string) (string, error) {
	cmd := exec.Command(env.Get("LB_KUBECTL"), append([]string{"--kubeconfig", env.Get("KUBECONFIG")}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ---------------------------------------------------------------------------
// Velero

// velero runs the stack's velero CLI (as the stack's admin, in the velero
// namespace, CSI on) and fails the test on a non-zero exit.
func velero(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	base := []string{"--kubeconfig", env.Get("KUBECONFIG"), "--namespace", env.Get("VELERO_NAMESPACE"),
		"--features", env.Get("VELERO_FEATURES")}
	cmd := exec.CommandContext(ctx, env.Get("VELERO"), append(base, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // its client config file stays out of ~
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("velero %s → %v in %s\n%s", strings.Join(args, " "), err, time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("velero %s: %v (server log: $LIFEBOAT_STACK_DIR/logs/velero.log)", strings.Join(args, " "), err)
	}
	return out.String()
}

// veleroStatus is the part of a Backup's or Restore's status the tests read.
type veleroStatus struct {
	Phase                       string
	Errors, Warnings            int
	CSIVolumeSnapshotsAttempted int `json:"csiVolumeSnapshotsAttempted"`
	CSIVolumeSnapshotsCompleted int `json:"csiVolumeSnapshotsCompleted"`
	FailureReason               string
}

// veleroGet reads a Backup or Restore ("backups" / "restores") object's status.
func veleroGet(t testing.TB, kind, name string) veleroStatus {
	t.Helper()
	out, err := kubectl("get", kind+".velero.io", "-n", env.Get("VELERO_NAMESPACE"), name, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var o struct{ Status veleroStatus }
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		t.Fatalf("%s %s: %v", kind, name, err)
	}
	return o.Status
}

// veleroBackup runs `velero backup create NAME --include-namespaces NS
// --wait` of the path's namespace and returns its status, failing unless
// it is Completed. The backup is labelled for cleanup.
func (p *realPath) veleroBackup(name string) veleroStatus {
	p.t.Helper()
	velero(p.t, "backup", "create", name, "--include-namespaces", p.ns, "--snapshot-volumes",
		"--labels", "lifeboat.io/e2e-namespace="+p.ns, "--wait")
	st := veleroGet(p.t, "backups", name)
	if st.Phase != "Completed" {
		velero(p.t, "backup", "describe", name, "--details")
		velero(p.t, "backup", "logs", name)
		p.t.Fatalf("velero backup %s: phase %s (%d errors, %q)", name, st.Phase, st.Errors, st.FailureReason)
	}
	return st
}

// veleroRestore runs `velero restore create NAME --from-backup BACKUP
// --wait` and returns its status, failing unless it is Completed.
func (p *realPath) veleroRestore(name, backup string) veleroStatus {
	p.t.Helper()
	velero(p.t, "restore", "create", name, "--from-backup", backup,
		"--labels", "lifeboat.io/e2e-namespace="+p.ns, "--wait")
	st := veleroGet(p.t, "restores", name)
	if st.Phase != "Completed" {
		velero(p.t, "restore", "describe", name, "--details")
		velero(p.t, "restore", "logs", name)
		p.t.Fatalf("velero restore %s: phase %s (%d errors, %q)", name, st.Phase, st.Errors, st.FailureReason)
	}
	return st
}

// ---------------------------------------------------------------------------
// The CSI driver's config

// setCSICluster points clusterID at monitors (and a RADOS namespace) in
// the stack driver's config.json (ceph-csi's format, see the CSI contract),
// which lbcsi reads on every request, and puts the previous entry (or its
// absence) back when the test ends. Writers take the flock on
// <config>.lock and replace the file by rename, so no reader sees half a
// file and no writer loses another's entry; unknown fields are kept.
func setCSICluster(t testing.TB, clusterID string, monitors []string, radosNamespace string) {
	t.Helper()
	var prev map[string]any
	editCSIConfig(t, func(entries []map[string]any) []map[string]any {
		out, old := withoutCluster(entries, clusterID)
		prev = old
		return append(out, map[string]any{"clusterID": clusterID, "monitors": monitors,
			"rbd": map[string]any{"radosNamespace": radosNamespace}})
	})
	t.Cleanup(func() {
		editCSIConfig(t, func(entries []map[string]any) []map[string]any {
			out, _ := withoutCluster(entries, clusterID)
			if prev != nil {
				out = append(out, prev)
			}
			return out
		})
	})
}

// withoutCluster returns entries without clusterID's, and that entry.
func withoutCluster(entries []map[string]any, clusterID string) (out []map[string]any, removed map[string]any) {
	for _, e := range entries {
		if e["clusterID"] == clusterID {
			removed = e
			continue
		}
		out = append(out, e)
	}
	return out, removed
}

// editCSIConfig applies edit to the driver's config.json under its flock.
func editCSIConfig(t testing.TB, edit func([]map[string]any) []map[string]any) {
	t.Helper()
	path := env.Get("CSI_CONFIG")
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("CSI config lock: %v", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("flock %s.lock: %v", path, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing releases it too
	var entries []map[string]any
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		t.Fatalf("reading %s: %v", path, err)
	case len(bytes.TrimSpace(b)) > 0:
		if err := json.Unmarshal(b, &entries); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	out, err := json.MarshalIndent(edit(entries), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.json")
	if err == nil {
		_, err = tmp.Write(append(out, '\n'))
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		t.Fatalf("writing %s: %v", path, err)
	}
}
