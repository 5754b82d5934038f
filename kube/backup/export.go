// Package backup moves a snapshot's data between Ceph (rbd) and the backup
// repository (objectstore): export, restore and cat. It is the wiring the
// CLI and the controller share; neither side knows of the other.
package backup

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/lifeboat-backup/lifeboat/kube"
	"github.com/lifeboat-backup/lifeboat/objectstore"
	"github.com/lifeboat-backup/lifeboat/rbd"
)

// Manifest source keys. Lineage identifies the volume whose successive
// snapshots form an incremental chain.
const (
	KeyFSID           = "fsid"
	KeyClusterID      = "clusterID"
	KeyPool           = "pool"
	KeyNamespace      = "namespace"
	KeyImage          = "image"
	KeySnapshot       = "snapshot"
	KeyImageID        = "imageID"
	KeyParent         = "parent"
	KeyLineage        = "lineage"
	KeyContent        = "volumeSnapshotContent"
	KeyVolumeSnapshot = "volumeSnapshot"
	KeyPVC            = "pvc"
	KeyVeleroBackup   = "veleroBackup"
	KeyHandle         = "snapshotHandle"

	MetaFeatures = "features"
	MetaOrder    = "order"
)

// Source is a snapshot to export.
type Source struct {
	Cluster *rbd.Cluster
	Ref     rbd.Ref // Pool, Namespace, Image, Snapshot
	// Lineage names the volume the snapshot belongs to (for CSI snapshots
	// the source volume, for plain images the image itself).
	Lineage string
	// Labels are extra identity, e.g. the Kubernetes objects.
	Labels map[string]string
}

// CSISource is the export source of a CSI snapshot: its image, its
// Kubernetes identity, and the lineage of its PVC (the source volume image
// in ceph-csi's journal), which successive snapshots share.
func CSISource(s kube.Snapshot, h string, ref rbd.Ref, cl *rbd.Cluster) Source {
	src := Source{Cluster: cl, Ref: ref, Labels: map[string]string{KeyHandle: h}}
	if s.Content != nil {
		src.Labels[KeyContent] = s.Content.Name
		src.Labels[KeyVolumeSnapshot] = s.VolumeSnapshotName()
		src.Labels[KeyPVC] = s.PVC()
		src.Labels[KeyVeleroBackup] = s.VeleroBackup()
	}
	vol := ref.Source
	if vol == "" {
		vol = ref.Image
	}
	src.Lineage = rbd.Ref{Pool: ref.Pool, Namespace: ref.Namespace, Image: vol}.Spec()
	return src
}

// Options tune an export.
type Options struct {
	Parallel int     // Ceph readers and S3 uploads at once (default 8)
	Full     bool    // ignore the previous backup (no incremental)
	Planner  Planner // which chunks to read; default AllocatedPlanner
	Progress func(done objectstore.Stats, total uint64)
}

// Result is what an export did.
type Result struct {
	Manifest *objectstore.Manifest
	Seconds  float64
}

// DefaultParallel is the default number of chunks read and uploaded at once.
const DefaultParallel = 8

// A Planner decides which chunks of a snapshot to read. Full-allocated
// reads every allocated chunk; an incremental against a parent backup
// reads the same and lets the repository skip unchanged chunks by hash
// (Pacific); Ceph's own diff across snapshots (Reef) plugs in here too.
type Planner interface {
	Plan(r *rbd.SnapshotReader, chunk uint64, parent *objectstore.Manifest) (rbd.Bitmap, string, error)
}

// AllocatedPlanner reads every allocated chunk, parents included.
type AllocatedPlanner struct{}

// Plan implements Planner.
func (AllocatedPlanner) Plan(r *rbd.SnapshotReader, chunk uint64, parent *objectstore.Manifest) (rbd.Bitmap, string, error) {
	bm, err := r.Allocated(chunk)
	method := "full: allocated extents"
	if parent != nil {
		method = "incremental: allocated extents, unchanged chunks found by hash against " + parent.ID
	}
	return bm, method, err
}

