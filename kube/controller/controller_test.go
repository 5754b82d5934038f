package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/lifeboat-backup/lifeboat/kube"
	"github.com/lifeboat-backup/lifeboat/kube/backup"
	"github.com/lifeboat-backup/lifeboat/kube/bridge"
	"github.com/lifeboat-backup/lifeboat/objectstore"
	"github.com/lifeboat-backup/lifeboat/rbd"
)

// The fixture runs the controller on fake clientsets and fake Ceph and
// repository sides, the way client-go's sample-controller tests itself:
// objects go into the fake clientset, the informers sync, and each test
// drives reconcile (or the queue) and reads back the annotations the
// controller patched, the Events it recorded and what it asked of Ceph
// and the repository.

const repoID = "repo-1"

// TestMain turns off client-go's WatchListClient: the external-snapshotter
// fake clientset does not send the bookmark that ends a watch-list's
// initial events, and its informers would never sync.
func TestMain(m *testing.M) {
	os.Setenv("KUBE_FEATURE_WatchListClient", "false")
	os.Exit(m.Run())
}

// fakeCeph is Checker, Locator and Exporter.
type fakeCeph struct {
	repo      *fakeRepo
	mu        sync.Mutex
	problems  map[string][]rbd.Problem // by handle
	checkErr  error
	exportErr error
	restored  map[string]string // image → backup id it was restored from
	checked   []string          // handles
	exported  []string          // handles
	taken     time.Time         // when the next exported snapshot was taken
}

func (f *fakeCeph) Check(_ context.Context, s kube.Snapshot) (bridge.SnapshotReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checked = append(f.checked, s.Handle())
	r := bridge.SnapshotReport{Name: s.Content.Name, SnapshotHandle: s.Handle(), Status: bridge.StatusOK, Problems: f.problems[s.Handle()]}
	if len(r.Problems) > 0 {
		r.Status = bridge.StatusProblem
	}
	return r, f.checkErr
}

func (f *fakeCeph) Verify(context.Context, []string) (*bridge.Report, error) {
	return &bridge.Report{
		Snapshots: []bridge.SnapshotReport{
			{VolumeSnapshot: "apps/a", Status: bridge.StatusOK, Image: bridge.Image{ClusterID: "c1"}},
			{VolumeSnapshot: "other/b", Status: bridge.StatusProblem, Problems: []rbd.Problem{{Code: rbd.FeatureMissing}}},
		},
		Orphans: []bridge.Orphan{{Image: "csi-snap-x", Size: 1 << 20}},
	}, nil
}

func (f *fakeCeph) Locate(_ context.Context, h string) (rbd.Ref, error) {
	return rbd.Ref{ClusterID: "c1", Pool: "replicapool", Image: "csi-snap-" + h, Snapshot: "csi-snap-" + h, Source: "csi-vol-1"}, nil
}

func (f *fakeCeph) RestoredFrom(_ context.Context, ref rbd.Ref) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restored[ref.Image], nil
}

func (f *fakeCeph) Forget(string)            {}
func (f *fakeCeph) Waiting() map[string]bool { return nil }

func (f *fakeCeph) Export(_ context.Context, s kube.Snapshot, ref rbd.Ref, _ backup.Options) (*backup.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.exportErr != nil {
		return nil, f.exportErr
	}
	f.exported = append(f.exported, s.Handle())
	f.taken = f.taken.Add(time.Hour)
	sum := summary(fmt.Sprintf("b%d", len(f.exported)), s.Handle(), s.Content.Name, f.taken)
	f.repo.add(sum)
	return &backup.Result{Manifest: &objectstore.Manifest{Summary: sum}, Path: backup.PathFull, CephBytesRead: 100, Seconds: 1}, nil
}

// summary is a backup of volume replicapool/csi-vol-1 in cluster fsid-1.
func summary(id, handle, content string, taken time.Time) objectstore.Summary {
	return objectstore.Summary{ID: id, Repository: repoID, Created: taken, Stats: objectstore.Stats{BytesNew: 10, BytesStored: 5},
		Source: map[string]string{backup.KeyHandle: handle, backup.KeyContent: content, backup.KeyFSID: "fsid-1",
			backup.KeyLineage: "replicapool/csi-vol-1", backup.KeyTaken: taken.Format(time.RFC3339Nano)}}
}

// fakeRepo is Backups.
type fakeRepo struct {
	mu      sync.Mutex
	backups []objectstore.Summary
	forgot  []string
}

