//go:build e2e

package e2e

// The real path end to end: PVCs provisioned by csi-provisioner through our
// CSI driver, a real `velero backup create` (snapshot-controller,
// csi-snapshotter, Velero's CSI actions), lifeboat's agent exporting the
// snapshots, and a real `velero restore create` with Ceph alive.

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// vscSeen is the last state of each VolumeSnapshotContent of a namespace a
// watch saw, deleted ones included: Velero deletes the contents it made
// when the backup finalizes (the class's Retain keeps the RBD snapshots).
type vscSeen struct {
	mu       sync.Mutex
	last     map[string]*snapv1.VolumeSnapshotContent
	labelled map[string]time.Time // first seen with velero.io/backup-name
	deleted  map[string]time.Time
}

// watchContents records the namespace's VolumeSnapshotContents until the
// test ends.
func (p *realPath) watchContents() *vscSeen {
	p.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := p.sim.Snap.SnapshotV1().VolumeSnapshotContents().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		p.t.Fatal(err)
	}
	seen := &vscSeen{last: map[string]*snapv1.VolumeSnapshotContent{}, labelled: map[string]time.Time{}, deleted: map[string]time.Time{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			c, ok := ev.Object.(*snapv1.VolumeSnapshotContent)
			if !ok || c.Spec.VolumeSnapshotRef.Namespace != p.ns {
				continue
			}
			seen.mu.Lock()
			seen.last[c.Name] = c.DeepCopy()
			if _, ok := seen.labelled[c.Name]; !ok && c.Labels["velero.io/backup-name"] != "" {
				seen.labelled[c.Name] = time.Now()
			}
			if ev.Type == watch.Deleted {
				seen.deleted[c.Name] = time.Now()
			}
			seen.mu.Unlock()
		}
	}()
	p.t.Cleanup(func() { cancel(); w.Stop(); <-done })
	return seen
}

// ofBackup returns the recorded contents labelled with Velero backup b.
func (s *vscSeen) ofBackup(b string) map[string]*snapv1.VolumeSnapshotContent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ofBackupLocked(b)
}

// handlesOf waits for the watch to have seen, for every PVC of vols, the
// content Velero backup b made of it with its snapshot handle (the watch
// may trail `velero backup create --wait`), and returns the handles by the
// keys of vols.
func (s *vscSeen) handlesOf(t testing.TB, b string, vols map[string]*realPVC) map[string]string {
	t.Helper()
	handles := map[string]string{}
	waitUntil(t, fmt.Sprintf("the watch to see backup %s's snapshots of %d PVCs", b, len(vols)), 30*time.Second, func() bool {
		for _, c := range s.ofBackup(b) {
			for key, v := range vols {
				if c.Spec.Source.VolumeHandle != nil && *c.Spec.Source.VolumeHandle == v.Handle && c.Status != nil && c.Status.SnapshotHandle != nil {
					handles[key] = *c.Status.SnapshotHandle
				}
			}
		}
		return len(handles) == len(vols)
	})
	return handles
}

func (s *vscSeen) ofBackupLocked(b string) map[string]*snapv1.VolumeSnapshotContent {
	out := map[string]*snapv1.VolumeSnapshotContent{}
	for n, c := range s.last {
		if c.Labels["velero.io/backup-name"] == b {
			out[n] = c
		}
	}
	return out
}

