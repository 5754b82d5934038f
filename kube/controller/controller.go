// Package controller is `lifeboat run`: it watches VolumeSnapshotContents
// of ceph-csi's RBD driver, verifies each ready snapshot and exports it to
// the repository, recording the outcome on the object. Only the replica
// holding the leader Lease works.
package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapscheme "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/scheme"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	snaplisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
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

// Controller reconciles VolumeSnapshotContents.
type Controller struct {
	cfg      Config
	kube     *kube.Clients
	bridge   *bridge.Bridge
	repo     *objectstore.Repository
	metrics  *Metrics
	recorder record.EventRecorder

	contents  snaplisters.VolumeSnapshotContentLister
	snapshots snaplisters.VolumeSnapshotLister
	synced    []cache.InformerSynced
	factory   snapinformers.SharedInformerFactory
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

// New builds a controller; Run starts it.
func New(cfg Config, k *kube.Clients, b *bridge.Bridge, repo *objectstore.Repository, m *Metrics) *Controller {
	if cfg.Workers < 1 {
		cfg.Workers = 1
	}
	c := &Controller{cfg: cfg, kube: k, bridge: b, repo: repo, metrics: m, exported: map[string]string{},
		exporting: map[string]kube.Snapshot{}, gone: map[string]kube.Snapshot{}, caughtUp: map[string]bool{}}
	if cfg.Retention != nil {
		c.volumes = map[string][]objectstore.Summary{}
	}
	c.factory = snapinformers.NewSharedInformerFactory(k.Snap, 10*time.Minute)
	vsc := c.factory.Snapshot().V1().VolumeSnapshotContents()
	vs := c.factory.Snapshot().V1().VolumeSnapshots()
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
	c.recorder = newRecorder(k)
	return c
}

func newRecorder(k *kube.Clients) record.EventRecorder {
	s := runtime.NewScheme()
	_ = scheme.AddToScheme(s)
	_ = snapscheme.AddToScheme(s)
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: k.Kube.CoreV1().Events("")})
	return b.NewRecorder(s, corev1.EventSource{Component: "lifeboat"})
}

func (c *Controller) enqueue(obj any) {
	if vsc, ok := obj.(*snapv1.VolumeSnapshotContent); ok {
		c.queue.Add(vsc.Name)
	}
}

// Run works until ctx ends: it must be called only while leading. An
// export in flight when ctx ends is abandoned without a manifest.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	c.factory.Start(ctx.Done())
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
	cat, err := c.repo.Backups(ctx, true)
	c.objectstoreUp(err)
	if err != nil {
		return fmt.Errorf("listing the repository's backups: %w", err)
	}
	// A damaged backup is skipped: it counts neither as a snapshot's
	// export nor as a backup the retention policy keeps.
	c.metrics.Damaged.Set(float64(len(cat.Damaged)))
	for _, d := range cat.Damaged {
		slog.Warn("skipping a damaged backup", "backup", d.ID, "object", d.Object, "reason", d.Reason)
	}
	all := cat.Backups
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range all {
		if h := s.Source[backup.KeyHandle]; h != "" {
			c.exported[h] = s.ID
		}
		if c.volumes != nil {
			v := backup.Volume(s)
			c.volumes[v] = append(c.volumes[v], s)
		}
	}
	slog.Info("repository loaded", "backups", len(all), "exportedSnapshots", len(c.exported))
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

// wanted tells whether a content is in scope: an RBD driver, matching the
// label selector and the namespace lists.
func (c *Controller) wanted(vsc *snapv1.VolumeSnapshotContent) bool {
	if !kube.IsRBDDriver(vsc.Spec.Driver, c.cfg.DriverSuffix) || !c.cfg.Selector.Matches(labels.Set(vsc.Labels)) {
		return false
	}
	return c.inNamespaces(vsc.Spec.VolumeSnapshotRef.Namespace)
}

