package sim

import (
	"context"
	"errors"
	"fmt"
	"sort"

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
// PVCs and PVs. It deletes first and strips the finalizers after, because
// once an object is being deleted no controller may add one back: the
// stack's real snapshot-controller and kube-controller-manager keep them
// on otherwise, and every object left behind is one they retry forever.
// Ceph is not touched: the caller removes its images.
func (s *Sim) PurgeObjects(ctx context.Context, namespace string) error {
	var errs []error
	add := func(what string, err error) {
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	unfinalize := []byte(`{"metadata":{"finalizers":null}}`)
	retain := []byte(`{"spec":{"deletionPolicy":"Retain"}}`)
	opts := metav1.DeleteOptions{}

	vss := s.Snap.SnapshotV1().VolumeSnapshots(namespace)
	if l, err := vss.List(ctx, metav1.ListOptions{}); err == nil {
		for _, o := range l.Items {
			add("volumesnapshot "+namespace+"/"+o.Name, vss.Delete(ctx, o.Name, opts))
			_, err := vss.Patch(ctx, o.Name, types.MergePatchType, unfinalize, metav1.PatchOptions{})
			add("volumesnapshot "+namespace+"/"+o.Name, err)
		}
	} else {
		add("listing volumesnapshots", err)
	}
	vscs := s.Snap.SnapshotV1().VolumeSnapshotContents()
	if l, err := vscs.List(ctx, metav1.ListOptions{}); err == nil {
		for _, o := range l.Items {
			if o.Spec.Driver != s.opts.Driver && o.Spec.VolumeSnapshotRef.Namespace != namespace {
				continue
			}
			_, err := vscs.Patch(ctx, o.Name, types.MergePatchType, retain, metav1.PatchOptions{})
			add("volumesnapshotcontent "+o.Name, err)
			add("volumesnapshotcontent "+o.Name, vscs.Delete(ctx, o.Name, opts))
			_, err = vscs.Patch(ctx, o.Name, types.MergePatchType, unfinalize, metav1.PatchOptions{})
			add("volumesnapshotcontent "+o.Name, err)
		}
	} else {
		add("listing volumesnapshotcontents", err)
	}
	pvcs := s.Kube.CoreV1().PersistentVolumeClaims(namespace)
	if l, err := pvcs.List(ctx, metav1.ListOptions{}); err == nil {
		for _, o := range l.Items {
			add("pvc "+namespace+"/"+o.Name, pvcs.Delete(ctx, o.Name, opts))
			_, err := pvcs.Patch(ctx, o.Name, types.MergePatchType, unfinalize, metav1.PatchOptions{})
			add("pvc "+namespace+"/"+o.Name, err)
		}
	} else {
		add("listing pvcs", err)
	}
	pvs := s.Kube.CoreV1().PersistentVolumes()
	if l, err := pvs.List(ctx, metav1.ListOptions{}); err == nil {
		for _, o := range l.Items {
			ours := o.Spec.CSI != nil && o.Spec.CSI.Driver == s.opts.Driver
			if !ours && (o.Spec.ClaimRef == nil || o.Spec.ClaimRef.Namespace != namespace) {
				continue
			}
			// Retain: the caller removes the images, no provisioner must.
			_, err := pvs.Patch(ctx, o.Name, types.MergePatchType, []byte(`{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}`), metav1.PatchOptions{})
			add("pv "+o.Name, err)
			add("pv "+o.Name, pvs.Delete(ctx, o.Name, opts))
			_, err = pvs.Patch(ctx, o.Name, types.MergePatchType, unfinalize, metav1.PatchOptions{})
			add("pv "+o.Name, err)
		}
	} else {
		add("listing pvs", err)
	}
	return errors.Join(errs...)
}
