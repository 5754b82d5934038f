package rbd

import (
	"errors"
	"fmt"
	"time"

	librbd "github.com/ceph/go-ceph/rbd"
)

// ErrDiffByIDUnsupported is returned where librbd lacks rbd_diff_iterate3
// (before Ceph Reef): it cannot diff from a snapshot it only knows by id,
// such as the trash snapshots ceph-csi clones from.
var ErrDiffByIDUnsupported = errors.New("this librbd cannot diff from a snapshot id (rbd_diff_iterate3 needs Ceph Reef 18.2 or later)")

// ErrSnapshotGone is returned when the snapshot to diff from no longer exists.
var ErrSnapshotGone = errors.New("snapshot to diff from is gone")

// ChangedSince calls fn with every extent of the snapshot that differs
// from the image's snapshot from (by name, user namespace): Ceph's own
// export-diff, which reads only object metadata, never data. Discarded
// extents count as changed.
func (r *SnapshotReader) ChangedSince(from string, fn func(off, length uint64)) error {
	err := r.img.DiffIterate(librbd.DiffIterateConfig{
		SnapName: from, Offset: 0, Length: r.Size,
		IncludeParent: librbd.IncludeParent, WholeObject: librbd.DisableWholeObject,
		Callback: func(off, length uint64, _ int, _ interface{}) int { fn(off, length); return 0 },
	})
	if errors.Is(err, librbd.ErrNotFound) {
		return fmt.Errorf("%w: %s has no snapshot %q", ErrSnapshotGone, r.Spec, from)
	}
	if err != nil {
		return fmt.Errorf("diffing %s from snapshot %q: %w", r.Spec, from, err)
	}
	return nil
}

// OwnData calls fn with every extent the clone holds itself at the
// snapshot, not inherited from its parent: what was written to it after it
// was cloned. A ceph-csi snapshot clone has none.
func (r *SnapshotReader) OwnData(fn func(off, length uint64)) error {
	err := r.img.DiffIterate(librbd.DiffIterateConfig{
		Offset: 0, Length: r.Size,
		IncludeParent: librbd.ExcludeParent, WholeObject: librbd.DisableWholeObject,
		Callback: func(off, length uint64, _ int, _ interface{}) int { fn(off, length); return 0 },
	})
	if err != nil {
		return fmt.Errorf("listing the data of %s itself: %w", r.Spec, err)
	}
	return nil
}

// ChangedBetween calls fn with every extent of image id imageID (in
// pool/namespace, possibly in the RBD trash) that differs between its
// snapshots from and to, both known by id: the way to diff two ceph-csi
// snapshots, whose shared history is two trash snapshots of the volume.
// It needs Ceph Reef's librbd (ErrDiffByIDUnsupported before).
func (c *Cluster) ChangedBetween(pool, namespace, imageID string, from, to uint64, fn func(off, length uint64)) error {
	spec := fmt.Sprintf("%s (id %s)", Ref{Pool: pool, Namespace: namespace}.Spec(), imageID)
	ioctx, err := c.IOContext(pool, namespace)
	if err != nil {
		return err
	}
	defer ioctx.Destroy()
	img, err := librbd.OpenImageByIdReadOnly(ioctx, imageID, librbd.NoSnapshot)
	if err != nil {
		return fmt.Errorf("opening image %s: %w", spec, err)
	}
	defer img.Close()
	if err := img.SetSnapByID(from); err != nil {
		return fmt.Errorf("%w: snapshot id %d of image %s: %v", ErrSnapshotGone, from, spec, err)
	}
	if err := img.SetSnapByID(to); err != nil {
		return fmt.Errorf("snapshot id %d of image %s: %w", to, spec, err)
	}
	size, err := img.GetSize()
	if err != nil {
		return fmt.Errorf("size of image %s at snapshot id %d: %w", spec, to, err)
	}
	err = img.DiffIterateByID(librbd.DiffIterateByIDConfig{
		FromSnapID: from, Offset: 0, Length: size,
		IncludeParent: librbd.IncludeParent, WholeObject: librbd.DisableWholeObject,
		Callback: func(off, length uint64, _ int, _ interface{}) int { fn(off, length); return 0 },
	})
	switch {
	case errors.Is(err, librbd.ErrNotImplemented):
		return ErrDiffByIDUnsupported
	case err != nil:
		return fmt.Errorf("diffing image %s from snapshot id %d to %d: %w", spec, from, to, err)
	}
	return nil
}

// Origin is where a clone's data came from as of a snapshot: the parent
// image and the parent's snapshot, by id, and how much of the clone the
// parent covers.
type Origin struct {
	PoolID    uint64
	Pool      string
	Namespace string
	ImageID   string
	SnapID    uint64
	Overlap   uint64
}

// Origin returns the clone's parent as of the snapshot, or nil if the
// image has none (never a clone, or flattened).
func (r *SnapshotReader) Origin() (*Origin, error) {
	p, err := r.img.GetParent()
	if errors.Is(err, librbd.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("parent of %s: %w", r.Spec, err)
	}
	overlap, err := r.img.GetOverlap()
	if err != nil {
		return nil, fmt.Errorf("parent overlap of %s: %w", r.Spec, err)
	}
	return &Origin{
		PoolID: p.Image.PoolID, Pool: p.Image.PoolName, Namespace: p.Image.PoolNamespace,
		ImageID: p.Image.ImageID, SnapID: p.Snap.ID, Overlap: overlap,
	}, nil
}

// SnapID is the id of the snapshot the reader reads: a snapshot removed
// and created again under the same name has a new id.
func (r *SnapshotReader) SnapID() (uint64, error) { return r.SnapIDOf(r.snap) }

// Taken is when snapshot id (SnapID) was created, by Ceph's clock: for
// a ceph-csi snapshot, when the VolumeSnapshot was cut.
func (r *SnapshotReader) Taken(id uint64) (time.Time, error) {
	t, err := r.img.GetSnapTimestamp(id)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp of %s: %w", r.Spec, err)
	}
	return time.Unix(t.Sec, t.Nsec).UTC(), nil
}

// ImageID is the id of the image the reader reads.
func (r *SnapshotReader) ImageID() (string, error) {
	id, err := r.img.GetId()
	if err != nil {
		return "", fmt.Errorf("id of %s: %w", r.Spec, err)
	}
	return id, nil
}

// SnapIDOf is the id of the image's user snapshot name.
func (r *SnapshotReader) SnapIDOf(name string) (uint64, error) {
	id, err := r.img.GetSnapID(name)
	if err != nil {
		return 0, fmt.Errorf("id of snapshot %q of %s: %w", name, r.Spec, err)
	}
	return id, nil
}