func (r *fakeRepo) add(s objectstore.Summary) {
	r.mu.Lock()
	r.backups = append(r.backups, s)
	r.mu.Unlock()
}

func (r *fakeRepo) Config() objectstore.Config { return objectstore.Config{ID: repoID} }

func (r *fakeRepo) Backups(context.Context, bool) (objectstore.Catalog, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return objectstore.Catalog{Backups: slices.Clone(r.backups)}, nil
}

func (r *fakeRepo) HasBackup(_ context.Context, id string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.backups, func(s objectstore.Summary) bool { return s.ID == id }), nil
}

func (r *fakeRepo) Forget(_ context.Context, id string, _ bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.backups)
	r.backups = slices.DeleteFunc(r.backups, func(s objectstore.Summary) bool { return s.ID == id })
	if len(r.backups) == n {
		return objectstore.ErrBackupNotFound
	}
	r.forgot = append(r.forgot, id)
	return nil
}

func (r *fakeRepo) Outage() (error, time.Time) { return nil, time.Time{} }

type fixture struct {
	t      *testing.T
	ctx    context.Context
	client *snapfake.Clientset
	rec    *record.FakeRecorder
	ceph   *fakeCeph
	repo   *fakeRepo
	c      *Controller
}

// newFixture starts a controller's informers on objs, after setup has
// filled the fake repository and Ceph, and loads the repository as Run
// does; no worker runs: tests drive reconcile.
func newFixture(t *testing.T, cfg Config, setup func(*fixture), objs ...runtime.Object) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	repo := &fakeRepo{}
	f := &fixture{t: t, ctx: ctx, client: snapfake.NewSimpleClientset(objs...), rec: record.NewFakeRecorder(100), repo: repo,
		ceph: &fakeCeph{repo: repo, problems: map[string][]rbd.Problem{}, restored: map[string]string{}, taken: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
	if setup != nil {
		setup(f)
	}
	if cfg.Selector == nil {
		cfg.Selector = labels.Everything()
	}
	inf := snapinformers.NewSharedInformerFactory(f.client, 0)
	f.c = New(cfg, Deps{Snap: f.client, Informers: inf, Recorder: f.rec, Checker: f.ceph, Locator: f.ceph,
		Exporter: f.ceph, Backups: repo, Metrics: NewMetrics()})
	inf.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), f.c.synced...) {
		t.Fatal("informers did not sync")
	}
	if err := f.c.loadExported(ctx); err != nil {
		t.Fatal(err)
	}
	return f
}

// content is a ready VolumeSnapshotContent of ceph-csi's RBD driver, bound
// to VolumeSnapshot ns/name of PVC ns/data; snapshot is that VolumeSnapshot.
func content(name, ns string, ann map[string]string) *snapv1.VolumeSnapshotContent {
	h, ready := "handle-"+name, true
	return &snapv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann},
		Spec: snapv1.VolumeSnapshotContentSpec{Driver: "rook-ceph.rbd.csi.ceph.com",
			VolumeSnapshotRef: corev1.ObjectReference{Namespace: ns, Name: "vs-" + name}},
		Status: &snapv1.VolumeSnapshotContentStatus{SnapshotHandle: &h, ReadyToUse: &ready},
	}
}

func snapshot(name, ns string) *snapv1.VolumeSnapshot {
	pvc := "data"
	return &snapv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vs-" + name},
		Spec: snapv1.VolumeSnapshotSpec{Source: snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: &pvc}}}
}

// sync reconciles name and waits until the informer sees what it patched.
func (f *fixture) sync(name string) error {
	f.t.Helper()
	err := f.c.reconcile(f.ctx, name)
	f.settle(name)
	return err
}

// settle waits until the lister holds the clientset's annotations of name.
func (f *fixture) settle(name string) {
	f.t.Helper()
	want := f.ann(name)
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		got, err := f.c.contents.Get(name)
		if (err != nil && want == nil) || (err == nil && want != nil && maps.Equal(got.Annotations, want)) {
			return
		}
	}
	f.t.Fatalf("the informer never saw the annotations of %s", name)
}

