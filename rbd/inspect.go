package rbd

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"

	"github.com/lifeboat-backup/lifeboat/rbd/internal/crbd"
)

// Snapshot namespaces, as `rbd snap ls --all` names them.
const (
	NamespaceUser  = "user"
	NamespaceTrash = "trash"
	NamespaceGroup = "group"
)

// SnapInfo is one snapshot of an image, in any snapshot namespace.
type SnapInfo struct {
	ID   uint64 `json:"id"`
	Name string `json:"name"`
	// Namespace is user, trash or group. A trash snapshot's Name is a
	// UUID; TrashName is the name it had before it was removed.
	Namespace string `json:"namespace"`
	TrashName string `json:"trashName,omitempty"`
	Size      uint64 `json:"size"`
}

// ParentInfo is where a clone's data comes from, and whether it is still
// there.
type ParentInfo struct {
	PoolID    uint64 `json:"poolID"`
	Pool      string `json:"pool"`
	Namespace string `json:"namespace"`
	Image     string `json:"image"`
	ImageID   string `json:"imageID"`
	// InTrash is true when the parent image was moved to the RBD trash
	// (ceph-csi does that when a volume with snapshots is deleted).
	InTrash bool   `json:"inTrash"`
	SnapID  uint64 `json:"snapID"`
	Snap    string `json:"snap"`
	// SnapNamespace is "trash" for ceph-csi snapshots: the temporary
	// snapshot was removed after cloning and lives on, hidden, while the
	// clone needs it.
	SnapNamespace string `json:"snapNamespace,omitempty"`
	SnapTrashName string `json:"snapTrashName,omitempty"`
	// Missing says what of the parent is gone: "" (nothing), "image" or
	// "snapshot". MissingErr says why.
	Missing    string `json:"missing,omitempty"`
	MissingErr string `json:"missingError,omitempty"`
}

// Spec is pool[/ns]/image@snap.
func (p ParentInfo) Spec() string {
	s := p.Pool + "/"
	if p.Namespace != "" {
		s += p.Namespace + "/"
	}
	return s + p.Image + "@" + p.Snap
}

// ImageInfo is what lifeboat knows of an RBD image after Inspect.
type ImageInfo struct {
	Pool       string      `json:"pool"`
	Namespace  string      `json:"namespace"`
	Name       string      `json:"name"`
	ID         string      `json:"id"`
	Size       uint64      `json:"size"`
	Order      int         `json:"order"`
	ObjectSize uint64      `json:"objectSize"`
	Format     int         `json:"format"`
	Features   uint64      `json:"-"`
	OpFeatures uint64      `json:"-"`
	Parent     *ParentInfo `json:"parent,omitempty"`
	Overlap    uint64      `json:"overlap"`
	Snapshots  []SnapInfo  `json:"snapshots"`
}

// FeatureNames and OpFeatureNames are for printing.
func (i *ImageInfo) FeatureNames() []string   { return FeatureNames(i.Features) }
func (i *ImageInfo) OpFeatureNames() []string { return OpFeatureNames(i.OpFeatures) }

// Snapshot returns the user-namespace snapshot with that name, if any.
func (i *ImageInfo) Snapshot(name string) (SnapInfo, bool) {
	for _, s := range i.Snapshots {
		if s.Name == name && s.Namespace == NamespaceUser {
			return s, true
		}
	}
	return SnapInfo{}, false
}

// ErrImageNotFound is wrapped when the image does not exist.
var ErrImageNotFound = errors.New("image not found")

// Inspect reads an image's metadata: size, layout, features, parent and all
// snapshots. It never writes. librbd opens a clone's parent chain along
// with the clone, so a clone that opens has its parent image and snapshot;
// parentDetails also opens the parent to name its snapshot's namespace
// (trash) and original name, which resolve shows and verify does not need.
func (c *Cluster) Inspect(pool, namespace, name string, parentDetails bool) (*ImageInfo, error) {
	ioctx, err := c.IOContext(pool, namespace)
	if err != nil {
		return nil, err
	}
	defer ioctx.Destroy()
	where := Ref{Pool: pool, Namespace: namespace, Image: name}.Spec()

	img, err := librbd.OpenImageReadOnly(ioctx, name, librbd.NoSnapshot)
	if err != nil {
		return nil, openError(ioctx, name, where, err)
	}
	defer img.Close()

	info := &ImageInfo{Pool: pool, Namespace: namespace, Name: name}
	if err := readBasics(img, info); err != nil {
		return nil, fmt.Errorf("inspecting %s: %w", where, err)
	}
	if info.OpFeatures, err = readOpFeatures(ioctx, info.ID); err != nil {
		return nil, fmt.Errorf("inspecting %s: operation features of image id %s: %w", where, info.ID, err)
	}
	if info.Snapshots, err = listSnapshots(img); err != nil {
		return nil, fmt.Errorf("listing snapshots of %s: %w", where, err)
	}
	if info.Parent, err = c.readParent(img, parentDetails); err != nil {
		return nil, fmt.Errorf("reading parent of %s: %w", where, err)
	}
	if info.Parent != nil {
		if info.Overlap, err = img.GetOverlap(); err != nil {
			return nil, fmt.Errorf("reading overlap of %s: %w", where, err)
		}
	}
	return info, nil
}

