//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lifeboat-backup/lifeboat/rbd/handle"
	"github.com/lifeboat-backup/lifeboat/test/sim"
)

const MiB = 1 << 20

// snapshot makes a Velero-style snapshot of a fresh volume with some data.
func (w *world) volume(name string, size uint64) *sim.Volume {
	w.t.Helper()
	ctx := context.Background()
	v, err := w.sim.CreateVolume(ctx, w.id, name, size)
	if err != nil {
		w.t.Fatalf("CreateVolume: %v", err)
	}
	regions := []sim.Region{{Off: 0, Len: 4 * MiB, Kind: sim.Random}, {Off: 8 * MiB, Len: 4 * MiB, Kind: sim.Text}}
	if err := v.Fill(ctx, regions, 1); err != nil {
		w.t.Fatalf("Fill: %v", err)
	}
	return v
}

func (w *world) snapshot(v *sim.Volume, backup string) *sim.Snapshot {
	w.t.Helper()
	s, err := w.sim.CreateSnapshot(context.Background(), v, backup)
	if err != nil {
		w.t.Fatalf("CreateSnapshot: %v", err)
	}
	return s
}

// content creates a VolumeSnapshotContent by hand (as for a pre-provisioned
// snapshot) with the given handle and readiness.
func (w *world) content(h string, ready bool, size int64) string {
	w.t.Helper()
	ctx := context.Background()
	name := "snapcontent-" + uuid.NewString()
	vsc := &snapv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: snapv1.VolumeSnapshotContentSpec{
			Driver: w.driver, DeletionPolicy: snapv1.VolumeSnapshotContentRetain,
			Source:            snapv1.VolumeSnapshotContentSource{SnapshotHandle: &h},
			VolumeSnapshotRef: corev1.ObjectReference{Namespace: w.id, Name: "pre-" + name},
		},
	}
	created, err := w.sim.Snap.SnapshotV1().VolumeSnapshotContents().Create(ctx, vsc, metav1.CreateOptions{})
	if err != nil {
		w.t.Fatalf("creating VolumeSnapshotContent: %v", err)
	}
	created.Status = &snapv1.VolumeSnapshotContentStatus{SnapshotHandle: &h, ReadyToUse: &ready, RestoreSize: &size}
	if _, err := w.sim.Snap.SnapshotV1().VolumeSnapshotContents().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		w.t.Fatalf("setting VolumeSnapshotContent status: %v", err)
	}
	return name
}

func (w *world) handle(clusterID string, pool int64) (string, string) {
	u := uuid.NewString()
	return handle.ID{Version: 1, ClusterID: clusterID, PoolID: pool, UUID: u}.String(), u
}