// inNamespaces tells whether namespace ns is in the configured scope.
func (c *Controller) inNamespaces(ns string) bool {
	if len(c.cfg.IncludeNamespaces) > 0 && !slices.Contains(c.cfg.IncludeNamespaces, ns) {
		return false
	}
	return !slices.Contains(c.cfg.ExcludeNamespaces, ns)
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

func (c *Controller) reconcile(ctx context.Context, name string) error {
	vsc, err := c.contents.Get(name)
	if apierrors.IsNotFound(err) {
		return c.reconcileGone(ctx, name)
	}
	if err != nil {
		return err
	}
	if !c.wanted(vsc) {
		return nil
	}
	s := c.snapshotOf(vsc)
	if !s.Ready() {
		// Not ours to touch yet: csi-snapshotter is still writing it. Its
		// status update brings it back here.
		return nil
	}
	if id := c.backedUp(ctx, s); id != "" {
		repoID := c.repo.Config().ID
		if vsc.Annotations[AnnPhase] != PhaseExported || vsc.Annotations[AnnBackupID] != id || vsc.Annotations[AnnRepository] != repoID {
			return c.annotate(ctx, s, map[string]*string{AnnPhase: ptr(PhaseExported), AnnBackupID: &id, AnnRepository: &repoID, AnnError: nil})
		}
		return nil
	}
	if c.forgotten(vsc) {
		if vsc.Annotations[AnnPhase] != PhaseForgotten {
			return c.setForgotten(ctx, s)
		}
		return nil
	}
	if c.cfg.Export && vsc.Annotations[AnnPhase] == "" {
		// First sight: say it is in lifeboat's hands.
		if err := c.annotate(ctx, s, map[string]*string{AnnPhase: ptr(PhasePending)}); err != nil {
			return err
		}
	}
	rep, err := c.bridge.Check(ctx, s)
	if err != nil {
		return c.fail(ctx, s, fmt.Errorf("verifying: %w", err))
	}
	verified := verdict(rep)
	if !c.cfg.Export {
		return c.annotate(ctx, s, map[string]*string{AnnVerified: &verified})
	}
	if rep.Status != bridge.StatusOK {
		// A broken snapshot cannot be exported; the periodic resync retries.
		c.event(s, corev1.EventTypeWarning, "VerifyFailed", "snapshot image has problems: %s", verified)
		return c.annotate(ctx, s, map[string]*string{AnnPhase: ptr(PhaseFailed), AnnVerified: &verified,
			AnnError: ptr("verify: " + verified)})
	}
	if err := c.annotate(ctx, s, map[string]*string{AnnPhase: ptr(PhaseExporting), AnnVerified: &verified, AnnError: nil}); err != nil {
		return err
	}
	return c.export(ctx, s)
}

// reconcileGone exports a content deleted before it was backed up, once:
// its snapshot may be gone from Ceph too (a Delete policy), so a failure is
// reported, not retried.
func (c *Controller) reconcileGone(ctx context.Context, name string) error {
	c.mu.Lock()
	s, ok := c.gone[name]
	delete(c.gone, name)
	c.mu.Unlock()
	if !ok {
		return nil
	}
	if c.backedUp(ctx, s) != "" {
		return nil
	}
	slog.Info("exporting the snapshot of a deleted VolumeSnapshotContent", "volumeSnapshotContent", name, "handle", s.Handle())
	if err := c.export(ctx, s); err != nil && ctx.Err() == nil {
		slog.Warn("export of a deleted VolumeSnapshotContent failed; not retried", "volumeSnapshotContent", name, "err", err)
	}
	return nil
}

func (c *Controller) export(ctx context.Context, s kube.Snapshot) error {
	h := s.Handle()
	ref, cl, err := c.bridge.Locate(ctx, h)
	c.cephUp(ref.ClusterID, err)
	if err != nil {
		return c.fail(ctx, s, err)
	}
	c.event(s, corev1.EventTypeNormal, "Exporting", "exporting %s to the repository", ref.Spec())
	c.mu.Lock()
	c.exporting[s.Content.Name] = s
	c.mu.Unlock()
	defer func() { c.mu.Lock(); delete(c.exporting, s.Content.Name); c.mu.Unlock() }()
	res, err := backup.Export(ctx, c.repo, backup.CSISource(s, h, ref, cl), backup.Options{Parallel: c.cfg.Parallel})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err() // shutting down: the next leader takes over
		}
		c.metrics.Exports.WithLabelValues("failure").Inc()
		c.objectstoreUp(err)
		c.cephUp(ref.ClusterID, err)
		return c.fail(ctx, s, err)
	}
	c.cephUp(ref.ClusterID, nil)
	m := res.Manifest
	c.mu.Lock()
	c.exported[h] = m.ID
	if c.volumes != nil {
		v := backup.Volume(m.Summary)
		c.volumes[v] = append(c.volumes[v], m.Summary)
	}
	c.mu.Unlock()
	c.objectstoreUp(nil)
	c.metrics.Exports.WithLabelValues("success").Inc()
	c.metrics.ExportDuration.Observe(res.Seconds)
	c.metrics.ExportPaths.WithLabelValues(res.Path).Inc()
	if res.Fallback != "" {
		c.metrics.Fallbacks.WithLabelValues(res.Fallback).Inc()
	}
	c.metrics.ExportBytes.WithLabelValues("read").Add(float64(res.CephBytesRead))
	c.metrics.ExportBytes.WithLabelValues("new").Add(float64(m.Stats.BytesNew))
	c.metrics.ExportBytes.WithLabelValues("stored").Add(float64(m.Stats.BytesStored))
	if pvc := s.PVC(); pvc != "" {
		ns, name, _ := cutSlash(pvc)
		c.metrics.LastExport.WithLabelValues(ns, name).Set(float64(time.Now().Unix()))
	}
	c.event(s, corev1.EventTypeNormal, "Exported", "exported as backup %s (%s): %d bytes read, %d new, %d stored in %.1fs",
		m.ID, pathText(res), res.CephBytesRead, m.Stats.BytesNew, m.Stats.BytesStored, res.Seconds)
	now := time.Now().UTC().Format(time.RFC3339)
	repoID := c.repo.Config().ID
	if err := c.annotate(ctx, s, map[string]*string{AnnPhase: ptr(PhaseExported), AnnBackupID: &m.ID, AnnExportedAt: &now,
		AnnRepository: &repoID, AnnError: nil}); err != nil {
		return err
	}
	if c.cfg.Retention != nil {
		c.retire(ctx, backup.Volume(m.Summary))
	}
	return nil
}

