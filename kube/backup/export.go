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
	"github.com/lifeboat-backup/lifeboat/rbd/handle"
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
	// KeyTaken is when Ceph made the snapshot (RFC 3339): retention ranks
	// backups by it, since exports can run late and out of order.
	KeyTaken = "snapshotTaken"
	// The snapshot's and its parent's ids, which the next export diffs from.
	KeySnapID          = "snapID"
	KeyParentPoolID    = "parentPoolID"
	KeyParentNamespace = "parentNamespace"
	KeyParentImageID   = "parentImageID"
	KeyParentSnapID    = "parentSnapID"
	// What `restore --velero-backup` needs to recreate the snapshot as
	// ceph-csi left it, from the repository alone (see rehydrate.go): the
	// journal's csi.source (the source volume image) and csi.snapname (the
	// CSI request name), whether the journal had an entry at all, and the
	// image name prefix (VolumeSnapshotClass snapshotNamePrefix).
	KeyCSISource   = "csiSource"
	KeyRequestName = "csiRequestName"
	KeyJournal     = "csiJournal"
	KeyNamePrefix  = "snapshotNamePrefix"

	MetaFeatures      = "features"
	MetaOrder         = "order"
	MetaPath          = "path"          // Path* constant
	MetaFallback      = "fallback"      // Fallback* constant, if any
	MetaCephBytesRead = "cephBytesRead" // data bytes read from Ceph
	MetaOwnBytes      = "cloneOwnBytes" // data the clone holds itself
	MetaOverlap       = "parentOverlap" // bytes of the clone its parent covers
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
	src := Source{Cluster: cl, Ref: ref, Labels: map[string]string{KeyHandle: h,
		KeyCSISource: ref.Source, KeyRequestName: ref.RequestName, KeyJournal: strconv.FormatBool(ref.FromJournal)}}
	if id, err := handle.Decode(h); err == nil && strings.HasSuffix(ref.Image, id.UUID) {
		src.Labels[KeyNamePrefix] = strings.TrimSuffix(ref.Image, id.UUID)
	}
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
	Parallel int  // Ceph readers and S3 uploads at once (default objectstore.DefaultParallel)
	Full     bool // ignore the previous backup (no incremental)
	// SHA256 records the whole image's SHA-256 in the manifest when every
	// byte is read (not on diff paths): one more pass on one core.
	SHA256   bool
	Progress func(done objectstore.Stats, total uint64)
}

// Result is what an export did.
type Result struct {
	Manifest *objectstore.Manifest
	Seconds  float64
	Path     string // PathFull, PathHash, PathDiffByID or PathDiffByName
	Fallback string // why an incremental did not diff, or ""
	// CephBytesRead is what was read from Ceph (data, not metadata).
	CephBytesRead uint64
}

