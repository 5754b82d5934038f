package rbd

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ceph/go-ceph/rados"

	"github.com/lifeboat-backup/lifeboat/rbd/handle"
)

// Default name prefixes of ceph-csi images; StorageClasses and
// VolumeSnapshotClasses can change them (volumeNamePrefix,
// snapshotNamePrefix).
const (
	DefaultVolumePrefix   = "csi-vol-"
	DefaultSnapshotPrefix = "csi-snap-"
	// DefaultInstanceID is ceph-csi's default --instanceid, the suffix of
	// its journal directory objects.
	DefaultInstanceID = "default"
)

// Journal keys ceph-csi stores in the omap of csi.snap.<uuid> and
// csi.volume.<uuid> (internal/journal/voljournal.go).
const (
	keyImageName   = "csi.imagename"
	keyRequestName = "csi.snapname"
	keyVolName     = "csi.volname"
	keySource      = "csi.source"
	keyImageID     = "csi.imageid"
)

// Kind tells a volume handle from a snapshot handle; they share a format but
// live under different journal objects.
type Kind int

// Handle kinds.
const (
	Snapshot Kind = iota
	Volume
)

func (k Kind) objectPrefix() string {
	if k == Volume {
		return "csi.volume."
	}
	return "csi.snap."
}

// Ref locates the RBD image (and snapshot) behind a ceph-csi handle.
type Ref struct {
	ClusterID string
	PoolID    int64
	Pool      string
	Namespace string // RADOS namespace
	Image     string
	// Snapshot is the RBD snapshot holding a CSI snapshot's data: ceph-csi
	// names it like the clone image. Empty for volumes.
	Snapshot string
	ImageID  string // from the journal; empty when the journal lacks it
	// Source is the image a CSI snapshot was taken of (csi.source).
	Source string
	// RequestName is the CSI request name (snapshot or PV name).
	RequestName string
	// FromJournal is false when the journal object was missing and the
	// image name comes from ceph-csi's naming convention.
	FromJournal bool
	// JournalLacks says what a snapshot's journal entry lacks that ceph-csi
	// needs to restore a volume from it ("" when nothing).
	JournalLacks string
}

// Spec is pool[/namespace]/image[@snapshot], the notation of the rbd CLI.
func (r Ref) Spec() string {
	s := r.Pool + "/"
	if r.Namespace != "" {
		s += r.Namespace + "/"
	}
	s += r.Image
	if r.Snapshot != "" {
		s += "@" + r.Snapshot
	}
	return s
}

// ResolveOptions carry what a handle alone does not say.
type ResolveOptions struct {
	Namespace string // RADOS namespace from ceph-csi's cluster config
	Prefix    string // image name prefix for the naming fallback
}

// Resolve finds the image behind a decoded handle: the pool by ID, then
// ceph-csi's journal entry, then, if the journal has no entry, ceph-csi's
// naming convention (<prefix><uuid>).
func (c *Cluster) Resolve(id handle.ID, kind Kind, opts ResolveOptions) (Ref, error) {
	ref := Ref{ClusterID: id.ClusterID, PoolID: id.PoolID, Namespace: opts.Namespace}
	pool, err := c.PoolName(id.PoolID)
	if err != nil {
		return ref, err
	}
	ref.Pool = pool
	ioctx, err := c.IOContext(pool, opts.Namespace)
	if err != nil {
		return ref, err
	}
	defer ioctx.Destroy()

	obj := kind.objectPrefix() + id.UUID
	vals, err := ioctx.GetAllOmapValues(obj, "", "", 64)
	switch {
	case errors.Is(err, rados.ErrNotFound) || (err == nil && len(vals) == 0):
		ref.Image = fallbackName(kind, opts.Prefix) + id.UUID
	case err != nil:
		return ref, fmt.Errorf("reading ceph-csi journal object %s in pool %s: %w", obj, pool, err)
	default:
		ref.FromJournal = true
		ref.Image = string(vals[keyImageName])
		if ref.Image == "" {
			ref.Image = fallbackName(kind, opts.Prefix) + id.UUID
		}
		ref.ImageID = string(vals[keyImageID])
		ref.Source = string(vals[keySource])
		ref.RequestName = string(vals[keyRequestName])
		if kind == Volume {
			ref.RequestName = string(vals[keyVolName])
		} else if ref.Source == "" {
			// ceph-csi's CreateVolume from this snapshot fails with "no
			// snap source in omap" (internal/journal/voljournal.go).
			ref.JournalLacks = keySource
		}
	}
	if kind == Snapshot {
		ref.Snapshot = ref.Image
	}
	return ref, nil
}

func fallbackName(kind Kind, prefix string) string {
	if prefix != "" {
		return prefix
	}
	if kind == Volume {
		return DefaultVolumePrefix
	}
	return DefaultSnapshotPrefix
}

// journalSnapshotImages lists the image names ceph-csi's snapshot journal
// knows in a pool: the directory csi.snaps.<instance> maps request names to
// UUIDs, and each csi.snap.<uuid> names its image.
func journalSnapshotImages(ioctx *rados.IOContext, instanceID string) ([]string, error) {
	dir, err := ioctx.GetAllOmapValues("csi.snaps."+instanceID, "", "", 256)
	if errors.Is(err, rados.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, v := range dir {
		uuid := string(v)
		// A journal in another pool stores "<16-hex pool id>/<uuid>".
		if i := strings.LastIndexByte(uuid, '/'); i >= 0 {
			uuid = uuid[i+1:]
		}
		vals, err := ioctx.GetOmapValues("csi.snap."+uuid, "", keyImageName, 1)
		if err != nil && !errors.Is(err, rados.ErrNotFound) {
			return nil, err
		}
		if name := string(vals[keyImageName]); name != "" {
			names = append(names, name)
		}
	}
	return names, nil
}