func TestResolveAndVerifyHealthy(t *testing.T) {
	w := newWorld(t)
	vol := w.volume("data", 64*MiB)
	s1 := w.snapshot(vol, "nightly-1")
	s2 := w.snapshot(vol, "nightly-2")

	for _, target := range []string{s1.ContentName, s1.VSNamespace + "/" + s1.VSName, s1.Handle} {
		r := w.run("resolve", target, "-o", "json")
		if r.code != 0 {
			t.Fatalf("resolve %s: exit %d: %s", target, r.code, r.stderr)
		}
		var got struct {
			VolumeSnapshotContent, VolumeSnapshot, PVC, VeleroBackup, SnapshotHandle, ImageID, Source string
			Image                                                                                     struct{ ClusterID, Pool, Namespace, Name, Snapshot string }
			Size, SnapshotSize, Overlap                                                               uint64
			Features, OpFeatures                                                                      []string
			Flattened, FromJournal                                                                    bool
			Parent                                                                                    struct{ Image, SnapNamespace, Pool, Namespace string }
		}
		mustJSON(t, r.stdout, &got)
		want := bridgeImage{w.id, "replicapool", w.id, s1.ImageName, s1.SnapName}
		if (bridgeImage{got.Image.ClusterID, got.Image.Pool, got.Image.Namespace, got.Image.Name, got.Image.Snapshot}) != want {
			t.Errorf("resolve %s: image %+v, want %+v", target, got.Image, want)
		}
		if got.VolumeSnapshotContent != s1.ContentName || got.VolumeSnapshot != s1.VSNamespace+"/"+s1.VSName ||
			got.PVC != w.id+"/data" || got.VeleroBackup != "nightly-1" || got.SnapshotHandle != s1.Handle {
			t.Errorf("resolve %s: kube side %+v", target, got)
		}
		if got.ImageID != s1.ImageID || got.Source != vol.Name || !got.FromJournal || got.Flattened {
			t.Errorf("resolve %s: id %q source %q journal %v flattened %v", target, got.ImageID, got.Source, got.FromJournal, got.Flattened)
		}
		if got.Size != 64*MiB || got.SnapshotSize != 64*MiB || got.Overlap != 64*MiB {
			t.Errorf("resolve %s: sizes %d/%d/%d", target, got.Size, got.SnapshotSize, got.Overlap)
		}
		if !reflect.DeepEqual(got.Features, []string{"layering", "deep-flatten", "operations"}) || !slices.Contains(got.OpFeatures, "clone-child") {
			t.Errorf("resolve %s: features %v op_features %v", target, got.Features, got.OpFeatures)
		}
		if got.Parent.Image != vol.Name || got.Parent.SnapNamespace != "trash" || got.Parent.Namespace != w.id {
			t.Errorf("resolve %s: parent %+v", target, got.Parent)
		}
	}
	table := w.run("resolve", s2.ContentName)
	for _, s := range []string{s2.ImageName, "snapshot in trash", "clone-child", w.id + "/data"} {
		if !strings.Contains(table.stdout, s) {
			t.Errorf("resolve table lacks %q", s)
		}
	}

	r := w.run("verify", "-o", "json")
	if r.code != 0 {
		t.Fatalf("verify: exit %d, want 0", r.code)
	}
	checkVerifyShape(t, r.stdout)
	rep := parseReport(t, r.stdout)
	if len(rep.Snapshots) != 2 || len(rep.Orphans) != 0 {
		t.Fatalf("verify: %+v", rep)
	}
	for _, s := range rep.Snapshots {
		if s.Status != "OK" || len(s.Problems) != 0 || s.Flattened {
			t.Errorf("verify %s: %+v", s.Name, s)
		}
	}
	if r := w.run("verify"); r.code != 0 || !strings.Contains(r.stdout, "2 snapshots, 2 OK") {
		t.Errorf("verify table: exit %d", r.code)
	}
	if r := w.run("verify", "-o", "yaml", s1.ContentName); r.code != 0 || !strings.Contains(r.stdout, "status: OK") {
		t.Errorf("verify yaml of one: exit %d", r.code)
	}
}

type bridgeImage struct{ ClusterID, Pool, Namespace, Name, Snapshot string }

type report struct {
	Snapshots []struct {
		Name, VolumeSnapshot, SnapshotHandle, Status string
		Image                                        bridgeImage
		Flattened                                    bool
		Problems                                     []struct{ Code, Message string }
	}
	Orphans []struct {
		ClusterID, Pool, Namespace, Image string
		Size                              uint64
	}
}

func parseReport(t *testing.T, out string) report {
	t.Helper()
	var rep report
	mustJSON(t, out, &rep)
	return rep
}

// checkVerifyShape holds verify's JSON to its documented keys, exactly.
func checkVerifyShape(t *testing.T, out string) {
	t.Helper()
	var raw map[string]any
	mustJSON(t, out, &raw)
	wantKeys(t, "report", raw, "snapshots", "orphans")
	for _, s := range raw["snapshots"].([]any) {
		m := s.(map[string]any)
		wantKeys(t, "snapshot", m, "name", "volumeSnapshot", "snapshotHandle", "image", "flattened", "status", "problems")
		wantKeys(t, "image", m["image"].(map[string]any), "clusterID", "pool", "namespace", "name", "snapshot")
		for _, p := range m["problems"].([]any) {
			wantKeys(t, "problem", p.(map[string]any), "code", "message")
		}
	}
	for _, o := range raw["orphans"].([]any) {
		wantKeys(t, "orphan", o.(map[string]any), "clusterID", "pool", "namespace", "image", "size")
	}
}

func wantKeys(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	sort.Strings(got)
	sort.Strings(keys)
	if !reflect.DeepEqual(got, keys) {
		t.Errorf("%s keys = %v, want %v", what, got, keys)
	}
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, s)
	}
}