// Export reads src's snapshot through the clone and its parents and writes
// it to repo as a new backup. The manifest is written only once every chunk
// is stored: an interrupted export leaves no backup, and running it again
// uploads only what is missing.
func Export(ctx context.Context, repo *objectstore.Repository, src Source, opts Options) (*Result, error) {
	start := time.Now()
	if opts.Parallel <= 0 {
		opts.Parallel = objectstore.DefaultParallel
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
	snap, err := describe(src.Cluster, r)
	if err != nil {
		return nil, err
	}
	parent, err := previous(ctx, repo, src, opts)
	if err != nil {
		return nil, err
	}
	chunk := uint64(repo.Config().ChunkSize)
	plan, err := planFor(snap, parent, chunk)
	if err != nil {
		return nil, err
	}
	if plan.Fallback != "" {
		slog.Warn("incremental export cannot diff: reading every allocated chunk", "snapshot", r.Spec,
			"reason", plan.Fallback, "previous", parent.ID)
	}
	w, err := repo.NewBackup(ctx, objectstore.BackupOptions{
		Size: int64(r.Size), Parent: parent, Method: plan.Method, Parallel: opts.Parallel,
		Source: sourceMap(src, info, snap), Meta: metaMap(info, snap, plan),
		Progress:     progress(opts.Progress, plan.size(chunk, r.Size)),
		StreamSHA256: opts.SHA256 && !plan.Reuse,
	})
	if err != nil {
		return nil, err
	}
	defer w.Abort()
	slog.Info("exporting", "snapshot", r.Spec, "backup", w.ID(), "path", plan.Path,
		"chunksRead", plan.Read.Count(), "chunksPatched", len(plan.Patch), "parallel", opts.Parallel)
	if err := run(ctx, repo, w, r, plan, parent, opts.Parallel); err != nil {
		return nil, fmt.Errorf("exporting %s: %w", r.Spec, err)
	}
	w.SetMeta(MetaCephBytesRead, strconv.FormatUint(r.BytesRead(), 10))
	m, err := w.Commit(ctx)
	if err != nil {
		return nil, fmt.Errorf("exporting %s: %w", r.Spec, err)
	}
	return &Result{Manifest: m, Seconds: time.Since(start).Seconds(), Path: plan.Path,
		Fallback: plan.Fallback, CephBytesRead: r.BytesRead()}, nil
}

// describe reads the identity of the snapshot that the next export will
// need to diff against this one.
func describe(cl *rbd.Cluster, r *rbd.SnapshotReader) (*Snapshot, error) {
	s := &Snapshot{Reader: r, Cluster: cl}
	var err error
	if s.ImageID, err = r.ImageID(); err != nil {
		return nil, err
	}
	if s.SnapID, err = r.SnapID(); err != nil {
		return nil, err
	}
	if s.Taken, err = r.Taken(s.SnapID); err != nil {
		return nil, err
	}
	if s.Origin, err = r.Origin(); err != nil || s.Origin == nil {
		return s, err
	}
	err = r.OwnData(func(_, n uint64) { s.OwnBytes += n })
	return s, err
}

// size is how many bytes of chunks the plan passes to the writer.
func (p *Plan) size(chunk, imageSize uint64) uint64 {
	return min((p.Read.Count()+uint64(len(p.Patch)))*chunk, imageSize)
}

// run carries out the plan: chunks read whole or patched, in parallel,
// handed to the writer in order, with the parent's unchanged chunks
// reused in between.
func run(ctx context.Context, repo *objectstore.Repository, w *objectstore.BackupWriter, r *rbd.SnapshotReader,
	plan *Plan, parent *objectstore.Manifest, parallel int) error {
	if !plan.Reuse {
		return r.ReadChunks(ctx, plan.Read, parallel, func(c rbd.Chunk) error {
			return w.Write(ctx, int64(c.Off), c.Data)
		})
	}
	todo := plan.Read.Clone()
	for i := range plan.Patch {
		todo.Set(i)
	}
	bases, err := patchBases(ctx, repo, parent, plan)
	if err != nil {
		return err
	}
	reuse := reuser{w: w, todo: todo, parent: repo.Cursor(ctx, parent)}
	read := func(c *rbd.Chunk) error {
		spans, ok := plan.Patch[c.Index]
		if !ok {
			return readWhole(r, c)
		}
		return patch(ctx, repo, r, bases, c, spans)
	}
	err = rbd.ReadChunksFunc(ctx, todo, r.Size, parallel, read, func(c rbd.Chunk) error {
		if err := reuse.until(int64(c.Off)); err != nil {
			return err
		}
		return w.Write(ctx, int64(c.Off), c.Data)
	})
	if err != nil {
		return err
	}
	return reuse.until(int64(r.Size))
}

func readWhole(r *rbd.SnapshotReader, c *rbd.Chunk) error {
	n, err := r.ReadAt(c.Data, int64(c.Off))
	if err != nil && n < len(c.Data) {
		return fmt.Errorf("reading %s at offset %d: %w", r.Spec, c.Off, err)
	}
	return nil
}

// patchBases finds the parent backup's extents under the chunks the plan
// patches: at most maxSpans of them, however large the backup.
func patchBases(ctx context.Context, repo *objectstore.Repository, parent *objectstore.Manifest, plan *Plan) (map[uint64]objectstore.Extent, error) {
	bases := map[uint64]objectstore.Extent{}
	if len(plan.Patch) == 0 {
		return bases, nil
	}
	x := repo.Extents(ctx, parent)
	for e, ok := x.Next(); ok; e, ok = x.Next() {
		if i := uint64(e.Offset) / plan.Read.Chunk; plan.Patch[i] != nil {
			bases[i] = e
		}
	}
	return bases, x.Err()
}

// patch builds chunk c from the parent backup's chunk at the same offset
// (zeros if it had none) with the changed spans read from Ceph.
func patch(ctx context.Context, repo *objectstore.Repository, r *rbd.SnapshotReader, bases map[uint64]objectstore.Extent,
	c *rbd.Chunk, spans []Span) error {
	clear(c.Data)
	if e, ok := bases[c.Index]; ok {
		if e.Length != int64(len(c.Data)) {
			return readWhole(r, c) // the image was resized
		}
		data, err := repo.ReadChunk(ctx, e)
		if err != nil {
			return fmt.Errorf("reading the previous backup's chunk to patch: %w", err)
		}
		copy(c.Data, data)
	}
	for _, s := range spans {
		b := c.Data[s.Off-c.Off : s.Off-c.Off+s.Len]
		if n, err := r.ReadAt(b, int64(s.Off)); err != nil && n < len(b) {
			return fmt.Errorf("reading %s at offset %d: %w", r.Spec, s.Off, err)
		}
	}
	return nil
}

// reuser hands the parent's extents that the plan leaves alone to the
// writer, in offset order.
type reuser struct {
	w      *objectstore.BackupWriter
	todo   rbd.Bitmap
	parent *objectstore.ExtentCursor
}

// until reuses the parent's untouched extents that start before off.
func (u *reuser) until(off int64) error {
	return u.parent.Before(off, func(e objectstore.Extent) error {
		if u.todo.Has(uint64(e.Offset) / u.todo.Chunk) {
			return nil
		}
		return u.w.Reuse(e)
	})
}

func progress(fn func(objectstore.Stats, uint64), total uint64) func(objectstore.Stats) {
	if fn == nil {
		return nil
	}
	return func(s objectstore.Stats) { fn(s, total) }
}

// Volume names the volume a backup is of: its lineage in its Ceph
// cluster, the chain an incremental builds on and retention judges.
func Volume(s objectstore.Summary) string {
	return s.Source[KeyFSID] + "/" + s.Source[KeyLineage]
}

// Taken is when the snapshot backup s holds was made: recorded by the
// export, or, for backups made before it was, when the export began.
func Taken(s objectstore.Summary) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, s.Source[KeyTaken]); err == nil {
		return t
	}
	return s.Created
}