// ann is the content's annotations as the API server has them (nil when
// it is gone).
func (f *fixture) ann(name string) map[string]string {
	vsc, err := f.client.SnapshotV1().VolumeSnapshotContents().Get(f.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	if vsc.Annotations == nil {
		return map[string]string{}
	}
	return vsc.Annotations
}

// phases lists the phases the controller patched, in order.
func (f *fixture) phases() []string {
	var out []string
	for _, a := range f.client.Actions() {
		p, ok := a.(k8stesting.PatchAction)
		if !ok {
			continue
		}
		var m struct {
			Metadata struct{ Annotations map[string]*string }
		}
		if err := json.Unmarshal(p.GetPatch(), &m); err != nil {
			f.t.Fatal(err)
		}
		if v := m.Metadata.Annotations[AnnPhase]; v != nil {
			out = append(out, *v)
		}
	}
	return out
}

// events drains the recorded Events.
func (f *fixture) events() []string {
	var out []string
	for {
		select {
		case e := <-f.rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func hasEvent(events []string, prefix string) bool {
	return slices.ContainsFunc(events, func(e string) bool { return strings.HasPrefix(e, prefix) })
}

func TestPendingToExported(t *testing.T) {
	f := newFixture(t, Config{Export: true}, nil, content("c1", "apps", nil), snapshot("c1", "apps"))
	if err := f.sync("c1"); err != nil {
		t.Fatal(err)
	}
	a := f.ann("c1")
	if a[AnnPhase] != PhaseExported || a[AnnBackupID] != "b1" || a[AnnRepository] != repoID || a[AnnVerified] != "OK" || a[AnnExportedAt] == "" {
		t.Errorf("annotations %v, want phase Exported, backup b1 of %s, verified OK, exported-at", a, repoID)
	}
	if _, ok := a[AnnError]; ok {
		t.Errorf("an error annotation stayed: %v", a)
	}
	if got := f.phases(); !slices.Equal(got, []string{PhasePending, PhaseExporting, PhaseExported}) {
		t.Errorf("phases patched %v, want Pending, Exporting, Exported", got)
	}
	ev := f.events()
	// Each Event is recorded on the content and on its VolumeSnapshot.
	if !hasEvent(ev, "Normal Exporting exporting replicapool/csi-snap-handle-c1@csi-snap-handle-c1") || !hasEvent(ev, "Normal Exported exported as backup b1 (full)") || len(ev) != 4 {
		t.Errorf("events %q", ev)
	}
	if n := testutil.ToFloat64(f.c.Metrics.Exports.WithLabelValues("success")); n != 1 {
		t.Errorf("lifeboat_exports_total{result=success} = %v, want 1", n)
	}
	if n := testutil.ToFloat64(f.c.Metrics.LastExport.WithLabelValues("apps", "data")); n == 0 {
		t.Error("lifeboat_last_export_timestamp_seconds of apps/data not set")
	}
	// Seen again (a resync): nothing more to do.
	if err := f.sync("c1"); err != nil {
		t.Fatal(err)
	}
	if len(f.ceph.exported) != 1 || len(f.phases()) != 3 {
		t.Errorf("a resync exported or patched again: exports %v, phases %v", f.ceph.exported, f.phases())
	}
}

func TestVerifyProblemFails(t *testing.T) {
	f := newFixture(t, Config{Export: true}, func(f *fixture) {
		f.ceph.problems["handle-c1"] = []rbd.Problem{{Code: rbd.FeatureMissing}, {Code: rbd.ParentMissing}}
	}, content("c1", "apps", nil))
	if err := f.sync("c1"); err != nil {
		t.Fatal(err)
	}
	a := f.ann("c1")
	if a[AnnPhase] != PhaseFailed || a[AnnVerified] != "FeatureMissing,ParentMissing" || a[AnnError] != "verify: FeatureMissing,ParentMissing" {
		t.Errorf("annotations %v, want Failed with the problems", a)
	}
	if len(f.ceph.exported) != 0 {
		t.Errorf("a broken snapshot was exported: %v", f.ceph.exported)
	}
	if ev := f.events(); !hasEvent(ev, "Warning VerifyFailed snapshot image has problems: FeatureMissing,ParentMissing") {
		t.Errorf("events %q", ev)
	}
}

func TestVerifyOnly(t *testing.T) {
	f := newFixture(t, Config{}, nil, content("c1", "apps", nil))
	if err := f.sync("c1"); err != nil {
		t.Fatal(err)
	}
	if a := f.ann("c1"); a[AnnVerified] != "OK" || a[AnnPhase] != "" || len(f.ceph.exported) != 0 {
		t.Errorf("without export: annotations %v, exports %v; want only verified OK", a, f.ceph.exported)
	}
}

func TestExportErrorRetriedWithBackoff(t *testing.T) {
	f := newFixture(t, Config{Export: true}, func(f *fixture) { f.ceph.exportErr = errors.New("S3 said no") },
		content("c1", "apps", nil))
	// The informer queued c1 when it listed it.
	if !f.c.next(f.ctx) {
		t.Fatal("the queue shut down")
	}
	f.settle("c1")
	if a := f.ann("c1"); a[AnnPhase] != PhaseFailed || a[AnnError] != "S3 said no" {
		t.Errorf("annotations %v, want Failed with the error", a)
	}
	if n := f.c.queue.NumRequeues("c1"); n != 1 {
		t.Errorf("requeues %d: want c1 queued again after a backoff", n)
	}
	if n := testutil.ToFloat64(f.c.Metrics.Exports.WithLabelValues("failure")); n != 1 {
		t.Errorf("lifeboat_exports_total{result=failure} = %v, want 1", n)
	}
	if ev := f.events(); !hasEvent(ev, "Warning ExportFailed S3 said no") {
		t.Errorf("events %q", ev)
	}
	// The retry succeeds once S3 does.
	f.ceph.exportErr = nil
	if err := f.sync("c1"); err != nil {
		t.Fatal(err)
	}
	if a := f.ann("c1"); a[AnnPhase] != PhaseExported || a[AnnError] != "" {
		t.Errorf("after the retry: %v", a)
	}
}

func TestForgotten(t *testing.T) {
	exported := map[string]string{AnnPhase: PhaseExported, AnnBackupID: "old", AnnRepository: repoID}
	elsewhere := map[string]string{AnnPhase: PhaseExported, AnnBackupID: "old", AnnRepository: "another-repo"}
	f := newFixture(t, Config{Export: true}, nil, content("c1", "apps", exported), content("c2", "apps", elsewhere))
	for _, n := range []string{"c1", "c2"} {
		if err := f.sync(n); err != nil {
			t.Fatal(err)
		}
	}
	if a := f.ann("c1"); a[AnnPhase] != PhaseForgotten || a[AnnRepository] != repoID {
		t.Errorf("c1: %v, want Forgotten", a)
	}
	if ev := f.events(); !hasEvent(ev, "Normal Forgotten backup old was forgotten") {
		t.Errorf("events %q", ev)
	}
	// Exported to another repository: exported to this one anew.
	if a := f.ann("c2"); a[AnnPhase] != PhaseExported || a[AnnRepository] != repoID || !slices.Equal(f.ceph.exported, []string{"handle-c2"}) {
		t.Errorf("c2: %v, exports %v; want exported anew", a, f.ceph.exported)
	}
}

func TestRetention(t *testing.T) {
	f := newFixture(t, Config{Export: true, Retention: &objectstore.Policy{Last: 1}}, nil,
		content("c1", "apps", nil), content("c2", "apps", nil))
	for _, n := range []string{"c1", "c2"} {
		if err := f.sync(n); err != nil {
			t.Fatal(err)
		}
	}
	f.settle("c1")
	if !slices.Equal(f.repo.forgot, []string{"b1"}) {
		t.Errorf("forgotten %v, want b1 (keep-last 1 keeps b2)", f.repo.forgot)
	}
	if a := f.ann("c1"); a[AnnPhase] != PhaseForgotten {
		t.Errorf("c1: %v, want Forgotten", a)
	}
	if a := f.ann("c2"); a[AnnPhase] != PhaseExported || a[AnnBackupID] != "b2" {
		t.Errorf("c2: %v, want Exported as b2", a)
	}
	if n := testutil.ToFloat64(f.c.Metrics.Retention.WithLabelValues("forgotten")); n != 1 {
		t.Errorf("lifeboat_retention_forgets_total{result=forgotten} = %v, want 1", n)
	}
	// c1 is not exported again.
	if err := f.sync("c1"); err != nil || len(f.ceph.exported) != 2 {
		t.Errorf("c1 after retention: err %v, exports %v", err, f.ceph.exported)
	}
}

func TestNotSelectedUntouched(t *testing.T) {
	other := content("other-driver", "apps", nil)
	other.Spec.Driver = "ebs.csi.aws.com"
	labelled := content("unlabelled", "apps", nil)
	excluded := content("excluded", "kube-system", nil)
	notReady := content("not-ready", "apps", nil)
	notReady.Status.ReadyToUse = new(bool)
	for _, c := range []*snapv1.VolumeSnapshotContent{other, excluded, notReady} {
		c.Labels = map[string]string{"backup": "yes"}
	}
	f := newFixture(t, Config{Export: true, Selector: labels.SelectorFromSet(labels.Set{"backup": "yes"}), ExcludeNamespaces: []string{"kube-system"}},
		nil, other, labelled, excluded, notReady)
	for _, n := range []string{"other-driver", "unlabelled", "excluded", "not-ready"} {
		if err := f.sync(n); err != nil {
			t.Fatal(err)
		}
	}
	if p := f.phases(); len(p) != 0 || len(f.ceph.checked) != 0 || len(f.ceph.exported) != 0 {
		t.Errorf("out of scope yet touched: phases %v, checked %v, exported %v", p, f.ceph.checked, f.ceph.exported)
	}
}

// Velero 1.18 deletes the contents it made as soon as its backup
// completes: one deleted before it was exported is exported all the same,
// once, from what the informer last saw.
func TestDeletedBeforeExportIsExportedOnce(t *testing.T) {
	f := newFixture(t, Config{Export: true}, nil, content("c1", "apps", nil), snapshot("c1", "apps"))
	if err := f.client.SnapshotV1().VolumeSnapshotContents().Delete(f.ctx, "c1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.settle("c1")
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		f.c.mu.Lock()
		n := len(f.c.gone)
		f.c.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the informer's deletion never reached the controller")
		}
	}
	if !f.c.next(f.ctx) {
		t.Fatal("the queue shut down")
	}
	if !slices.Equal(f.ceph.exported, []string{"handle-c1"}) {
		t.Fatalf("exports %v, want handle-c1 once", f.ceph.exported)
	}
	// The tombstone is used once; an unknown tombstone changes nothing.
	f.c.deleted(cache.DeletedFinalStateUnknown{Key: "c1", Obj: content("c1", "apps", map[string]string{AnnPhase: PhaseExported})})
	if err := f.c.reconcile(f.ctx, "c1"); err != nil || len(f.ceph.exported) != 1 {
		t.Errorf("after the export: err %v, exports %v", err, f.ceph.exported)
	}
}

// A second replica (or an earlier run) exported the snapshot: the backup
// in the repository names its handle, so it is marked, not exported again.
func TestExportedByAnotherReplica(t *testing.T) {
	f := newFixture(t, Config{Export: true}, func(f *fixture) {
		f.repo.add(summary("theirs", "handle-c1", "c1", time.Now()))
	}, content("c1", "apps", map[string]string{AnnPhase: PhaseExporting}))
	if err := f.sync("c1"); err != nil {
		t.Fatal(err)
	}
	if a := f.ann("c1"); a[AnnPhase] != PhaseExported || a[AnnBackupID] != "theirs" || a[AnnRepository] != repoID {
		t.Errorf("annotations %v, want Exported as backup theirs", a)
	}
	if len(f.ceph.exported) != 0 || len(f.ceph.checked) != 0 {
		t.Errorf("checked %v, exported %v: want neither", f.ceph.checked, f.ceph.exported)
	}
}

// A snapshot `restore --velero-backup` rehydrated from a backup of this
// repository is that backup: not exported again.
func TestRehydratedNotExported(t *testing.T) {
	f := newFixture(t, Config{Export: true}, func(f *fixture) {
		f.repo.add(summary("origin", "old-handle", "old", time.Now()))
		f.ceph.restored["csi-snap-handle-c1"] = "origin"
	}, content("c1", "apps", nil))
	if err := f.sync("c1"); err != nil {
		t.Fatal(err)
	}
	if a := f.ann("c1"); a[AnnPhase] != PhaseExported || a[AnnBackupID] != "origin" || len(f.ceph.exported) != 0 {
		t.Errorf("annotations %v, exports %v; want Exported as origin, no export", a, f.ceph.exported)
	}
}

// The periodic verification counts only the namespaces the agent watches;
// orphans have no namespace and are all counted.
func TestVerifyAllCountsItsNamespaces(t *testing.T) {
	f := newFixture(t, Config{IncludeNamespaces: []string{"apps"}}, nil)
	f.c.verifyAll(f.ctx)
	m := f.c.Metrics
	if ok, bad := testutil.ToFloat64(m.Snapshots.WithLabelValues("OK")), testutil.ToFloat64(m.Snapshots.WithLabelValues("Problem")); ok != 1 || bad != 0 {
		t.Errorf("lifeboat_snapshots OK %v Problem %v, want 1 and 0", ok, bad)
	}
	if n := testutil.ToFloat64(m.OrphanImages); n != 1 {
		t.Errorf("lifeboat_orphan_images = %v, want 1", n)
	}
}
