package controller

import (
	"context"

	"github.com/lifeboat-backup/lifeboat/kube"
	"github.com/lifeboat-backup/lifeboat/kube/backup"
	"github.com/lifeboat-backup/lifeboat/kube/bridge"
	"github.com/lifeboat-backup/lifeboat/objectstore"
	"github.com/lifeboat-backup/lifeboat/rbd"
)

// Live is the agent's real Locator and Exporter: Ceph through a bridge
// (one connection per cluster), the repository.
type Live struct {
	Bridge *bridge.Bridge
	Repo   *objectstore.Repository
}

// Locate implements Locator.
func (l Live) Locate(ctx context.Context, h string) (rbd.Ref, error) {
	ref, _, err := l.Bridge.Locate(ctx, h)
	return ref, err
}

// RestoredFrom implements Locator.
func (l Live) RestoredFrom(ctx context.Context, ref rbd.Ref) (string, error) {
	cl, err := l.Bridge.Ceph.Get(ctx, ref.ClusterID)
	if err != nil {
		return "", err
	}
	return cl.ImageMeta(ref.Pool, ref.Namespace, ref.Image, rbd.MetaBackupID)
}

// Forget implements Locator.
func (l Live) Forget(clusterID string) { l.Bridge.Ceph.Forget(clusterID) }

// Waiting implements Locator.
func (l Live) Waiting() map[string]bool { return l.Bridge.Ceph.Waiting() }

// Export implements Exporter, on the cluster connection Locate used.
func (l Live) Export(ctx context.Context, s kube.Snapshot, ref rbd.Ref, opts backup.Options) (*backup.Result, error) {
	cl, err := l.Bridge.Ceph.Get(ctx, ref.ClusterID)
	if err != nil {
		return nil, err
	}
	return backup.Export(ctx, l.Repo, backup.CSISource(s, s.Handle(), ref, cl), opts)
}
