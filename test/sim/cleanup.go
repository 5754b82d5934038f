package sim

import (
	"context"
	"errors"
	"fmt"
	"sort"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// CleanupNamespace deletes every simulated snapshot (VolumeSnapshots bound
// to this Sim's driver) and volume (PVCs bound to this Sim's driver) in a
// Kubernetes namespace - Kubernetes objects, RBD images and journal entries
// - then removes the images this left in the RBD trash once nothing hangs
// from them, and finally the namespace itself. Orphaned snapshots (see
// DeleteContent) cannot be found from a namespace and are not touched.
func (s *Sim) CleanupNamespace(ctx context.Context, namespace string) error {
	var errs []error
	var trashIDs []string

	vsl, err := s.Snap.SnapshotV1().VolumeSnapshots(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	// Newest first: snapshots of restored volumes before older ones.
	sort.Slice(vsl.Items, func(i, j int) bool {
		return vsl.Items[j].CreationTimestamp.Before(&vsl.Items[i].CreationTimestamp)
	})
	for _, vs := range vsl.Items {
		snap, err := s.LookupSnapshot(ctx, namespace, vs.Name)
		if err != nil {
			continue // not ours (other driver, unbound, ...)
		}
		if _, err := s.DeleteSnapshot(ctx, snap); err != nil {
			errs = append(errs, fmt.Errorf("snapshot %s/%s: %w", namespace, vs.Name, err))
		}
		trashIDs = append(trashIDs, snap.ImageID)
	}

	pvcs, err := s.Kube.CoreV1().PersistentVolumeClaims(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	// Restored volumes (with a dataSource) before the others.
	sort.SliceStable(pvcs.Items, func(i, j int) bool {
		return pvcs.Items[i].Spec.DataSource != nil && pvcs.Items[j].Spec.DataSource == nil
	})
	for _, pvc := range pvcs.Items {
		v, err := s.LookupVolume(ctx, namespace, pvc.Name)
		if err != nil {
			continue
		}
		if _, err := s.DeleteVolume(ctx, v); err != nil {
			errs = append(errs, fmt.Errorf("volume %s/%s: %w", namespace, pvc.Name, err))
		}
		trashIDs = append(trashIDs, v.ID)
	}

	// Trashed images go once their children are gone: repeat while
	// progressing.
	for progress := true; progress && len(trashIDs) > 0; {
		progress = false
		var left []string
		var last error
		for _, id := range trashIDs {
			if err := s.RemoveTrashed(ctx, id); err != nil {
				left, last = append(left, id), err
			} else {
				progress = true
			}
		}
		if trashIDs = left; !progress {
			errs = append(errs, last)
		}
	}
	// What is not the Sim's (unbound, another driver's) must not outlive
	// the namespace either.
	if err := s.PurgeObjects(ctx, namespace); err != nil {
		errs = append(errs, err)
	}
	if err := s.DeleteNamespace(ctx, namespace); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// PurgeObjects deletes, whatever state they are in, the Kubernetes objects
// a test may leave in namespace or on this Sim's driver: VolumeSnapshots,
// VolumeSnapshotContents (switched to Retain first: nothing reaches Ceph),
// PVCs and PVs (Retain too). Ceph is not touched: the caller removes its
// images.
func (s *Sim) PurgeObjects(ctx context.Context, namespace string) error {
	var errs []error
	retain := []byte(`{"spec":{"deletionPolicy":"Retain"}}`)
	pvRetain := []byte(`{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}`)
	vss := s.Snap.SnapshotV1().VolumeSnapshots(namespace)
	if l, err := vss.List(ctx, metav1.ListOptions{}); err == nil {
		for _, o := range l.Items {
			errs = append(errs, purge[*snapv1.VolumeSnapshot](ctx, vss, "volumesnapshot "+namespace+"/", o.Name, nil))
		}
	} else {
		errs = append(errs, err)
	}
	vscs := s.Snap.SnapshotV1().VolumeSnapshotContents()
	if l, err := vscs.List(ctx, metav1.ListOptions{}); err == nil {
		for _, o := range l.Items {
			if o.Spec.Driver == s.opts.Driver || o.Spec.VolumeSnapshotRef.Namespace == namespace {
				errs = append(errs, purge[*snapv1.VolumeSnapshotContent](ctx, vscs, "volumesnapshotcontent ", o.Name, retain))
			}
		}
	} else {
		errs = append(errs, err)
	}
	pvcs := s.Kube.CoreV1().PersistentVolumeClaims(namespace)
	if l, err := pvcs.List(ctx, metav1.ListOptions{}); err == nil {
		for _, o := range l.Items {
			errs = append(errs, purge[*corev1.PersistentVolumeClaim](ctx, pvcs, "pvc "+namespace+"/", o.Name, nil))
		}
	} else {
		errs = append(errs, err)
	}
	pvs := s.Kube.CoreV1().PersistentVolumes()
	if l, err := pvs.List(ctx, metav1.ListOptions{}); err == nil {
		for _, o := range l.Items {
			ours := o.Spec.CSI != nil && o.Spec.CSI.Driver == s.opts.Driver
			if ours || (o.Spec.ClaimRef != nil && o.Spec.ClaimRef.Namespace == namespace) {
				errs = append(errs, purge[*corev1.PersistentVolume](ctx, pvs, "pv ", o.Name, pvRetain))
			}
		}
	} else {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// purgeable is what purge needs of a typed client.
type purgeable[T any] interface {
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error)
}

// purge merge-patches pre (if any), deletes, and then strips the
// finalizers: once an object is being deleted no controller may add one
// back, while stripped first the stack's real snapshot-controller and
// kube-controller-manager put theirs back, and every object left behind is
// one they retry for ever. Missing is success.
func purge[T any](ctx context.Context, c purgeable[T], kind, name string, pre []byte) error {
	var err error
	if pre != nil {
		_, err = c.Patch(ctx, name, types.MergePatchType, pre, metav1.PatchOptions{})
	}
	if err == nil {
		err = c.Delete(ctx, name, metav1.DeleteOptions{})
	}
	if err == nil {
		_, err = c.Patch(ctx, name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("%s%s: %w", kind, name, err)
	}
	return nil
}
