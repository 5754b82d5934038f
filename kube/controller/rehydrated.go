package controller

import (
	"context"
	"log/slog"

	"github.com/lifeboat-backup/lifeboat/kube"
)

// backedUp returns the backup that holds s: the one exported from it, or,
// for a snapshot `restore --velero-backup` rehydrated in a new cluster
// (its handle may be new, the data is the backup's), the backup the image
// was written from, when it is in this repository. "" when none.
func (c *Controller) backedUp(ctx context.Context, s kube.Snapshot) string {
	h := s.Handle()
	if id := c.exportedID(h); id != "" {
		return id
	}
	ref, err := c.Locator.Locate(ctx, h)
	if err != nil {
		return ""
	}
	id, err := c.Locator.RestoredFrom(ctx, ref)
	if err != nil || id == "" {
		return ""
	}
	if ok, err := c.Backups.HasBackup(ctx, id); err != nil || !ok {
		return ""
	}
	slog.Info("snapshot was rehydrated from a backup of this repository: not exporting it again",
		"volumeSnapshotContent", s.Content.Name, "backup", id)
	c.mu.Lock()
	c.exported[h] = id
	c.mu.Unlock()
	return id
}
