package csidriver

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
	"github.com/google/uuid"

	lbrbd "github.com/lifeboat-backup/lifeboat/rbd"
)

// This file is ceph-csi's layout in Ceph, shared by the driver and the
// simulator (test/sim): journal omaps, images, clones, deletion. Every
// function works on an I/O context already set to the pool and RADOS
// namespace.

// Name prefixes (StorageClass volumeNamePrefix and VolumeSnapshotClass
// snapshotNamePrefix defaults, internal/journal/voljournal.go).
const (
	VolumePrefix   = "csi-vol-"
	SnapshotPrefix = "csi-snap-"
)

// Journal attribute keys (internal/journal/voljournal.go).
const (
	KeyImageName = "csi.imagename"
	KeyImageID   = "csi.imageid"
	KeySource    = "csi.source"       // snapshots: parent image name
	KeyOwner     = "csi.volume.owner" // volumes: PVC namespace
	KeyVolName   = "csi.volname"
	KeySnapName  = "csi.snapname"
)

// Errors the controller maps to gRPC codes as ceph-csi does.
var (
	// ErrKeyNotFound: a journal object or key is missing (util.ErrKeyNotFound).
	ErrKeyNotFound = errors.New("key not found")
	// ErrImageNotFound: the RBD image is missing (rbd ErrImageNotFound).
	ErrImageNotFound = errors.New("image not found")
	// ErrNameConflict: a request name is reserved for another source or a
	// smaller size (ErrSnapNameConflict / ErrVolNameConflict).
	ErrNameConflict = errors.New("name conflict")
)

// Journal is one of ceph-csi's two journals (internal/journal/voljournal.go):
// the directory object <Dir><instance> maps "<Prefix><request name>" to a
// UUID; the object "<Prefix><uuid>" holds the reservation's attributes.
type Journal struct {
	Dir     string
	Prefix  string
	NameKey string
	// ImagePrefix is the default image name prefix.
	ImagePrefix string
	snap        bool
}

// The volume and snapshot journals.
var (
	VolumeJournal   = Journal{Dir: "csi.volumes.", Prefix: "csi.volume.", NameKey: KeyVolName, ImagePrefix: VolumePrefix}
	SnapshotJournal = Journal{Dir: "csi.snaps.", Prefix: "csi.snap.", NameKey: KeySnapName, ImagePrefix: SnapshotPrefix, snap: true}
)

// Attrs are a reservation's attributes (ceph-csi's ImageAttributes).
type Attrs struct {
	RequestName string
	ImageName   string
	ImageID     string
	Source      string // snapshots only
	Owner       string
}

// Lookup returns the UUID reserved for a request name, "" when none
// (CheckReservation's directory read). A "<16-hex pool id>/<uuid>" value,
// written when the journal pool differs from the image pool, yields the
// UUID part.
func (j Journal) Lookup(ioctx *rados.IOContext, instance, reqName string) (string, error) {
	key := j.Prefix + reqName
	vals, err := ioctx.GetOmapValues(j.Dir+instance, "", key, 1)
	if errors.Is(err, rados.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("journal %s: %w", j.Dir+instance, err)
	}
	v, ok := vals[key]
	if !ok {
		return "", nil
	}
	id := string(v)
	if i := strings.LastIndexByte(id, '/'); i >= 0 {
		id = id[i+1:]
	}
	return id, nil
}

// Reserve is ceph-csi's ReserveName: create <Prefix><uuid> exclusively (a
// fresh UUID on collision, 5 tries), map the request name to it in the
// directory, then write the attributes. It returns the UUID; the image name
// is prefix+uuid (prefix "" = ImagePrefix).
func (j Journal) Reserve(ioctx *rados.IOContext, instance, reqName, prefix, source, owner string) (string, error) {
	var id string
	for try := 1; ; try++ {
		id = uuid.NewString()
		err := ioctx.Create(j.Prefix+id, rados.CreateExclusive)
		if err == nil {
			break
		}
		if !errors.Is(err, rados.ErrObjectExists) || try == 5 {
			return "", fmt.Errorf("journal: create %s%s: %w", j.Prefix, id, err)
		}
	}
	if err := setOmap(ioctx, j.Dir+instance, map[string]string{j.Prefix + reqName: id}); err != nil {
		_ = ioctx.Delete(j.Prefix + id)
		return "", err
	}
	attrs := map[string]string{j.NameKey: reqName, KeyImageName: j.ImageName(prefix, id)}
	if j.snap {
		attrs[KeySource] = source
	}
	if owner != "" {
		attrs[KeyOwner] = owner
	}
	if err := setOmap(ioctx, j.Prefix+id, attrs); err != nil {
		_ = j.Undo(ioctx, instance, id, reqName)
		return "", err
	}
	return id, nil
}