// TestVerifyFindsEveryProblem breaks Ceph and the objects in every way the
// vocabulary names and checks that verify reports exactly that.
func TestVerifyFindsEveryProblem(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	pool := w.sim.PoolID()
	want := map[string][]string{} // content name → codes

	vol := w.volume("app", 32*MiB)
	healthy := w.snapshot(vol, "b1")
	want[healthy.ContentName] = nil

	snapGone := w.snapshot(vol, "b1")
	w.ceph("rbd", "snap", "rm", w.spec(snapGone.ImageName)+"@"+snapGone.SnapName)
	want[snapGone.ContentName] = []string{"SnapshotNotFound"}

	imageGone := w.snapshot(vol, "b1")
	w.ceph("rbd", "snap", "purge", w.spec(imageGone.ImageName))
	w.ceph("rbd", "rm", w.spec(imageGone.ImageName))
	want[imageGone.ContentName] = []string{"ImageNotFound"}

	flat := w.snapshot(vol, "b1")
	w.ceph("rbd", "flatten", w.spec(flat.ImageName))
	want[flat.ContentName] = nil // OK, flattened

	resized := w.snapshot(vol, "b1")
	vsc, err := w.sim.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, resized.ContentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	big := int64(64 * MiB)
	vsc.Status.RestoreSize = &big
	if _, err := w.sim.Snap.SnapshotV1().VolumeSnapshotContents().UpdateStatus(ctx, vsc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want[resized.ContentName] = []string{"SizeMismatch"}

	// A volume whose parent header object is removed behind librbd's back.
	doomed := w.volume("doomed", 16*MiB)
	orphanedChild := w.snapshot(doomed, "b1")
	w.ceph("rados", "-p", "replicapool", "-N", w.id, "rm", "rbd_header."+doomed.ID)
	want[orphanedChild.ContentName] = []string{"ParentMissing"}

	// A volume deleted while its snapshots remain: ceph-csi moves it to the
	// RBD trash, and the snapshots stay healthy.
	gone := w.volume("deleted", 16*MiB)
	survivor := w.snapshot(gone, "b1")
	if trashed, err := w.sim.DeleteVolume(ctx, gone); err != nil || !trashed {
		t.Fatalf("DeleteVolume: trashed=%v err=%v", trashed, err)
	}
	want[survivor.ContentName] = nil

	// A snapshot of a volume restored from a snapshot: a clone of a clone.
	restored, err := w.sim.CreateVolumeFromSnapshot(ctx, healthy, w.id, "restored")
	if err != nil {
		t.Fatal(err)
	}
	grandchild := w.snapshot(restored, "b2")
	want[grandchild.ContentName] = nil

	// An orphan: Velero's objects deleted, the image kept (Retain).
	orphan := w.snapshot(vol, "b1")
	if err := w.sim.DeleteContent(ctx, orphan); err != nil {
		t.Fatal(err)
	}

	h, _ := w.handle(w.id, pool)
	want[w.content("0002"+h[4:], true, 1)] = []string{"MalformedHandle"}
	h, _ = w.handle("no-such-cluster", pool)
	want[w.content(h, true, 1)] = []string{"UnknownCluster"}
	h, _ = w.handle(w.id, 4242)
	want[w.content(h, true, 1)] = []string{"PoolNotFound"}
	h, _ = w.handle(w.id, pool)
	want[w.content(h, false, 1)] = []string{"NotReady"}

	// An image made by an old or foreign provisioner: no deep-flatten, not a
	// clone. No journal entry either: found by ceph-csi's naming fallback.
	h, u := w.handle(w.id, pool)
	w.ceph("rbd", "create", "--size", "16M", "--image-feature", "layering", w.spec("csi-snap-"+u))
	w.ceph("rbd", "snap", "create", w.spec("csi-snap-"+u)+"@csi-snap-"+u)
	want[w.content(h, true, 16*MiB)] = []string{"FeatureMissing"}

	// A clone v1 (protected parent snapshot): a parent but no clone-child.
	h, u = w.handle(w.id, pool)
	w.ceph("rbd", "snap", "create", w.spec(vol.Name)+"@v1base")
	w.ceph("rbd", "snap", "protect", w.spec(vol.Name)+"@v1base")
	w.ceph("rbd", "clone", "--rbd-default-clone-format", "1", "--image-feature", "layering", "--image-feature", "deep-flatten",
		w.spec(vol.Name)+"@v1base", w.spec("csi-snap-"+u))
	w.ceph("rbd", "snap", "create", w.spec("csi-snap-"+u)+"@csi-snap-"+u)
	want[w.content(h, true, 32*MiB)] = []string{"NotCloneChild"}

	r := w.run("verify", "-o", "json")
	if r.code != 1 {
		t.Errorf("verify: exit %d, want 1", r.code)
	}
	checkVerifyShape(t, r.stdout)
	rep := parseReport(t, r.stdout)
	got := map[string][]string{}
	for _, s := range rep.Snapshots {
		var codes []string
		for _, p := range s.Problems {
			codes = append(codes, p.Code)
			if p.Message == "" {
				t.Errorf("%s: %s without a message", s.Name, p.Code)
			}
		}
		got[s.Name] = codes
		if wantOK := len(want[s.Name]) == 0; wantOK != (s.Status == "OK") {
			t.Errorf("%s: status %s with problems %v", s.Name, s.Status, codes)
		}
		if s.Name == flat.ContentName && !s.Flattened {
			t.Errorf("flattened clone not marked flattened: %+v", s)
		}
	}
	if !reflect.DeepEqual(got, want) {
		for name := range want {
			if !reflect.DeepEqual(got[name], want[name]) {
				t.Errorf("%s: problems %v, want %v", name, got[name], want[name])
			}
		}
	}
	if len(rep.Orphans) != 1 || rep.Orphans[0].Image != orphan.ImageName || rep.Orphans[0].Size != 32*MiB ||
		rep.Orphans[0].Namespace != w.id || rep.Orphans[0].ClusterID != w.id {
		t.Errorf("orphans = %+v, want only %s (32 MiB)", rep.Orphans, orphan.ImageName)
	}

	// The clone of a clone resolves to its own parent chain.
	rr := w.run("resolve", grandchild.ContentName, "-o", "json")
	var res struct{ Parent struct{ Image string } }
	mustJSON(t, rr.stdout, &res)
	if res.Parent.Image != restored.Name {
		t.Errorf("grandchild parent = %q, want %q", res.Parent.Image, restored.Name)
	}
	// Verifying only healthy ones by name exits 0 and lists no orphans.
	if r := w.run("verify", healthy.ContentName, survivor.ContentName, grandchild.ContentName); r.code != 0 {
		t.Errorf("verify of healthy snapshots: exit %d", r.code)
	}
}

// TestCouldNotCheck: exit 2, with a message naming what failed, whenever
// lifeboat cannot reach or read what it must check.
func TestCouldNotCheck(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	s := w.snapshot(w.volume("x", 16*MiB), "b")

	// Secrets with the right user and a malformed or a wrong (well-formed)
	// key: exit 2 naming the user, and the key never printed.
	for name, key := range map[string]string{
		"malformed": "AQBWrongKeyWrongKeyWrongKeyWrongKeyWrong==",
		"wrong":     "AQCOZgZrSHxmHxAAw003xqZfT7DAKVKsRp/fig==",
	} {
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "rook-ceph", Name: name + "-" + w.id},
			Data: map[string][]byte{"userID": []byte(env.Get("CEPH_CSI_USER")), "userKey": []byte(key)}}
		if _, err := w.sim.Kube.CoreV1().Secrets("rook-ceph").Create(ctx, secret, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		r := w.run("verify", "--ceph-secret", secret.Name, "--ceph-timeout", "5s")
		expect2(t, r, "client."+env.Get("CEPH_CSI_USER"))
		if strings.Contains(r.stderr+r.stdout, key[:20]) {
			t.Errorf("%s key: the cephx key appears in the output", name)
		}
	}

	expect2(t, w.run("verify", "--ceph-secret", "no-such-secret"), "no-such-secret")
	expect2(t, w.run("verify", "--csi-config-map", "no-such-map"), "no-such-map")
	expect2(t, w.run("verify", "-o", "xml"), "--output")
	expect2(t, w.run("resolve", "no-such-content"), "no-such-content")

	// The API server unreachable.
	kc := strings.Replace(readFile(t, env.Get("KUBECONFIG")), env.Get("KUBE_APISERVER"), "https://127.0.0.1:1", 1)
	path := t.TempDir() + "/kubeconfig"
	writeFile(t, path, kc)
	expect2(t, runLifeboat(t, "verify", "--kubeconfig", path, "--kube-timeout", "3s"), "127.0.0.1:1")

	// A monitor nobody answers at: exit 2 within the configured timeout.
	rookMu.Lock()
	err := w.sim.InstallRook(ctx, []string{"127.0.0.1:1"}, env.Get("CEPH_CSI_USER"), env.Get("CEPH_CSI_KEY"))
	rookMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	r := w.run("verify", s.ContentName, "--ceph-timeout", "3s")
	expect2(t, r, "127.0.0.1:1")
	if r.took > 8*time.Second {
		t.Errorf("unreachable monitor: took %s with --ceph-timeout 3s", r.took)
	}
}

func expect2(t *testing.T, r result, mention string) {
	t.Helper()
	if r.code != 2 {
		t.Errorf("exit %d, want 2 (stderr %q)", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, mention) {
		t.Errorf("stderr %q does not mention %q", r.stderr, mention)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
