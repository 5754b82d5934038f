package controller

import (
	"context"
	"errors"
	"log/slog"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lifeboat-backup/lifeboat/kube"
)

// veleroAnswer bounds the wait for Velero to answer a DownloadRequest.
const veleroAnswer = time.Minute

// catchUpLoop runs catchUp when the agent starts leading and then every
// VeleroInterval.
func (c *Controller) catchUpLoop(ctx context.Context) {
	if c.Velero == nil || c.cfg.VeleroNamespace == "" || c.cfg.VeleroLookback <= 0 || !c.cfg.Export {
		return
	}
	interval := c.cfg.VeleroInterval
	if interval <= 0 {
		interval = 10 * time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := c.catchUp(ctx); err != nil && ctx.Err() == nil {
			slog.Warn("reading Velero's backups for snapshots not exported yet", "veleroNamespace", c.cfg.VeleroNamespace, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// catchUp exports the CSI snapshots of Velero's recent backups that the
// agent never saw. Velero deletes the VolumeSnapshotContents it made as
// soon as a backup completes (a Retain class keeps the RBD snapshot): a
// backup taken while no agent led (a restart, an upgrade, an outage) left
// nothing to watch. Velero's volume list of each completed backup names
// every snapshot handle; one with no backup in the repository and no
// content left is exported like a content deleted before its export.
func (c *Controller) catchUp(ctx context.Context) error {
	all, err := c.Velero.VeleroBackups(ctx, c.cfg.VeleroNamespace)
	if errors.Is(err, kube.ErrNoVelero) {
		slog.Debug("no Velero: nothing to catch up", "veleroNamespace", c.cfg.VeleroNamespace)
		return nil
	}
	if err != nil {
		return err
	}
	since := time.Now().Add(-c.cfg.VeleroLookback)
	var errs []error
	read := 0
	for _, b := range all {
		if !b.Done() || b.Completed.Before(since) || c.isCaughtUp(b.Name) {
			continue
		}
		read++
		if err := c.catchUpBackup(ctx, b.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		c.mu.Lock()
		c.caughtUp[b.Name] = true
		c.mu.Unlock()
	}
	slog.Debug("read Velero's backups for snapshots never exported", "veleroNamespace", c.cfg.VeleroNamespace,
		"backups", len(all), "volumeListsRead", read, "failed", len(errs))
	return errors.Join(errs...)
}

func (c *Controller) isCaughtUp(backup string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.caughtUp[backup]
}

// catchUpBackup queues the export of each snapshot of Velero backup
// `backup` that is in scope, not exported and not known as a content.
func (c *Controller) catchUpBackup(ctx context.Context, backup string) error {
	vols, err := c.Velero.VeleroVolumes(ctx, c.cfg.VeleroNamespace, backup, veleroAnswer)
	if err != nil {
		return err
	}
	queued := 0
	for _, v := range vols {
		s, ok := veleroSnapshot(backup, v)
		if !ok || !c.wanted(s.Content) || c.exportedID(s.Handle()) != "" {
			continue
		}
		if _, err := c.contents.Get(s.Content.Name); !apierrors.IsNotFound(err) {
			continue // still there (or unreadable): reconcile has it
		}
		slog.Info("found a snapshot of a Velero backup that was never exported", "veleroBackup", backup,
			"pvc", s.PVC(), "volumeSnapshotContent", s.Content.Name, "handle", s.Handle())
		c.queueGone(s)
		queued++
	}
	if queued > 0 {
		c.Metrics.CaughtUp.Add(float64(queued))
	}
	return nil
}

// veleroSnapshot rebuilds, from Velero's record of a volume, the
// VolumeSnapshotContent and VolumeSnapshot Velero made and deleted: what
// the export records (handle, PVC, Velero backup) and the scope checks
// read. ok is false for a volume without a CSI snapshot.
func veleroSnapshot(backup string, v kube.VeleroVolumeInfo) (kube.Snapshot, bool) {
	info := v.CSISnapshotInfo
	if v.Skipped || info == nil || info.SnapshotHandle == "" || info.VSCName == "" {
		return kube.Snapshot{}, false
	}
	labels := map[string]string{kube.VeleroBackupLabel: backup}
	ready, size := true, info.Size
	vsc := &snapv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: info.VSCName, Labels: labels},
		Spec: snapv1.VolumeSnapshotContentSpec{Driver: info.Driver,
			VolumeSnapshotRef: corev1.ObjectReference{Namespace: v.PVCNamespace}},
		Status: &snapv1.VolumeSnapshotContentStatus{SnapshotHandle: &info.SnapshotHandle, ReadyToUse: &ready, RestoreSize: &size},
	}
	pvc := v.PVCName
	vs := &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Namespace: v.PVCNamespace, Labels: labels},
		Spec:       snapv1.VolumeSnapshotSpec{Source: snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: &pvc}},
	}
	return kube.Snapshot{Content: vsc, Snapshot: vs}, true
}