func readBasics(img *librbd.Image, info *ImageInfo) error {
	var err error
	if info.ID, err = img.GetId(); err != nil {
		return err
	}
	st, err := img.Stat()
	if err != nil {
		return err
	}
	info.Size, info.Order, info.ObjectSize = st.Size, int(st.Order), st.Obj_size
	info.Format = 2
	if old, err := img.IsOldFormat(); err != nil {
		return err
	} else if old {
		info.Format = 1
	}
	info.Features, err = img.GetFeatures()
	return err
}

// readOpFeatures reads the operation features of image id: go-ceph has
// no call for them, so crbd opens a handle of its own.
func readOpFeatures(ioctx *rados.IOContext, id string) (uint64, error) {
	img, err := crbd.OpenByIDReadOnly(ioctx, id)
	if err != nil {
		return 0, err
	}
	defer img.Close()
	return img.OpFeatures()
}

func listSnapshots(img *librbd.Image) ([]SnapInfo, error) {
	snaps, err := img.GetSnapshotNames()
	if err != nil {
		return nil, err
	}
	out := make([]SnapInfo, 0, len(snaps))
	for _, s := range snaps {
		si := SnapInfo{ID: s.Id, Name: s.Name, Size: s.Size}
		si.Namespace, si.TrashName, err = snapNamespace(img, s.Id)
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", s.Name, err)
		}
		out = append(out, si)
	}
	return out, nil
}

func snapNamespace(img *librbd.Image, id uint64) (ns, trashName string, err error) {
	t, err := img.GetSnapNamespaceType(id)
	if err != nil {
		return "", "", err
	}
	switch t {
	case librbd.SnapNamespaceTypeTrash:
		trashName, err = img.GetSnapTrashNamespace(id)
		return NamespaceTrash, trashName, err
	case librbd.SnapNamespaceTypeGroup:
		return NamespaceGroup, "", nil
	default:
		return NamespaceUser, "", nil
	}
}

// readParent returns nil for an image without a parent (never a clone, or
// flattened). It opens the parent by ID, which works in the RBD trash too,
// to tell whether the parent image and its snapshot are still there.
func (c *Cluster) readParent(img *librbd.Image, details bool) (*ParentInfo, error) {
	p, err := img.GetParent()
	if errors.Is(err, librbd.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	pi := &ParentInfo{
		PoolID: p.Image.PoolID, Pool: p.Image.PoolName, Namespace: p.Image.PoolNamespace,
		Image: p.Image.ImageName, ImageID: p.Image.ImageID, InTrash: p.Image.Trash,
		SnapID: p.Snap.ID, Snap: p.Snap.SnapName,
	}
	if details {
		c.checkParent(pi)
	}
	return pi, nil
}

func (c *Cluster) checkParent(pi *ParentInfo) {
	ioctx, err := c.IOContext(pi.Pool, pi.Namespace)
	if err != nil {
		pi.Missing, pi.MissingErr = "image", err.Error()
		return
	}
	defer ioctx.Destroy()
	parent, err := librbd.OpenImageByIdReadOnly(ioctx, pi.ImageID, librbd.NoSnapshot)
	if err != nil {
		pi.Missing, pi.MissingErr = "image", fmt.Sprintf("opening parent image %s (id %s): %v", pi.Image, pi.ImageID, err)
		return
	}
	defer parent.Close()
	pi.SnapNamespace, pi.SnapTrashName, err = snapNamespace(parent, pi.SnapID)
	if err != nil {
		pi.Missing, pi.MissingErr = "snapshot", fmt.Sprintf("parent snapshot id %d of %s: %v", pi.SnapID, pi.Image, err)
	}
}

// ErrParentMissing is wrapped when an image exists but librbd cannot open
// it because the parent it hangs from is gone.
var ErrParentMissing = errors.New("parent image gone")

// openError explains a failed open. librbd opens a clone's parent along with
// the clone, so ENOENT means either the image or its parent is gone: the
// image's own id and header objects tell which.
func openError(ioctx *rados.IOContext, name, where string, err error) error {
	if !errors.Is(err, librbd.ErrNotFound) {
		return fmt.Errorf("opening image %s: %w", where, err)
	}
	id, idErr := imageIDFromName(ioctx, name)
	if idErr != nil {
		return fmt.Errorf("%w: %s", ErrImageNotFound, where)
	}
	if _, statErr := ioctx.Stat("rbd_header." + id); statErr != nil {
		return fmt.Errorf("%w: %s (id %s has no header object)", ErrImageNotFound, where, id)
	}
	return fmt.Errorf("%w: %s (id %s) exists but librbd cannot open it: its parent image or snapshot is missing (%v)",
		ErrParentMissing, where, id, err)
}

// imageIDFromName reads rbd_id.<name>, where RBD keeps a format 2 image's
// id as a length-prefixed string.
func imageIDFromName(ioctx *rados.IOContext, name string) (string, error) {
	buf := make([]byte, 128)
	n, err := ioctx.Read("rbd_id."+name, buf, 0)
	if err != nil {
		return "", err
	}
	if n < 4 {
		return "", fmt.Errorf("rbd_id.%s is too short", name)
	}
	l := int(binary.LittleEndian.Uint32(buf[:4]))
	if 4+l > n {
		return "", fmt.Errorf("rbd_id.%s is malformed", name)
	}
	return string(buf[4 : 4+l]), nil
}