func TestVeleroBackupRestore(t *testing.T) {
	start := time.Now()
	p := newRealPath(t, "velero")
	w := &world{t: t, sim: p.sim, id: p.ns, driver: realDriver} // for the agent helpers
	s3Creds(t)
	bucket := removedAtEnd(t, "velero-"+p.ns).name
	initRepo(t, bucket)
	kc := saKubeconfig(t, w)
	a := startAgent(t, w, kc, agentConfig(t, bucket, fmt.Sprintf("  includeNamespaces: [%q]\n", p.ns)), "replica-velero")

	// Two volumes with known data, written through librbd.
	db, logs := p.createPVC("db", 32*MiB), p.createPVC("logs", 16*MiB)
	want := map[string]string{"db": p.writePVC(db, 1), "logs": p.writePVC(logs, 2)}
	t.Logf("PVCs bound and written after %s", time.Since(start).Round(time.Millisecond))

	// The backup.
	seen := p.watchContents()
	backup := "b-" + p.ns
	st := p.veleroBackup(backup)
	if st.CSIVolumeSnapshotsAttempted != 2 || st.CSIVolumeSnapshotsCompleted != 2 {
		t.Fatalf("backup %s: CSI snapshots %d attempted, %d completed; want 2 and 2", backup, st.CSIVolumeSnapshotsAttempted, st.CSIVolumeSnapshotsCompleted)
	}
	t.Logf("velero backup Completed after %s", time.Since(start).Round(time.Millisecond))
	handles := seen.handlesOf(t, backup, map[string]*realPVC{"db": db, "logs": logs}) // PVC name → snapshot handle
	for name, c := range seen.ofBackup(backup) {
		if c.Spec.Driver != realDriver || c.Spec.Source.VolumeHandle == nil || c.Status == nil || c.Status.SnapshotHandle == nil {
			t.Fatalf("VolumeSnapshotContent %s of the backup: driver %s, source %+v, status %+v", name, c.Spec.Driver, c.Spec.Source, c.Status)
		}
		if c.Spec.VolumeSnapshotClassName == nil || *c.Spec.VolumeSnapshotClassName != realSnapshotClass {
			t.Errorf("VolumeSnapshotContent %s: class %v, want %s", name, c.Spec.VolumeSnapshotClassName, realSnapshotClass)
		}
	}
	// Velero 1.18 deletes the VolumeSnapshots and contents it made when the
	// backup finalizes (Retain keeps the RBD snapshots): an agent watching
	// contents has that long to see them. Say how long it was, and how far
	// the agent got meanwhile.
	waitUntil(t, "Velero to delete the backup's VolumeSnapshotContents", time.Minute, func() bool {
		seen.mu.Lock()
		defer seen.mu.Unlock()
		n := 0
		for name := range seen.ofBackupLocked(backup) {
			if _, ok := seen.deleted[name]; ok {
				n++
			}
		}
		return n == 2
	})
	seen.mu.Lock()
	for name, c := range seen.ofBackupLocked(backup) {
		t.Logf("VolumeSnapshotContent %s: labelled by Velero for %s before Velero deleted it; last lifeboat.io/phase %q",
			name, seen.deleted[name].Sub(seen.labelled[name]).Round(time.Millisecond), c.Annotations["lifeboat.io/phase"])
	}
	seen.mu.Unlock()
	// Each snapshot holds the bytes written before it.
	for pvc, h := range handles {
		img, snap := snapshotImage(t, h)
		if got := p.imageSHA256(img, snap); got != want[pvc] {
			t.Errorf("snapshot %s of %s: sha256 %s, the volume had %s", h, pvc, got, want[pvc])
		}
	}

	// resolve by handle: the VolumeSnapshotContents may be gone already.
	for pvc, h := range handles {
		r := w.run("resolve", h, "-o", "json")
		if r.code != 0 {
			t.Fatalf("resolve %s: %s", h, r.stderr)
		}
		var got struct {
			Image  struct{ ClusterID, Pool, Namespace, Name, Snapshot string }
			Source string
		}
		mustJSON(t, r.stdout, &got)
		img, snap := snapshotImage(t, h)
		src := map[string]*realPVC{"db": db, "logs": logs}[pvc].Image
		if got.Image.ClusterID != realClusterID || got.Image.Pool != realPool || got.Image.Name != img || got.Image.Snapshot != snap || got.Source != src {
			t.Errorf("resolve %s (%s): %+v source %s; want %s/%s@%s from %s", h, pvc, got.Image, got.Source, realPool, img, snap, src)
		}
	}

	// The agent exports each snapshot once, before any restore: it exports
	// what its informer saw even when Velero deleted the content first.
	ids := map[string]string{}
	waitFor(t, "the agent to export both snapshots", 3*time.Minute, func() bool {
		for pvc, h := range handles {
			if b := backupsOf(t, bucket, h); len(b) == 1 {
				ids[pvc] = b[0]
			}
		}
		return len(ids) == 2
	}, a)

	// Disaster light: the namespace goes (the namespace controller deletes
	// the PVCs, csi-provisioner their volumes), Velero restores it.
	p.deleteNamespace(2 * time.Minute)
	restore := "r-" + p.ns
	p.veleroRestore(restore, backup)
	t.Logf("velero restore Completed after %s", time.Since(start).Round(time.Millisecond))
	for _, pvc := range []string{"db", "logs"} {
		v := p.waitBound(pvc, 2*time.Minute)
		if got := p.imageSHA256(v.Image, ""); got != want[pvc] {
			t.Errorf("restored PVC %s (image %s): sha256 %s, want %s", pvc, v.Image, got, want[pvc])
		}
	}

	// The restored VolumeSnapshotContents carry Velero's labels and the
	// same handles; the agent recognises its exports (no second export).
	restored := map[string]*snapv1.VolumeSnapshotContent{}
	for _, c := range p.contents() {
		if c.Labels["velero.io/restore-name"] == restore {
			restored[*c.Spec.Source.SnapshotHandle] = c.DeepCopy()
		}
	}
	for pvc, h := range handles {
		c := restored[h]
		if c == nil {
			t.Fatalf("no restored VolumeSnapshotContent with handle %s (%s); have %v", h, pvc, keys(restored))
		}
		if c.Labels["velero.io/backup-name"] != backup || c.Spec.DeletionPolicy != snapv1.VolumeSnapshotContentRetain {
			t.Errorf("restored VolumeSnapshotContent %s: labels %v, deletionPolicy %s", c.Name, c.Labels, c.Spec.DeletionPolicy)
		}
		// Velero's annotations on the restored VolumeSnapshot, from the backup.
		ref := c.Spec.VolumeSnapshotRef
		vs, err := p.sim.Snap.SnapshotV1().VolumeSnapshots(ref.Namespace).Get(context.Background(), ref.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("restored VolumeSnapshot %s/%s: %v", ref.Namespace, ref.Name, err)
		}
		if vs.Annotations["velero.io/csi-volumesnapshot-handle"] != h || vs.Annotations["velero.io/csi-driver-name"] != realDriver ||
			vs.Labels["velero.io/backup-name"] != backup {
			t.Errorf("restored VolumeSnapshot %s/%s: labels %v annotations %v", vs.Namespace, vs.Name, vs.Labels, vs.Annotations)
		}
		waitFor(t, "the agent to annotate "+c.Name, time.Minute, func() bool {
			ann := w.annotations(c.Name)
			return ann["lifeboat.io/phase"] == "Exported" && ann["lifeboat.io/backup-id"] == ids[pvc]
		}, a)
		if b := backupsOf(t, bucket, h); len(b) != 1 {
			t.Errorf("snapshot %s (%s) has backups %v, want exactly %s", h, pvc, b, ids[pvc])
		}
		// resolve and verify on the restored content.
		r := w.run("resolve", c.Name, "-o", "json")
		var got struct {
			VolumeSnapshotContent, VeleroBackup, SnapshotHandle string
			Image                                               struct{ Name, Snapshot string }
		}
		mustJSON(t, r.stdout, &got)
		img, snap := snapshotImage(t, h)
		if r.code != 0 || got.VeleroBackup != backup || got.SnapshotHandle != h || got.Image.Name != img || got.Image.Snapshot != snap {
			t.Errorf("resolve %s: exit %d %+v", c.Name, r.code, got)
		}
	}
	names := make([]string, 0, len(handles))
	for _, h := range handles {
		names = append(names, restored[h].Name)
	}
	r := w.run(append([]string{"verify", "-o", "json"}, names...)...)
	rep := parseReport(t, r.stdout)
	if r.code != 0 || len(rep.Snapshots) != 2 {
		t.Fatalf("verify %v: exit %d, %d snapshots", names, r.code, len(rep.Snapshots))
	}
	for _, s := range rep.Snapshots {
		if s.Status != "OK" || len(s.Problems) != 0 {
			t.Errorf("verify %s: %+v", s.Name, s)
		}
	}

	// A VolumeSnapshot made by hand (no Velero) is not the agent's.
	manual := p.snapshotPVC("db", "by-hand")
	time.Sleep(5 * time.Second) // two verify intervals and the informer's event
	for k := range w.annotations(manual.Name) {
		if strings.HasPrefix(k, "lifeboat.io/") {
			t.Errorf("the hand-made snapshot %s got %s", manual.Name, k)
		}
	}
	if b := backupsOf(t, bucket, *manual.Status.SnapshotHandle); len(b) != 0 {
		t.Errorf("the hand-made snapshot was exported: %v", b)
	}
	t.Logf("done after %s", time.Since(start).Round(time.Millisecond))
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestVeleroCatchUp: a Velero backup taken while no agent runs leaves
// nothing to watch (Velero deletes its VolumeSnapshotContents as soon as it
// completes). The agent, started afterwards, finds the snapshot in Velero's
// volume list of the backup (a DownloadRequest answered by the real Velero
// server) and exports it once, with the PVC and Velero backup it belongs
// to; the backup restores bit-exactly; a restarted agent exports nothing
// again.
func TestVeleroCatchUp(t *testing.T) {
	p := newRealPath(t, "catchup")
	w := &world{t: t, sim: p.sim, id: p.ns, driver: realDriver}
	s3Creds(t)
	bucket := removedAtEnd(t, "catchup-"+p.ns).name
	initRepo(t, bucket)
	kc := saKubeconfig(t, w)
	db := p.createPVC("db", 16*MiB)
	want := p.writePVC(db, 3)

	// The backup, with no agent running: Velero deletes its content.
	seen := p.watchContents()
	backup := "b-" + p.ns
	if st := p.veleroBackup(backup); st.CSIVolumeSnapshotsCompleted != 1 {
		t.Fatalf("backup %s: %d CSI snapshots completed, want 1", backup, st.CSIVolumeSnapshotsCompleted)
	}
	var content, h string
	waitUntil(t, "Velero to delete the backup's VolumeSnapshotContent", time.Minute, func() bool {
		seen.mu.Lock()
		defer seen.mu.Unlock()
		for name, c := range seen.ofBackupLocked(backup) {
			if _, gone := seen.deleted[name]; gone && c.Status != nil && c.Status.SnapshotHandle != nil {
				content, h = name, *c.Status.SnapshotHandle
				return true
			}
		}
		return false
	})
	if b := backupsOf(t, bucket, h); len(b) != 0 {
		t.Fatalf("snapshot %s exported with no agent running: %v", h, b)
	}

	// The agent starts after the backup and catches up from Velero's record.
	conf := agentConfig(t, bucket, fmt.Sprintf("  includeNamespaces: [%q]\n  veleroInterval: 3s\n", p.ns))
	a := startAgent(t, w, kc, conf, "replica-catchup")
	var ids []string
	waitFor(t, "the agent to export the snapshot Velero's backup names", 3*time.Minute, func() bool {
		ids = backupsOf(t, bucket, h)
		return len(ids) > 0
	}, a)
	r := runLifeboat(t, "backups", "list", "-o", "json", "--s3-endpoint", env.Get("S3_ENDPOINT"), "--s3-bucket", bucket)
	var list []struct {
		ID     string
		Source map[string]string
	}
	mustJSON(t, r.stdout, &list)
	for _, b := range list {
		src := b.Source
		if b.ID == ids[0] && (src["pvc"] != p.ns+"/db" || src["veleroBackup"] != backup || src["volumeSnapshotContent"] != content) {
			t.Errorf("backup %s records %v; want PVC %s/db, Velero backup %s, content %s", b.ID, src, p.ns, backup, content)
		}
	}
	mf, err := a.scrape()
	if err != nil || value(mf, "lifeboat_velero_caught_up_total") != 1 {
		t.Errorf("lifeboat_velero_caught_up_total %v (%v), want 1", value(mf, "lifeboat_velero_caught_up_total"), err)
	}

	// It restores bit-exactly.
	target := "catchup-" + p.ns
	t.Cleanup(func() {
		_, _ = exec.Command("rbd", "-c", env.Get("CEPH_CONF"), "rm", realPool+"/"+target).CombinedOutput()
	})
	res := runLifeboat(t, "restore", ids[0], "--to", realPool+"/"+target, "--ceph-conf", env.Get("CEPH_CONF"),
		"--s3-endpoint", env.Get("S3_ENDPOINT"), "--s3-bucket", bucket)
	if res.code != 0 {
		t.Fatalf("restore %s: %s", ids[0], res.stderr)
	}
	if got := p.imageSHA256(target, ""); got != want {
		t.Errorf("backup %s restores to sha256 %s, the volume had %s", ids[0], got, want)
	}

	// A restarted agent reads Velero's backups again and exports nothing.
	_ = a.cmd.Process.Signal(syscall.SIGTERM) // a clean exit frees the Lease at once
	select {
	case err := <-a.done:
		a.done <- err
	case <-time.After(15 * time.Second):
		t.Fatal("agent did not stop within 15s of SIGTERM")
	}
	b := startAgent(t, w, kc, conf, "replica-catchup-2")
	waitFor(t, "the restarted agent to read Velero's backups", 2*time.Minute, func() bool {
		return strings.Contains(b.log(), "read Velero's backups")
	}, b)
	time.Sleep(4 * time.Second) // one more round
	if got := backupsOf(t, bucket, h); len(got) != 1 {
		t.Errorf("after a restart, snapshot %s has backups %v, want only %v", h, got, ids)
	}
	if mf, err := b.scrape(); err != nil || value(mf, "lifeboat_velero_caught_up_total") != 0 {
		t.Errorf("restarted agent: lifeboat_velero_caught_up_total %v (%v), want 0", value(mf, "lifeboat_velero_caught_up_total"), err)
	}
}
