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

// Rehydration: after the Ceph cluster a CSI snapshot lived in is lost,
// lifeboat recreates in a new cluster what ceph-csi would have left for
// that snapshot (an image with a snapshot of the same name, see admin.go,
// and the journal object csi.snap.<uuid>, below), so that the snapshot's
// handle resolves again.

// SnapJournal is what ceph-csi keeps in the omap of csi.snap.<uuid>
// (internal/journal/voljournal.go). Empty fields are not written.
type SnapJournal struct {
	UUID        string
	ImageName   string // csi.imagename
	RequestName string // csi.snapname, the CSI request name
	Source      string // csi.source: required by ceph-csi to restore from the snapshot
	ImageID     string // csi.imageid
}

func (j SnapJournal) values() map[string][]byte {
	kv := map[string][]byte{}
	for k, v := range map[string]string{keyImageName: j.ImageName, keyRequestName: j.RequestName,
		keySource: j.Source, keyImageID: j.ImageID} {
		if v != "" {
			kv[k] = []byte(v)
		}
	}
	return kv
}

// Complete tells whether ceph-csi can restore a volume from this journal
// entry, and what it lacks otherwise.
func (j SnapJournal) Complete() (bool, string) {
	switch {
	case j.Source == "":
		return false, "no " + keySource + " (ceph-csi fails CreateVolume from it: \"no snap source in omap\")"
	case j.ImageName == "":
		return false, "no " + keyImageName
	}
	return true, ""
}

// ReadSnapJournal reads csi.snap.<uuid>; found is false when the object
// does not exist.
func (c *Cluster) ReadSnapJournal(pool, namespace, uuid string) (j SnapJournal, found bool, err error) {
	ioctx, err := c.IOContext(pool, namespace)
	if err != nil {
		return j, false, err
	}
	defer ioctx.Destroy()
	vals, err := ioctx.GetAllOmapValues(Snapshot.objectPrefix()+uuid, "", "", 64)
	if errors.Is(err, rados.ErrNotFound) {
		return j, false, nil
	}
	if err != nil {
		return j, false, fmt.Errorf("reading journal object csi.snap.%s in %s: %w", uuid, Ref{Pool: pool, Namespace: namespace}.Spec(), err)
	}
	return SnapJournal{UUID: uuid, ImageName: string(vals[keyImageName]), RequestName: string(vals[keyRequestName]),
		Source: string(vals[keySource]), ImageID: string(vals[keyImageID])}, true, nil
}

// WriteSnapJournal writes csi.snap.<uuid> as ceph-csi's CreateSnapshot
// leaves it and, when the request name is known, its entry in the
// directory csi.snaps.<instance> (ceph-csi's idempotency lookup, and
// lifeboat's orphan scan).
func (c *Cluster) WriteSnapJournal(pool, namespace, instanceID string, j SnapJournal) error {
	ioctx, err := c.IOContext(pool, namespace)
	if err != nil {
		return err
	}
	defer ioctx.Destroy()
	obj := Snapshot.objectPrefix() + j.UUID
	if err := ioctx.SetOmap(obj, j.values()); err != nil {
		return fmt.Errorf("writing journal object %s in %s: %w", obj, Ref{Pool: pool, Namespace: namespace}.Spec(), err)
	}
	if j.RequestName == "" {
		return nil
	}
	dir := "csi.snaps." + instanceID
	if err := ioctx.SetOmap(dir, map[string][]byte{"csi.snap." + j.RequestName: []byte(j.UUID)}); err != nil {
		return fmt.Errorf("writing journal directory %s in %s: %w", dir, Ref{Pool: pool, Namespace: namespace}.Spec(), err)
	}
	return nil
}
