// Package controller is `lifeboat run`: it watches VolumeSnapshotContents
// of ceph-csi's RBD driver, verifies each ready snapshot and exports it to
// the repository, recording the outcome on the object. Only the replica
// holding the leader Lease works.
//
// It is built the way client-go's sample-controller is: New takes the
// informers, the clients and small interfaces for what it asks of Ceph
// and of the repository (Live is the real one), so that the phase state
// machine (reconcile.go) and retention (retention.go) run in unit tests
// against fake clientsets.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	snapscheme "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/scheme"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	snaplisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/lifeboat-backup/lifeboat/kube"
	"github.com/lifeboat-backup/lifeboat/kube/backup"
	"github.com/lifeboat-backup/lifeboat/kube/bridge"
	"github.com/lifeboat-backup/lifeboat/objectstore"
	"github.com/lifeboat-backup/lifeboat/rbd"
)

// Annotations lifeboat writes on VolumeSnapshotContents.
const (
	AnnPhase      = "lifeboat.io/phase"
	AnnBackupID   = "lifeboat.io/backup-id"
	AnnVerified   = "lifeboat.io/verified"
	AnnExportedAt = "lifeboat.io/exported-at"
	AnnError      = "lifeboat.io/error"
	// AnnRepository is the id of the repository the backup went to: a
	// snapshot exported to this repository whose backup is gone was
	// forgotten, while one exported to another is exported anew.
	AnnRepository = "lifeboat.io/repository"

	PhasePending   = "Pending"
	PhaseExporting = "Exporting"
	PhaseExported  = "Exported"
	PhaseFailed    = "Failed"
	// PhaseForgotten: exported, then forgotten (a retention policy, or
	// `backups forget`); never exported again unless the phase annotation
	// is removed.
	PhaseForgotten = "Forgotten"
)

// Config is what the controller does.
type Config struct {
	Workers           int
	Export            bool
	Selector          labels.Selector
	IncludeNamespaces []string
	ExcludeNamespaces []string
	VerifyInterval    time.Duration
	Parallel          int
	DriverSuffix      string
	// Retention, if set, is applied to a volume's backups after each
	// export of it: what it does not keep is forgotten (not pruned).
	Retention *objectstore.Policy
	// VeleroNamespace is where Velero runs: its completed backups of the
	// last VeleroLookback are read every VeleroInterval for snapshots the
	// agent never saw (see catchUp). "" or a zero lookback: never.
	VeleroNamespace string
	VeleroLookback  time.Duration
	VeleroInterval  time.Duration
}

// Checker verifies CSI snapshots' images (a *bridge.Bridge).
type Checker interface {
	Check(ctx context.Context, s kube.Snapshot) (bridge.SnapshotReport, error)
	Verify(ctx context.Context, names []string) (*bridge.Report, error)
}

// Locator finds CSI snapshots' images and watches the connections to
// their Ceph clusters.
type Locator interface {
	// Locate finds the image of a snapshot handle; on error, the ref
	// holds the cluster id when the handle told it.
	Locate(ctx context.Context, handle string) (rbd.Ref, error)
	// RestoredFrom is the backup the image was written from by a restore
	// (rbd.MetaBackupID), "" when none.
	RestoredFrom(ctx context.Context, ref rbd.Ref) (string, error)
	// Forget drops a cluster's connection: the next use reconnects.
	Forget(clusterID string)
	// Waiting tells, by cluster id, whether an operation waits on it.
	Waiting() map[string]bool
}

// Exporter exports a located snapshot to the repository (backup.Export).
type Exporter interface {
	Export(ctx context.Context, s kube.Snapshot, ref rbd.Ref, opts backup.Options) (*backup.Result, error)
}

// Backups are the repository's backups the agent lists, checks and
// forgets (an *objectstore.Repository).
type Backups interface {
	Config() objectstore.Config
	Backups(ctx context.Context, pages bool) (objectstore.Catalog, error)
	HasBackup(ctx context.Context, id string) (bool, error)
	Forget(ctx context.Context, id string, force bool) error
	// Outage is the error S3 answers with since when, nil when it answers.
	Outage() (error, time.Time)
}

// Velero is what the agent reads of Velero (a *kube.Clients): its
// backups and each one's volume list.
type Velero interface {
	VeleroBackups(ctx context.Context, ns string) ([]kube.VeleroBackup, error)
	VeleroVolumes(ctx context.Context, ns, backup string, timeout time.Duration) ([]kube.VeleroVolumeInfo, error)
}