// Export reads src's snapshot through the clone and its parents and writes
// it to repo as a new backup. The manifest is written only once every chunk
// is stored: an interrupted export leaves no backup, and running it again
// uploads only what is missing.
func Export(ctx context.Context, repo *objectstore.Repository, src Source, opts Options) (*Result, error) {
	start := time.Now()
	if opts.Parallel <= 0 {
		opts.Parallel = DefaultParallel
	}
	r, err := src.Cluster.OpenSnapshot(src.Ref.Pool, src.Ref.Namespace, src.Ref.Image, src.Ref.Snapshot)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	info, err := src.Cluster.Inspect(src.Ref.Pool, src.Ref.Namespace, src.Ref.Image, false)
	if err != nil {
		return nil, err
	}
	parent, err := previous(ctx, repo, src, opts)
	if err != nil {
		return nil, err
	}
	chunk := uint64(repo.Config().ChunkSize)
	if opts.Planner == nil {
		opts.Planner = AllocatedPlanner{}
	}
	bm, method, err := opts.Planner.Plan(r, chunk, parent)
	if err != nil {
		return nil, err
	}
	w, err := repo.NewBackup(ctx, objectstore.BackupOptions{
		Size: int64(r.Size), Parent: parent, Method: method, Parallel: opts.Parallel,
		Source: sourceMap(src, info), Meta: metaMap(info),
		Progress: progress(opts.Progress, bm.Count()*chunk),
	})
	if err != nil {
		return nil, err
	}
	defer w.Abort()
	slog.Info("exporting", "snapshot", r.Spec, "backup", w.ID(), "method", method,
		"chunks", bm.Count(), "parallel", opts.Parallel)
	err = r.ReadChunks(ctx, bm, opts.Parallel, func(c rbd.Chunk) error {
		return w.Write(ctx, int64(c.Off), c.Data)
	})
	if err != nil {
		return nil, fmt.Errorf("exporting %s: %w", r.Spec, err)
	}
	m, err := w.Commit(ctx)
	if err != nil {
		return nil, fmt.Errorf("exporting %s: %w", r.Spec, err)
	}
	return &Result{Manifest: m, Seconds: time.Since(start).Seconds()}, nil
}

func progress(fn func(objectstore.Stats, uint64), total uint64) func(objectstore.Stats) {
	if fn == nil {
		return nil
	}
	return func(s objectstore.Stats) { fn(s, total) }
}

// previous finds the latest backup of the same lineage in the same Ceph
// cluster, the parent of an incremental.
func previous(ctx context.Context, repo *objectstore.Repository, src Source, opts Options) (*objectstore.Manifest, error) {
	if opts.Full || src.Lineage == "" {
		return nil, nil
	}
	return repo.FindLatest(ctx, func(s *objectstore.Summary) bool {
		return s.Source[KeyLineage] == src.Lineage && s.Source[KeyFSID] == src.Cluster.FSID
	})
}

func sourceMap(src Source, info *rbd.ImageInfo) map[string]string {
	m := map[string]string{
		KeyFSID: src.Cluster.FSID, KeyClusterID: src.Ref.ClusterID, KeyPool: src.Ref.Pool,
		KeyNamespace: src.Ref.Namespace, KeyImage: src.Ref.Image, KeySnapshot: src.Ref.Snapshot,
		KeyImageID: info.ID, KeyLineage: src.Lineage,
	}
	if info.Parent != nil {
		m[KeyParent] = info.Parent.Spec()
	}
	for k, v := range src.Labels {
		if v != "" {
			m[k] = v
		}
	}
	for k, v := range m {
		if v == "" {
			delete(m, k)
		}
	}
	return m
}

func metaMap(info *rbd.ImageInfo) map[string]string {
	return map[string]string{
		MetaFeatures: strings.Join(info.FeatureNames(), ","),
		MetaOrder:    strconv.Itoa(info.Order),
	}
}
