package sim

import (
	"context"
	"errors"
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	if err := s.DeleteNamespace(ctx, namespace); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
