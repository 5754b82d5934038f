package controller

import (
	"context"
	"errors"
	"log/slog"
	"slices"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/lifeboat-backup/lifeboat/kube"
	"github.com/lifeboat-backup/lifeboat/kube/backup"
	"github.com/lifeboat-backup/lifeboat/objectstore"
)

// remember adds a backup to its volume's, for retention (c.mu held).
func (c *Controller) remember(s objectstore.Summary) {
	if c.volumes != nil {
		v := backup.Volume(s)
		c.volumes[v] = append(c.volumes[v], s)
	}
}

// forgotten reports whether vsc was exported to this repository and its
// backup is no longer there.
func (c *Controller) forgotten(vsc *snapv1.VolumeSnapshotContent) bool {
	a := vsc.Annotations
	return (a[AnnPhase] == PhaseExported || a[AnnPhase] == PhaseForgotten) &&
		a[AnnBackupID] != "" && a[AnnRepository] == c.repoID()
}

// retire applies the retention policy to volume vol's backups. A failure
// is logged and counted, never fatal: the next export tries again.
func (c *Controller) retire(ctx context.Context, vol string) {
	mine, err := c.backupsOf(ctx, vol)
	if err != nil {
		c.Metrics.Retention.WithLabelValues("failure").Inc()
		slog.Error("retention: checking the volume's backups", "volume", vol, "err", err)
		return
	}
	for _, d := range c.cfg.Retention.Apply(mine, backup.Volume, backup.Taken) {
		if d.Keep {
			continue
		}
		err := c.Backups.Forget(ctx, d.ID, false)
		if err != nil && !errors.Is(err, objectstore.ErrBackupNotFound) {
			c.Metrics.Retention.WithLabelValues("failure").Inc()
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
			c.Metrics.Retention.WithLabelValues("forgotten").Inc()
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

// setForgotten records on s that its backup was forgotten, and in which
// repository, so that it is not exported again.
func (c *Controller) setForgotten(ctx context.Context, s kube.Snapshot) error {
	c.event(s, corev1.EventTypeNormal, "Forgotten", "backup %s was forgotten (retention or backups forget); not exporting it again (removing the %s annotation would)",
		s.Content.Annotations[AnnBackupID], AnnPhase)
	return c.annotate(ctx, s, phase(PhaseForgotten, AnnRepository, c.repoID()))
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
		ok, err := c.Backups.HasBackup(ctx, s.ID)
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