// previous finds the latest backup of the same lineage in the same Ceph
// cluster, the parent of an incremental.
func previous(ctx context.Context, repo *objectstore.Repository, src Source, opts Options) (*objectstore.Manifest, error) {
	if opts.Full || src.Lineage == "" {
		return nil, nil
	}
	return repo.FindLatest(ctx, func(s *objectstore.Summary) bool {
		return Volume(*s) == src.Cluster.FSID+"/"+src.Lineage
	})
}

func sourceMap(src Source, info *rbd.ImageInfo, snap *Snapshot) map[string]string {
	m := map[string]string{
		KeyFSID: src.Cluster.FSID, KeyClusterID: src.Ref.ClusterID, KeyPool: src.Ref.Pool,
		KeyNamespace: src.Ref.Namespace, KeyImage: src.Ref.Image, KeySnapshot: src.Ref.Snapshot,
		KeyImageID: snap.ImageID, KeySnapID: strconv.FormatUint(snap.SnapID, 10), KeyLineage: src.Lineage,
		KeyTaken: snap.Taken.Format(time.RFC3339Nano),
	}
	if info.Parent != nil {
		m[KeyParent] = info.Parent.Spec()
	}
	if o := snap.Origin; o != nil {
		m[KeyParentPoolID] = strconv.FormatUint(o.PoolID, 10)
		m[KeyParentNamespace] = o.Namespace
		m[KeyParentImageID] = o.ImageID
		m[KeyParentSnapID] = strconv.FormatUint(o.SnapID, 10)
	}
	for k, v := range src.Labels {
		if v != "" {
			m[k] = v
		}
	}
	for k, v := range m {
		if v == "" && k != KeyParentNamespace {
			delete(m, k)
		}
	}
	return m
}

func metaMap(info *rbd.ImageInfo, snap *Snapshot, plan *Plan) map[string]string {
	m := map[string]string{
		MetaFeatures: strings.Join(info.FeatureNames(), ","),
		MetaOrder:    strconv.Itoa(info.Order),
		MetaPath:     plan.Path,
		MetaOwnBytes: strconv.FormatUint(snap.OwnBytes, 10),
	}
	if snap.Origin != nil {
		m[MetaOverlap] = strconv.FormatUint(snap.Origin.Overlap, 10)
	}
	if plan.Fallback != "" {
		m[MetaFallback] = plan.Fallback
	}
	return m
}
