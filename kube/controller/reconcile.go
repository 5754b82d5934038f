package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lifeboat-backup/lifeboat/kube"
	"github.com/lifeboat-backup/lifeboat/kube/backup"
	"github.com/lifeboat-backup/lifeboat/kube/bridge"
)

// The phases of a VolumeSnapshotContent in lifeboat's hands:
//
//	""/Failed → Pending (first sight) → Exporting → Exported
//	                     ↘ Failed (verify problem, or export error: retried with backoff)
//	Exported → Forgotten (its backup was forgotten: never exported again)
//
// A snapshot whose backup the repository holds already (exported by
// another replica or an earlier run, or rehydrated from one) is marked
// Exported without a second export.
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
		return c.annotate(ctx, s, phase(PhaseExported, AnnBackupID, id, AnnRepository, c.repoID()))
	}
	if c.forgotten(vsc) {
		if vsc.Annotations[AnnPhase] != PhaseForgotten {
			return c.setForgotten(ctx, s)
		}
		return nil
	}
	if c.cfg.Export && vsc.Annotations[AnnPhase] == "" {
		// First sight: say it is in lifeboat's hands.
		if err := c.annotate(ctx, s, phase(PhasePending)); err != nil {
			return err
		}
	}
	rep, err := c.Checker.Check(ctx, s)
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
		return c.annotate(ctx, s, phase(PhaseFailed, AnnVerified, verified, AnnError, "verify: "+verified))
	}
	if err := c.annotate(ctx, s, phase(PhaseExporting, AnnVerified, verified)); err != nil {
		return err
	}
	return c.export(ctx, s)
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
	ref, err := c.Locator.Locate(ctx, h)
	c.cephUp(ref.ClusterID, err)
	if err != nil {
		return c.fail(ctx, s, err)
	}
	c.event(s, corev1.EventTypeNormal, "Exporting", "exporting %s to the repository", ref.Spec())
	c.mu.Lock()
	c.exporting[s.Content.Name] = s
	c.mu.Unlock()
	defer func() { c.mu.Lock(); delete(c.exporting, s.Content.Name); c.mu.Unlock() }()
	res, err := c.Exporter.Export(ctx, s, ref, backup.Options{Parallel: c.cfg.Parallel})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err() // shutting down: the next leader takes over
		}
		c.Metrics.Exports.WithLabelValues("failure").Inc()
		c.objectstoreUp(err)
		c.cephUp(ref.ClusterID, err)
		return c.fail(ctx, s, err)
	}
	c.cephUp(ref.ClusterID, nil)
	m := res.Manifest
	c.mu.Lock()
	c.exported[h] = m.ID
	c.remember(m.Summary)
	c.mu.Unlock()
	c.objectstoreUp(nil)
	c.Metrics.RecordExport(res, s.PVC())
	c.event(s, corev1.EventTypeNormal, "Exported", "exported as backup %s (%s): %d bytes read, %d new, %d stored in %.1fs",
		m.ID, pathText(res), res.CephBytesRead, m.Stats.BytesNew, m.Stats.BytesStored, res.Seconds)
	now := time.Now().UTC().Format(time.RFC3339)
	if err := c.annotate(ctx, s, phase(PhaseExported, AnnBackupID, m.ID, AnnExportedAt, now, AnnRepository, c.repoID())); err != nil {
		return err
	}
	if c.cfg.Retention != nil {
		c.retire(ctx, backup.Volume(m.Summary))
	}
	return nil
}

// snapshotOf pairs vsc with its VolumeSnapshot, if the cache has it.
func (c *Controller) snapshotOf(vsc *snapv1.VolumeSnapshotContent) kube.Snapshot {
	s := kube.Snapshot{Content: vsc}
	if ref := vsc.Spec.VolumeSnapshotRef; ref.Name != "" {
		s.Snapshot, _ = c.snapshots.VolumeSnapshots(ref.Namespace).Get(ref.Name)
	}
	return s
}

func (c *Controller) repoID() string { return c.Backups.Config().ID }

// fail records an error on the object and returns it for a retry.
func (c *Controller) fail(ctx context.Context, s kube.Snapshot, err error) error {
	c.event(s, corev1.EventTypeWarning, "ExportFailed", "%v", err)
	if aerr := c.annotate(ctx, s, phase(PhaseFailed, AnnError, err.Error())); aerr != nil {
		slog.Warn("recording the failure", "volumeSnapshotContent", s.Content.Name, "err", aerr)
	}
	return err
}

// phase is the annotation patch that moves a content to phase p and sets
// the other annotations given as key, value pairs. AnnError is removed
// unless a pair sets it: a phase that is not a failure clears the last one.
func phase(p string, kv ...string) map[string]*string {
	ann := map[string]*string{AnnPhase: &p, AnnError: nil}
	for i := 0; i+1 < len(kv); i += 2 {
		ann[kv[i]] = &kv[i+1]
	}
	return ann
}

// annotate merge-patches annotations (nil deletes one) when one differs.
// It never updates the whole object, so fields this client does not know
// survive.
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
	_, err := c.Snap.SnapshotV1().VolumeSnapshotContents().Patch(ctx, s.Content.Name, types.MergePatchType, patch, metav1.PatchOptions{})
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
	c.Recorder.Eventf(s.Content, typ, reason, format, args...)
	if s.Snapshot != nil && s.Snapshot.Name != "" { // nameless: rebuilt from Velero's record
		c.Recorder.Eventf(s.Snapshot, typ, reason, format, args...)
	}
}

func pathText(res *backup.Result) string {
	if res.Fallback != "" {
		return res.Path + ", no diff: " + res.Fallback
	}
	return res.Path
}

func verdict(r bridge.SnapshotReport) string {
	if len(r.Problems) == 0 {
		return bridge.StatusOK
	}
	codes := make([]string, 0, len(r.Problems))
	for _, p := range r.Problems {
		codes = append(codes, string(p.Code))
	}
	return strings.Join(codes, ",")
}