// ImageName is prefix+uuid, with the journal's default prefix for "".
func (j Journal) ImageName(prefix, id string) string {
	if prefix == "" {
		prefix = j.ImagePrefix
	}
	return prefix + id
}

// Attributes is ceph-csi's GetImageAttributes: a missing object reads as
// empty; csi.imagename defaults to <ImagePrefix><uuid>; a snapshot without
// csi.source is ErrKeyNotFound "no snap source in omap".
func (j Journal) Attributes(ioctx *rados.IOContext, id string) (Attrs, error) {
	m, err := ioctx.GetAllOmapValues(j.Prefix+id, "", "csi.", 100)
	if err != nil && !errors.Is(err, rados.ErrNotFound) {
		return Attrs{}, fmt.Errorf("journal: read %s%s: %w", j.Prefix, id, err)
	}
	a := Attrs{
		RequestName: string(m[j.NameKey]),
		ImageName:   string(m[KeyImageName]),
		ImageID:     string(m[KeyImageID]),
		Owner:       string(m[KeyOwner]),
	}
	if _, ok := m[KeyImageName]; !ok {
		a.ImageName = j.ImagePrefix + id
	}
	if j.snap {
		src, ok := m[KeySource]
		if !ok {
			return a, fmt.Errorf("%w: no snap source in omap for %q", ErrKeyNotFound, j.Prefix+id)
		}
		a.Source = string(src)
	}
	return a, nil
}

// StoreImageID records the image ID (ceph-csi's StoreImageID).
func (j Journal) StoreImageID(ioctx *rados.IOContext, id, imageID string) error {
	return setOmap(ioctx, j.Prefix+id, map[string]string{KeyImageID: imageID})
}

// Undo is ceph-csi's UndoReservation: the per-UUID object first, then the
// directory key. Missing pieces are not errors.
func (j Journal) Undo(ioctx *rados.IOContext, instance, id, reqName string) error {
	if id != "" {
		if err := ioctx.Delete(j.Prefix + id); err != nil && !errors.Is(err, rados.ErrNotFound) {
			return fmt.Errorf("journal: delete %s%s: %w", j.Prefix, id, err)
		}
	}
	err := ioctx.RmOmapKeys(j.Dir+instance, []string{j.Prefix + reqName})
	if err != nil && !errors.Is(err, rados.ErrNotFound) {
		return fmt.Errorf("journal: rm %s%s from %s: %w", j.Prefix, reqName, j.Dir+instance, err)
	}
	return nil
}

// Directory returns the whole directory omap.
func (j Journal) Directory(ioctx *rados.IOContext, instance string) (map[string]string, error) {
	return readOmap(ioctx, j.Dir+instance)
}

// Read returns the whole omap of <Prefix><uuid>.
func (j Journal) Read(ioctx *rados.IOContext, id string) (map[string]string, error) {
	return readOmap(ioctx, j.Prefix+id)
}

