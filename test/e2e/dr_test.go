//go:build e2e

package e2e

// Disaster recovery: `lifeboat restore --velero-backup` recreates, in a new
// Ceph cluster, every CSI snapshot of a Velero backup the way ceph-csi
// left it, from the repository alone.

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lifeboat-backup/lifeboat/rbd/handle"
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

	db := w.volumeWith("db", 64*MiB, 21,
		sim.Region{Off: 0, Len: 24 * MiB, Kind: sim.Random}, sim.Region{Off: 24 * MiB, Len: 8 * MiB, Kind: sim.Text})
	files := w.volumeWith("files", 64*MiB, 22, // text with holes between
		sim.Region{Off: 1 * MiB, Len: 3 * MiB, Kind: sim.Text}, sim.Region{Off: 20*MiB + 4321, Len: 5 * MiB, Kind: sim.Random},
		sim.Region{Off: 60 * MiB, Len: 4 * MiB, Kind: sim.Text})
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

	// verify: a journal without csi.source is a problem ceph-csi would hit.
	h := out.Volumes[0].NewHandle
	content := w.content(h, true, 64*MiB)
	if r := w.run("verify", content, "--ceph-secret", secret); r.code != 0 {
		t.Errorf("verify of the rehydrated snapshot: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	nu, _ := handle.Decode(h)
	cephTool(t, b.conf(), "rados", "-p", "replicapool", "-N", w.id, "rmomapkey", "csi.snap."+nu.UUID, "csi.source")
	if r := w.run("verify", content, "--ceph-secret", secret); r.code != 1 || !strings.Contains(r.stdout, "JournalIncomplete") {
		t.Errorf("verify of a journal without csi.source: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}

	// Measured for the record: both volumes at once against two restores.
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
	t.Logf("restore --velero-backup of 2 volumes (64 MiB each): %s; two lifeboat restore: %s", took.Round(10*time.Millisecond), single.Round(10*time.Millisecond))
}