// Deps are what the controller works with: the real ones in `lifeboat
// run`, fakes in unit tests.
type Deps struct {
	Snap      snapclient.Interface // patches VolumeSnapshotContents
	Informers snapinformers.SharedInformerFactory
	Recorder  record.EventRecorder
	Checker   Checker
	Locator   Locator
	Exporter  Exporter
	Backups   Backups
	Velero    Velero // nil: no catch-up from Velero's backups
	Metrics   *Metrics
}

// Controller reconciles VolumeSnapshotContents.
type Controller struct {
	cfg Config
	Deps

	contents  snaplisters.VolumeSnapshotContentLister
	snapshots snaplisters.VolumeSnapshotLister
	synced    []cache.InformerSynced
	queue     workqueue.TypedRateLimitingInterface[string]

	mu       sync.Mutex
	exported map[string]string // snapshot handle → backup id, from the repository
	// volumes holds each volume's backups, for retention (nil without):
	// read from the repository once, then kept up to date, so that an
	// export does not read every manifest again.
	volumes map[string][]objectstore.Summary
	// exporting are the snapshots being exported, by content name: told
	// by an Event when S3 goes away and comes back under them.
	exporting map[string]kube.Snapshot
	// gone are contents deleted while ready and in scope but not backed up
	// yet, by name. Velero 1.18 deletes the contents it made as soon as its
	// backup completes (a Retain class keeps the RBD snapshot): what the
	// informer saw is exported all the same, from the handle it holds.
	gone map[string]kube.Snapshot
	// caughtUp are the Velero backups whose snapshots were all found
	// exported or queued for export (see catchUp).
	caughtUp map[string]bool
}

// New builds a controller on d's informers; Run starts them and it.
func New(cfg Config, d Deps) *Controller {
	if cfg.Workers < 1 {
		cfg.Workers = 1
	}
	c := &Controller{cfg: cfg, Deps: d, exported: map[string]string{},
		exporting: map[string]kube.Snapshot{}, gone: map[string]kube.Snapshot{}, caughtUp: map[string]bool{}}
	if cfg.Retention != nil {
		c.volumes = map[string][]objectstore.Summary{}
	}
	vsc := d.Informers.Snapshot().V1().VolumeSnapshotContents()
	vs := d.Informers.Snapshot().V1().VolumeSnapshots()
	c.contents, c.snapshots = vsc.Lister(), vs.Lister()
	c.synced = []cache.InformerSynced{vsc.Informer().HasSynced, vs.Informer().HasSynced}
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](5*time.Second, 10*time.Minute),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "volumesnapshotcontents"})
	_, _ = vsc.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, o any) { c.enqueue(o) },
		DeleteFunc: c.deleted,
	})
	return c
}

// NewDeps wires the real dependencies: the informers of k, Events through
// the API server, Ceph through b and the repository repo.
func NewDeps(k *kube.Clients, b *bridge.Bridge, repo *objectstore.Repository, m *Metrics) Deps {
	live := Live{Bridge: b, Repo: repo}
	return Deps{Snap: k.Snap, Informers: snapinformers.NewSharedInformerFactory(k.Snap, 10*time.Minute),
		Recorder: NewRecorder(k.Kube), Checker: b, Locator: live, Exporter: live, Backups: repo, Velero: k, Metrics: m}
}

// NewRecorder records Events through the API server as "lifeboat".
func NewRecorder(k kubernetes.Interface) record.EventRecorder {
	s := runtime.NewScheme()
	_ = scheme.AddToScheme(s)
	_ = snapscheme.AddToScheme(s)
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: k.CoreV1().Events("")})
	return b.NewRecorder(s, corev1.EventSource{Component: "lifeboat"})
}

func (c *Controller) enqueue(obj any) {
	if vsc, ok := obj.(*snapv1.VolumeSnapshotContent); ok {
		c.queue.Add(vsc.Name)
	}
}

// deleted keeps a content deleted before it was backed up, so that its
// snapshot is still exported (see Controller.gone).
func (c *Controller) deleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	vsc, ok := obj.(*snapv1.VolumeSnapshotContent)
	if !ok || !c.cfg.Export || !c.wanted(vsc) || !c.snapshotOf(vsc).Ready() {
		return
	}
	if p := vsc.Annotations[AnnPhase]; p == PhaseExported || p == PhaseForgotten {
		return
	}
	c.queueGone(c.snapshotOf(vsc))
}