func readOmap(ioctx *rados.IOContext, oid string) (map[string]string, error) {
	m, err := ioctx.GetAllOmapValues(oid, "", "", 1000)
	if err != nil {
		return nil, fmt.Errorf("journal: read %s: %w", oid, err)
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out, nil
}

func setOmap(ioctx *rados.IOContext, oid string, kv map[string]string) error {
	pairs := make(map[string][]byte, len(kv))
	for k, v := range kv {
		pairs[k] = []byte(v)
	}
	if err := ioctx.SetOmap(oid, pairs); err != nil {
		return fmt.Errorf("journal: set omap on %s: %w", oid, err)
	}
	return nil
}

// RoundOffBytes rounds like ceph-csi's util.RoundOffBytes: up to a MiB
// below 1 GiB, up to a GiB from there.
func RoundOffBytes(n uint64) uint64 {
	const mib, gib = 1 << 20, 1 << 30
	if n < gib {
		return (n + mib - 1) / mib * mib
	}
	return (n + gib - 1) / gib * gib
}

// featureDeps is ceph-csi's supportedFeatures table (rbd_util.go), minus the
// rbd-nbd mounter requirement of journaling (no node plugin here).
var featureDeps = map[string][]string{
	rbd.FeatureNameLayering:      nil,
	rbd.FeatureNameExclusiveLock: nil,
	rbd.FeatureNameObjectMap:     {rbd.FeatureNameExclusiveLock},
	rbd.FeatureNameFastDiff:      {rbd.FeatureNameObjectMap},
	rbd.FeatureNameJournaling:    {rbd.FeatureNameExclusiveLock},
	rbd.FeatureNameDeepFlatten:   nil,
}

// ParseFeatures validates a StorageClass imageFeatures list like ceph-csi's
// validateImageFeatures ("" = no features) and returns the feature bits.
// The names are parsed by lifeboat's own parser (rbd.ParseFeatures); the
// table of what ceph-csi supports and requires is ceph-csi's.
func ParseFeatures(list string) (uint64, error) {
	f, err := lbrbd.ParseFeatures(list)
	if err != nil {
		return 0, fmt.Errorf("invalid feature: %w", err)
	}
	set := lbrbd.FeatureNames(f)
	for _, name := range set {
		deps, ok := featureDeps[name]
		if !ok {
			return 0, fmt.Errorf("invalid feature %s", name)
		}
		for _, d := range deps {
			if !slices.Contains(set, d) {
				return 0, fmt.Errorf("feature %s requires %s to be set", name, d)
			}
		}
	}
	return f, nil
}

// SnapshotFeatures are the features ceph-csi gives snapshot clones
// (controllerserver.go doSnapshotClone).
const SnapshotFeatures = rbd.FeatureLayering | rbd.FeatureDeepFlatten

// CreateImage is ceph-csi's createImage: format 2 with the given features.
func CreateImage(ioctx *rados.IOContext, name string, size, features uint64) error {
	opts := rbd.NewRbdImageOptions()
	defer opts.Destroy()
	if err := opts.SetUint64(rbd.ImageOptionFormat, 2); err != nil {
		return err
	}
	if err := opts.SetUint64(rbd.ImageOptionFeatures, features); err != nil {
		return err
	}
	if err := rbd.CreateImage(ioctx, name, size, opts); err != nil {
		return fmt.Errorf("rbd create %s: %w", name, err)
	}
	return nil
}

// Clone clones image@snap (in src) into name (in dst) with clone format 2
// and the given features (ceph-csi's cloneRbdImageFromSnapshot).
func Clone(src *rados.IOContext, image, snap string, dst *rados.IOContext, name string, features uint64) error {
	opts := rbd.NewRbdImageOptions()
	defer opts.Destroy()
	err := opts.SetUint64(rbd.ImageOptionFeatures, features)
	if err == nil {
		err = opts.SetUint64(rbd.ImageOptionCloneFormat, 2)
	}
	if err == nil {
		err = rbd.CloneImage(src, image, snap, dst, name, opts)
	}
	if err != nil {
		return fmt.Errorf("rbd clone %s@%s %s: %w", image, snap, name, err)
	}
	return nil
}

// CloneViaTempSnapshot is ceph-csi's createRBDClone (snapshot.go): a
// snapshot named like the clone on parent (in src), a clone v2 of it (in
// dst), then the snapshot removed - with a clone v2 child it moves to the
// parent's trash snapshot namespace.
func CloneViaTempSnapshot(src *rados.IOContext, parent string, dst *rados.IOContext, clone string, features uint64) error {
	img, err := rbd.OpenImage(src, parent, rbd.NoSnapshot)
	if err != nil {
		return fmt.Errorf("open %s: %w", parent, imageErr(err))
	}
	defer img.Close()
	tmp, err := img.CreateSnapshot(clone)
	if err != nil {
		return fmt.Errorf("rbd snap create %s@%s: %w", parent, clone, err)
	}
	if err := Clone(src, parent, clone, dst, clone, features); err != nil {
		_ = tmp.Remove()
		return err
	}
	if err := tmp.Remove(); err != nil {
		_ = rbd.RemoveImage(dst, clone)
		return fmt.Errorf("rbd snap rm %s@%s: %w", parent, clone, err)
	}
	return nil
}

// SnapshotClone is what ceph-csi's CreateSnapshot leaves for a snapshot
// image: CloneViaTempSnapshot(parent -> name, layering,deep-flatten), then
// the snapshot name@name on the clone (doSnapshotClone).
func SnapshotClone(ioctx *rados.IOContext, parent, name string) error {
	if err := CloneViaTempSnapshot(ioctx, parent, ioctx, name, SnapshotFeatures); err != nil {
		return err
	}
	return EnsureSnapshot(ioctx, name, name)
}

// EnsureSnapshot creates image@snap unless it exists.
func EnsureSnapshot(ioctx *rados.IOContext, image, snap string) error {
	img, err := rbd.OpenImage(ioctx, image, rbd.NoSnapshot)
	if err != nil {
		return fmt.Errorf("open %s: %w", image, imageErr(err))
	}
	defer img.Close()
	if _, err := img.GetSnapID(snap); err == nil {
		return nil
	}
	if _, err := img.CreateSnapshot(snap); err != nil {
		return fmt.Errorf("rbd snap create %s@%s: %w", image, snap, err)
	}
	return nil
}

// ImageInfo is what the controller reads of an image.
type ImageInfo struct {
	ID       string
	Size     uint64
	Features uint64
	Created  rbd.Timespec
	Watchers int
}

// Stat reads an image's ID, size, features, creation time and watchers.
// A missing image is ErrImageNotFound.
func Stat(ioctx *rados.IOContext, name string) (ImageInfo, error) {
	var info ImageInfo
	img, err := rbd.OpenImageReadOnly(ioctx, name, rbd.NoSnapshot)
	if err != nil {
		return info, fmt.Errorf("open %s: %w", name, imageErr(err))
	}
	defer img.Close()
	if info.ID, err = img.GetId(); err == nil {
		if info.Size, err = img.GetSize(); err == nil {
			if info.Features, err = img.GetFeatures(); err == nil {
				info.Created, err = img.GetCreateTimestamp()
			}
		}
	}
	if err != nil {
		return info, fmt.Errorf("%s: %w", name, err)
	}
	// A read-only open registers no watch: the count is other clients'.
	if w, err := img.ListWatchers(); err == nil {
		info.Watchers = len(w)
	}
	return info, nil
}

// Resize grows an image to size (never shrinks).
func Resize(ioctx *rados.IOContext, name string, size uint64) error {
	img, err := rbd.OpenImage(ioctx, name, rbd.NoSnapshot)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, imageErr(err))
	}
	defer img.Close()
	cur, err := img.GetSize()
	if err == nil && cur < size {
		err = img.Resize(size)
	}
	if err != nil {
		return fmt.Errorf("rbd resize %s: %w", name, err)
	}
	return nil
}

