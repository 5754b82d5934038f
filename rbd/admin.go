package rbd

import (
	"errors"
	"fmt"

	"github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"
)

// Pools, RADOS namespaces, image-meta and removal: the librbd side of
// rehydration (recreating, in a new cluster, what ceph-csi left for a CSI
// snapshot; the journal side is in journal.go).

// MetaBackupID is the image-meta key lifeboat sets on an image it
// rehydrated: the backup it holds. An image without it is not lifeboat's
// to overwrite.
const MetaBackupID = "lifeboat.backup-id"

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

// ImageMeta reads one image-meta key ("" when unset); ErrImageNotFound
// when the image does not exist.
func (c *Cluster) ImageMeta(pool, namespace, image, key string) (string, error) {
	var v string
	err := c.withImage(pool, namespace, image, true, func(img *librbd.Image, spec string) error {
		var err error
		v, err = img.GetMetadata(key)
		if errors.Is(err, librbd.ErrNotFound) {
			v, err = "", nil
		}
		if err != nil {
			return fmt.Errorf("reading image-meta %s of %s: %w", key, spec, err)
		}
		return nil
	})
	return v, err
}

// SetImageMeta sets one image-meta key.
func (c *Cluster) SetImageMeta(pool, namespace, image, key, value string) error {
	return c.withImage(pool, namespace, image, false, func(img *librbd.Image, spec string) error {
		if err := img.SetMetadata(key, value); err != nil {
			return fmt.Errorf("setting image-meta %s of %s: %w", key, spec, err)
		}
		return nil
	})
}

// withImage opens pool/namespace/image at its head (read-only or not) for
// fn; ErrImageNotFound or ErrParentMissing when it cannot (see openError).
func (c *Cluster) withImage(pool, namespace, image string, readOnly bool, fn func(img *librbd.Image, spec string) error) error {
	ioctx, err := c.IOContext(pool, namespace)
	if err != nil {
		return err
	}
	defer ioctx.Destroy()
	spec := Ref{Pool: pool, Namespace: namespace, Image: image}.Spec()
	open := librbd.OpenImage
	if readOnly {
		open = librbd.OpenImageReadOnly
	}
	img, err := open(ioctx, image, librbd.NoSnapshot)
	if err != nil {
		return openError(ioctx, image, spec, err)
	}
	defer img.Close()
	return fn(img, spec)
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
