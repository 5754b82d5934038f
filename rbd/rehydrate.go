package rbd

import (
	"errors"
	"fmt"

	"github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"
)

// Rehydration: after the Ceph cluster a CSI snapshot lived in is lost,
// lifeboat recreates in a new cluster what ceph-csi would have left for
// that snapshot (an image with a snapshot of the same name, and the journal
// object csi.snap.<uuid>), so that the snapshot's handle resolves again.

// MetaBackupID is the image-meta key lifeboat sets on an image it
// rehydrated: the backup it holds. An image without it is not lifeboat's
// to overwrite.
const MetaBackupID = "lifeboat.backup-id"

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

// PoolID returns the id of a pool, wrapping ErrPoolNotFound.
func (c *Cluster) PoolID(name string) (int64, error) {
	id, err := c.conn.GetPoolByName(name)
	if err != nil {
		if errors.Is(err, rados.ErrNotFound) {
			return 0, fmt.Errorf("%w: no pool %q in %s", ErrPoolNotFound, name, c.Config.where())
		}
		return 0, fmt.Errorf("looking up pool %q in %s: %w", name, c.Config.where(), err)
	}
	return id, nil
}

// EnsureNamespace creates a RADOS namespace for RBD in pool if missing
// (`rbd namespace create`); "" is the default namespace, always there.
func (c *Cluster) EnsureNamespace(pool, namespace string) error {
	if namespace == "" {
		return nil
	}
	ioctx, err := c.IOContext(pool, "")
	if err != nil {
		return err
	}
	defer ioctx.Destroy()
	ok, err := librbd.NamespaceExists(ioctx, namespace)
	if err != nil {
		return fmt.Errorf("looking up RADOS namespace %s/%s: %w", pool, namespace, err)
	}
	if ok {
		return nil
	}
	if err := librbd.NamespaceCreate(ioctx, namespace); err != nil && !errors.Is(err, rados.ErrObjectExists) {
		return fmt.Errorf("creating RADOS namespace %s/%s: %w", pool, namespace, err)
	}
	return nil
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

// ImageMeta reads one image-meta key ("" when unset); ErrImageNotFound
// when the image does not exist.
func (c *Cluster) ImageMeta(pool, namespace, image, key string) (string, error) {
	ioctx, err := c.IOContext(pool, namespace)
	if err != nil {
		return "", err
	}
	defer ioctx.Destroy()
	spec := Ref{Pool: pool, Namespace: namespace, Image: image}.Spec()
	img, err := librbd.OpenImageReadOnly(ioctx, image, librbd.NoSnapshot)
	if err != nil {
		return "", openError(ioctx, image, spec, err)
	}
	defer img.Close()
	v, err := img.GetMetadata(key)
	if errors.Is(err, librbd.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading image-meta %s of %s: %w", key, spec, err)
	}
	return v, nil
}

// SetImageMeta sets one image-meta key.
func (c *Cluster) SetImageMeta(pool, namespace, image, key, value string) error {
	ioctx, err := c.IOContext(pool, namespace)
	if err != nil {
		return err
	}
	defer ioctx.Destroy()
	spec := Ref{Pool: pool, Namespace: namespace, Image: image}.Spec()
	img, err := librbd.OpenImage(ioctx, image, librbd.NoSnapshot)
	if err != nil {
		return openError(ioctx, image, spec, err)
	}
	defer img.Close()
	if err := img.SetMetadata(key, value); err != nil {
		return fmt.Errorf("setting image-meta %s of %s: %w", key, spec, err)
	}
	return nil
}

// PurgeImage removes an image and its user snapshots (unprotecting them):
// what `rbd snap purge` then `rbd rm` do. It fails, changing nothing
// more, if a snapshot has clones.
func (c *Cluster) PurgeImage(pool, namespace, image string) error {
	ioctx, err := c.IOContext(pool, namespace)
	if err != nil {
		return err
	}
	defer ioctx.Destroy()
	spec := Ref{Pool: pool, Namespace: namespace, Image: image}.Spec()
	img, err := librbd.OpenImage(ioctx, image, librbd.NoSnapshot)
	if errors.Is(err, librbd.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening %s: %w", spec, err)
	}
	snaps, err := img.GetSnapshotNames()
	if err != nil {
		img.Close()
		return fmt.Errorf("listing snapshots of %s: %w", spec, err)
	}
	for _, s := range snaps {
		snap := img.GetSnapshot(s.Name)
		if p, _ := snap.IsProtected(); p {
			if err := snap.Unprotect(); err != nil {
				img.Close()
				return fmt.Errorf("unprotecting %s@%s (does it have clones?): %w", spec, s.Name, err)
			}
		}
		if err := snap.Remove(); err != nil {
			img.Close()
			return fmt.Errorf("removing snapshot %s@%s: %w", spec, s.Name, err)
		}
	}
	img.Close()
	if err := librbd.RemoveImage(ioctx, image); err != nil && !errors.Is(err, librbd.ErrNotFound) {
		return fmt.Errorf("removing %s: %w", spec, err)
	}
	return nil
}

// Pools maps every pool's name to its id.
func (c *Cluster) Pools() (map[string]int64, error) {
	names, err := c.conn.ListPools()
	if err != nil {
		return nil, fmt.Errorf("listing pools in %s: %w", c.Config.where(), err)
	}
	out := map[string]int64{}
	for _, n := range names {
		id, err := c.PoolID(n)
		if err != nil {
			return nil, err
		}
		out[n] = id
	}
	return out, nil
}