// DeleteImage is ceph-csi's deleteImage: move the image to the RBD trash,
// then remove it from there. When snapshots in its trash namespace still
// have children (CSI snapshots of a volume, volumes restored from a CSI
// snapshot) the removal fails and the image stays in the trash - ceph-csi's
// mgr "trash remove" task keeps failing the same way - and trashed is true.
// A missing image is not an error (ensureImageCleanup: a leftover in the
// trash under that name is removed).
func DeleteImage(ioctx *rados.IOContext, name string) (trashed bool, err error) {
	img, err := rbd.OpenImage(ioctx, name, rbd.NoSnapshot)
	if errors.Is(err, rbd.ErrNotFound) {
		return false, cleanTrash(ioctx, name)
	}
	if err != nil {
		return false, fmt.Errorf("open %s: %w", name, err)
	}
	id, err := img.GetId()
	if err == nil {
		err = img.Trash(0)
	}
	img.Close()
	if err != nil {
		return false, fmt.Errorf("rbd trash mv %s: %w", name, err)
	}
	return trashRemove(ioctx, name, id)
}

// trashRemove removes a trashed image. While snapshots in its trash
// namespace have children it cannot go and stays (stays=true, no error:
// ceph-csi's mgr task fails the same way after ceph-csi answered). Other
// EBUSY/ENOTEMPTY failures are retried briefly - a concurrent operation on
// a parent or child holds the image for a moment - and then count as
// staying too.
func trashRemove(ioctx *rados.IOContext, name, id string) (stays bool, err error) {
	for try := 1; ; try++ {
		err := rbd.TrashRemove(ioctx, id, true)
		switch {
		case err == nil || errors.Is(err, rbd.ErrNotFound):
			return false, nil
		case !isErrno(err, 16) && !isErrno(err, 39): // EBUSY, ENOTEMPTY
			return true, fmt.Errorf("rbd trash rm %s (%s): %w", name, id, err)
		case try == 5:
			return true, nil
		}
		if kids, err := hasChildren(ioctx, id); err == nil && kids {
			return true, nil
		}
		time.Sleep(time.Duration(try) * 200 * time.Millisecond)
	}
}