// forgotten reports whether vsc was exported to this repository and its
// backup is no longer there.
func (c *Controller) forgotten(vsc *snapv1.VolumeSnapshotContent) bool {
	a := vsc.Annotations
	return (a[AnnPhase] == PhaseExported || a[AnnPhase] == PhaseForgotten) &&
		a[AnnBackupID] != "" && a[AnnRepository] == c.repo.Config().ID
}

// retire applies the retention policy to volume vol's backups. A failure
// is logged and counted, never fatal: the next export tries again.
func (c *Controller) retire(ctx context.Context, vol string) {
	mine, err := c.backupsOf(ctx, vol)
	if err != nil {
		c.metrics.Retention.WithLabelValues("failure").Inc()
		slog.Error("retention: checking the volume's backups", "volume", vol, "err", err)
		return
	}
	for _, d := range c.cfg.Retention.Apply(mine, backup.Volume, backup.Taken) {
		if d.Keep {
			continue
		}
		err := c.repo.Forget(ctx, d.ID, false)
		if err != nil && !errors.Is(err, objectstore.ErrBackupNotFound) {
			c.metrics.Retention.WithLabelValues("failure").Inc()
			slog.Error("retention: forgetting a backup", "backup", d.ID, "volume", vol, "err", err)
			continue
		}
		c.mu.Lock()
		if h := d.Source[backup.KeyHandle]; c.exported[h] == d.ID { // another backup of it may remain
			delete(c.exported, h)
		}
		c.volumes[vol] = slices.DeleteFunc(c.volumes[vol], func(s objectstore.Summary) bool { return s.ID == d.ID })
		c.mu.Unlock()
		if err == nil {
			c.metrics.Retention.WithLabelValues("forgotten").Inc()
			slog.Info("retention: forgot backup", "backup", d.ID, "volume", vol, "taken", d.Taken)
		}
		c.markForgotten(ctx, d.Summary)
	}
}

// markForgotten sets phase Forgotten on the snapshot of a backup that was
// forgotten, if it still exists and names that backup, and its snapshot
// has no other backup: it must not be exported again.
func (c *Controller) markForgotten(ctx context.Context, b objectstore.Summary) {
	name := b.Source[backup.KeyContent]
	if name == "" || c.exportedID(b.Source[backup.KeyHandle]) != "" {
		return
	}
	vsc, err := c.contents.Get(name)
	if err != nil || vsc.Annotations[AnnBackupID] != b.ID || vsc.Annotations[AnnPhase] == PhaseForgotten {
		return
	}
	s := c.snapshotOf(vsc)
	if err := c.setForgotten(ctx, s); err != nil {
		slog.Error("retention: marking the snapshot Forgotten", "volumeSnapshotContent", name, "err", err)
	}
}

// snapshotOf pairs vsc with its VolumeSnapshot, if the cache has it.
func (c *Controller) snapshotOf(vsc *snapv1.VolumeSnapshotContent) kube.Snapshot {
	s := kube.Snapshot{Content: vsc}
	if ref := vsc.Spec.VolumeSnapshotRef; ref.Name != "" {
		s.Snapshot, _ = c.snapshots.VolumeSnapshots(ref.Namespace).Get(ref.Name)
	}
	return s
}

// setForgotten records on s that its backup was forgotten, and in which
// repository, so that it is not exported again.
func (c *Controller) setForgotten(ctx context.Context, s kube.Snapshot) error {
	c.event(s, corev1.EventTypeNormal, "Forgotten", "backup %s was forgotten (retention or backups forget); not exporting it again (removing the %s annotation would)",
		s.Content.Annotations[AnnBackupID], AnnPhase)
	repoID := c.repo.Config().ID
	return c.annotate(ctx, s, map[string]*string{AnnPhase: ptr(PhaseForgotten), AnnRepository: &repoID, AnnError: nil})
}