// queueGone queues the export of a snapshot whose content is gone. The
// queue, keyed by the content's name, keeps two workers off one snapshot.
func (c *Controller) queueGone(s kube.Snapshot) {
	c.mu.Lock()
	c.gone[s.Content.Name] = s
	c.mu.Unlock()
	c.queue.Add(s.Content.Name)
}

// Run works until ctx ends: it must be called only while leading. An
// export in flight when ctx ends is abandoned without a manifest.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	c.Informers.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return fmt.Errorf("waiting for the VolumeSnapshot informers to sync: %w", ctx.Err())
	}
	if err := c.loadExported(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for i := 0; i < c.cfg.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.next(ctx) {
			}
		}()
	}
	wg.Add(1)
	go func() { defer wg.Done(); c.verifyLoop(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); c.watchOutages(ctx, 2*time.Second) }()
	wg.Add(1)
	go func() { defer wg.Done(); c.catchUpLoop(ctx) }()
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	return nil
}

// loadExported learns from the repository which snapshots are backed up
// already, so neither a restart nor a new leader exports one twice.
func (c *Controller) loadExported(ctx context.Context) error {
	cat, err := c.Backups.Backups(ctx, true)
	c.objectstoreUp(err)
	if err != nil {
		return fmt.Errorf("listing the repository's backups: %w", err)
	}
	// A damaged backup is skipped: it counts neither as a snapshot's
	// export nor as a backup the retention policy keeps.
	c.Metrics.Damaged.Set(float64(len(cat.Damaged)))
	for _, d := range cat.Damaged {
		slog.Warn("skipping a damaged backup", "backup", d.ID, "object", d.Object, "reason", d.Reason)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range cat.Backups {
		if h := s.Source[backup.KeyHandle]; h != "" {
			c.exported[h] = s.ID
		}
		c.remember(s)
	}
	slog.Info("repository loaded", "backups", len(cat.Backups), "exportedSnapshots", len(c.exported))
	return nil
}

func (c *Controller) next(ctx context.Context) bool {
	name, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(name)
	if err := c.reconcile(ctx, name); err != nil {
		if ctx.Err() != nil {
			return false
		}
		slog.Warn("reconcile failed, retrying with backoff", "volumeSnapshotContent", name, "err", err)
		c.queue.AddRateLimited(name)
		return true
	}
	c.queue.Forget(name)
	return true
}

func (c *Controller) exportedID(h string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.exported[h]
}

func (c *Controller) cephUp(cluster string, err error) {
	if cluster == "" {
		return
	}
	if errors.Is(err, rbd.ErrUnreachable) {
		c.Metrics.CephUp.WithLabelValues(cluster).Set(0)
		c.Locator.Forget(cluster) // reconnect on the next attempt
		return
	}
	if err == nil {
		c.Metrics.CephUp.WithLabelValues(cluster).Set(1)
	}
}

// watchOutages reports S3 and Ceph outages while they last: exports wait
// through one (the repository and the Ceph reads retry), so their result
// tells of it only at the end. It sets lifeboat_objectstore_up and
// lifeboat_ceph_up (a successful operation sets the latter back to 1) and
// records an Event on each snapshot being exported when S3 goes and
// comes back.
func (c *Controller) watchOutages(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	down := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for id, waiting := range c.Locator.Waiting() {
			if waiting {
				c.Metrics.CephUp.WithLabelValues(id).Set(0)
			}
		}
		err, since := c.Backups.Outage()
		switch {
		case err != nil && !down:
			down = true
			c.Metrics.ObjectstoreUp.Set(0)
			c.eventExporting(corev1.EventTypeWarning, "ObjectStoreUnavailable",
				"the S3 repository is unavailable since %s; the export waits and retries: %v", since.UTC().Format(time.RFC3339), err)
		case err == nil && down:
			down = false
			c.Metrics.ObjectstoreUp.Set(1)
			c.eventExporting(corev1.EventTypeNormal, "ObjectStoreAvailable", "the S3 repository answers again; the export goes on")
		}
	}
}

func (c *Controller) eventExporting(typ, reason, format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.exporting {
		c.event(s, typ, reason, format, args...)
	}
}

func (c *Controller) objectstoreUp(err error) {
	switch {
	case err == nil:
		c.Metrics.ObjectstoreUp.Set(1)
	case errors.Is(err, objectstore.ErrUnreachable), errors.Is(err, objectstore.ErrUnavailable),
		errors.Is(err, objectstore.ErrCredentials), errors.Is(err, objectstore.ErrNoBucket):
		c.Metrics.ObjectstoreUp.Set(0)
	}
}