// hasChildren reports whether a snapshot of the image with this ID, in any
// snapshot namespace, has clones.
func hasChildren(ioctx *rados.IOContext, id string) (bool, error) {
	img, err := rbd.OpenImageByIdReadOnly(ioctx, id, rbd.NoSnapshot)
	if err != nil {
		return false, err
	}
	defer img.Close()
	snaps, err := img.GetSnapshotNames()
	if err != nil {
		return false, err
	}
	for _, sn := range snaps {
		if err := img.SetSnapByID(sn.Id); err != nil {
			return false, err
		}
		kids, err := img.ListChildrenAttributes()
		if err != nil {
			return false, err
		}
		if len(kids) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// cleanTrash removes trashed images named name (ensureImageCleanup).
func cleanTrash(ioctx *rados.IOContext, name string) error {
	list, err := rbd.GetTrashList(ioctx)
	if err != nil {
		return fmt.Errorf("rbd trash ls: %w", err)
	}
	for _, t := range list {
		if t.Name == name {
			if _, err := trashRemove(ioctx, name, t.Id); err != nil {
				return err
			}
		}
	}
	return nil
}

// DeleteSnapshotImage is ceph-csi's cleanUpSnapshot: the snapshot
// name@name on the snapshot clone, then the clone (DeleteImage).
func DeleteSnapshotImage(ioctx *rados.IOContext, name string) (trashed bool, err error) {
	if err := RemoveSnapshot(ioctx, name, name); err != nil {
		return false, err
	}
	return DeleteImage(ioctx, name)
}

// RemoveSnapshot removes image@snap (with clone v2 children it moves to the
// trash snapshot namespace). A missing image or snapshot is not an error.
func RemoveSnapshot(ioctx *rados.IOContext, image, snap string) error {
	img, err := rbd.OpenImage(ioctx, image, rbd.NoSnapshot)
	if errors.Is(err, rbd.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", image, err)
	}
	defer img.Close()
	if err := img.GetSnapshot(snap).Remove(); err != nil && !errors.Is(err, rbd.ErrNotFound) {
		return fmt.Errorf("rbd snap rm %s@%s: %w", image, snap, err)
	}
	return nil
}

func imageErr(err error) error {
	if errors.Is(err, rbd.ErrNotFound) {
		return fmt.Errorf("%w: %w", ErrImageNotFound, err)
	}
	return err
}

// isErrno reports whether err is a go-ceph error carrying -errno.
func isErrno(err error, errno int) bool {
	var e interface{ ErrorCode() int }
	if errors.As(err, &e) {
		c := e.ErrorCode()
		return c == -errno || c == errno
	}
	return false
}