// backupsOf returns the volume's known backups that are still in the
// repository. One forgotten meanwhile by someone else must not count: the
// policy could keep it instead of one it then forgets. A backup made
// meanwhile by someone else is not known until the agent restarts, which
// errs the safe way: it keeps more.
func (c *Controller) backupsOf(ctx context.Context, vol string) ([]objectstore.Summary, error) {
	c.mu.Lock()
	known := slices.Clone(c.volumes[vol])
	c.mu.Unlock()
	var live []objectstore.Summary
	gone := map[string]bool{}
	for _, s := range known {
		ok, err := c.repo.HasBackup(ctx, s.ID)
		if err != nil {
			return nil, err
		}
		if ok {
			live = append(live, s)
		} else {
			gone[s.ID] = true
		}
	}
	c.mu.Lock()
	c.volumes[vol] = slices.DeleteFunc(c.volumes[vol], func(s objectstore.Summary) bool { return gone[s.ID] })
	c.mu.Unlock()
	return live, nil
}

func pathText(res *backup.Result) string {
	if res.Fallback != "" {
		return res.Path + ", no diff: " + res.Fallback
	}
	return res.Path
}

// fail records an error on the object and returns it for a retry.
func (c *Controller) fail(ctx context.Context, s kube.Snapshot, err error) error {
	c.event(s, corev1.EventTypeWarning, "ExportFailed", "%v", err)
	msg := err.Error()
	if aerr := c.annotate(ctx, s, map[string]*string{AnnPhase: ptr(PhaseFailed), AnnError: &msg}); aerr != nil {
		slog.Warn("recording the failure", "volumeSnapshotContent", s.Content.Name, "err", aerr)
	}
	return err
}

// annotate merge-patches annotations (nil deletes one). It never updates
// the whole object, so fields this client does not know survive.
func (c *Controller) annotate(ctx context.Context, s kube.Snapshot, ann map[string]*string) error {
	changed := false
	for k, v := range ann {
		cur, ok := s.Content.Annotations[k]
		if (v == nil && ok) || (v != nil && (!ok || cur != *v)) {
			changed = true
		}
	}
	if !changed {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	_, err := c.kube.Snap.SnapshotV1().VolumeSnapshotContents().Patch(ctx, s.Content.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		// Deleted under us (Velero deletes its contents when its backup
		// completes): the export goes on from the handle; nothing to mark.
		return nil
	}
	if err != nil {
		return fmt.Errorf("annotating VolumeSnapshotContent %s: %w", s.Content.Name, err)
	}
	return nil
}

// event records on the VolumeSnapshotContent and its VolumeSnapshot.
func (c *Controller) event(s kube.Snapshot, typ, reason, format string, args ...any) {
	c.recorder.Eventf(s.Content, typ, reason, format, args...)
	if s.Snapshot != nil && s.Snapshot.Name != "" { // nameless: rebuilt from Velero's record
		c.recorder.Eventf(s.Snapshot, typ, reason, format, args...)
	}
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
		c.metrics.CephUp.WithLabelValues(cluster).Set(0)
		c.bridge.Ceph.Forget(cluster) // reconnect on the next attempt
		return
	}
	if err == nil {
		c.metrics.CephUp.WithLabelValues(cluster).Set(1)
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
		for id, waiting := range c.bridge.Ceph.Waiting() {
			if waiting {
				c.metrics.CephUp.WithLabelValues(id).Set(0)
			}
		}
		err, since := c.repo.Outage()
		switch {
		case err != nil && !down:
			down = true
			c.metrics.ObjectstoreUp.Set(0)
			c.eventExporting(corev1.EventTypeWarning, "ObjectStoreUnavailable",
				"the S3 repository is unavailable since %s; the export waits and retries: %v", since.UTC().Format(time.RFC3339), err)
		case err == nil && down:
			down = false
			c.metrics.ObjectstoreUp.Set(1)
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
		c.metrics.ObjectstoreUp.Set(1)
	case errors.Is(err, objectstore.ErrUnreachable), errors.Is(err, objectstore.ErrUnavailable),
		errors.Is(err, objectstore.ErrCredentials), errors.Is(err, objectstore.ErrNoBucket):
		c.metrics.ObjectstoreUp.Set(0)
	}
}

func verdict(r bridge.SnapshotReport) string {
	if len(r.Problems) == 0 {
		return bridge.StatusOK
	}
	codes := make([]string, 0, len(r.Problems))
	for _, p := range r.Problems {
		codes = append(codes, string(p.Code))
	}
	return joinComma(codes)
}

func ptr(s string) *string { return &s }
