package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/google/uuid"

	"github.com/lifeboat-backup/lifeboat/test/csidriver"
)

// The real path. When the stack runs csi-provisioner and csi-snapshotter
// for the Sim's driver in front of lbcsi (Options.LiveDriver ==
// Options.Driver), objects fabricated for that driver would race with them
// over the same CSI request names. The Sim then
//   - creates its PVCs pre-bound (spec.volumeName set at creation), which
//     csi-provisioner leaves alone, and writes image, journal and PV (with
//     reclaim policy Retain, so that csi-provisioner never deletes it)
//     itself as before (the volume's features stay Options.VolumeFeatures);
//   - takes snapshots the real way: it creates the VolumeSnapshot and waits
//     for snapshot-controller, csi-snapshotter and lbcsi, then adds what
//     Velero adds; DeleteSnapshot goes through them too.

// live reports whether real sidecars serve the Sim's driver.
func (s *Sim) live() bool { return s.opts.LiveDriver != "" && s.opts.LiveDriver == s.opts.Driver }

// liveTimeout bounds each wait for the controllers.
const liveTimeout = 3 * time.Minute

func waitFor(ctx context.Context, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, liveTimeout)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, cond); err != nil {
		return fmt.Errorf("sim: waiting for %s: %w", what, err)
	}
	return nil
}

// ensureCSIConfig adds the Sim's clusterID to lbcsi's config (the contract's
// file, Options.CSIConfig) unless it is there already.
func (s *Sim) ensureCSIConfig() error {
	if s.opts.CSIConfig == "" {
		return nil
	}
	_, err := csidriver.ReadConfig(s.opts.CSIConfig, s.opts.ClusterID)
	if !errors.Is(err, csidriver.ErrNoCluster) {
		return err
	}
	mons, err := s.conn.GetConfigOption("mon_host")
	if err != nil {
		return fmt.Errorf("mon_host: %w", err)
	}
	c := csidriver.ClusterInfo{ClusterID: s.opts.ClusterID, Monitors: []string{mons}}
	c.RBD.RadosNamespace = s.opts.RadosNamespace
	return csidriver.SetCluster(s.opts.CSIConfig, c)
}

// createSnapshotLive creates the VolumeSnapshot Velero would, waits until
// it is ready, then adds Velero's labels and annotations and makes the
// content Retain, as Velero's class does.
func (s *Sim) createSnapshotLive(ctx context.Context, v *Volume, backup string) (*Snapshot, error) {
	if err := s.ensureSnapshotClass(ctx); err != nil {
		return nil, fmt.Errorf("volumesnapshotclass: %w", err)
	}
	var labels map[string]string
	if backup != "" {
		labels = map[string]string{VeleroBackupNameLabel: backup}
	}
	class, pvc := s.opts.SnapshotClass, v.PVC
	vss := s.Snap.SnapshotV1().VolumeSnapshots(v.Namespace)
	vs, err := vss.Create(ctx, &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "velero-" + v.PVC + "-", Namespace: v.Namespace, Labels: labels},
		Spec: snapv1.VolumeSnapshotSpec{
			Source:                  snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: &pvc},
			VolumeSnapshotClassName: &class,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create volumesnapshot for %s/%s: %w", v.Namespace, v.PVC, err)
	}
	var lastErr string
	err = waitFor(ctx, "volumesnapshot "+v.Namespace+"/"+vs.Name+" to be ready", func(ctx context.Context) (bool, error) {
		cur, err := vss.Get(ctx, vs.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		st := cur.Status
		if st != nil && st.Error != nil && st.Error.Message != nil {
			lastErr = *st.Error.Message
		}
		return st != nil && st.ReadyToUse != nil && *st.ReadyToUse && st.BoundVolumeSnapshotContentName != nil, nil
	})
	if err != nil {
		_ = vss.Delete(context.WithoutCancel(ctx), vs.Name, metav1.DeleteOptions{})
		return nil, fmt.Errorf("%w (last error: %q)", err, lastErr)
	}
	snap, err := s.LookupSnapshot(ctx, v.Namespace, vs.Name)
	if err != nil {
		return nil, err
	}
	if snap.Source == nil {
		snap.Source = v
	}
	content := map[string]any{"metadata": map[string]any{"labels": labels},
		"spec": map[string]any{"deletionPolicy": snapv1.VolumeSnapshotContentRetain}}
	if err := s.patchContent(ctx, snap.ContentName, content); err != nil {
		return nil, err
	}
	if err := s.annotateVelero(ctx, snap); err != nil {
		return nil, err
	}
	return snap, nil
}

func (s *Sim) patchContent(ctx context.Context, name string, patch map[string]any) error {
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = s.Snap.SnapshotV1().VolumeSnapshotContents().Patch(ctx, name, types.MergePatchType, b, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("volumesnapshotcontent %s: %w", name, err)
	}
	return nil
}

// deleteSnapshotLive deletes a snapshot through the controllers: the
// content is switched to Delete, the VolumeSnapshot (or, without one, the
// content) deleted, and the content waited for - csi-snapshotter has then
// had lbcsi delete the image and journal. It reports whether the clone
// stayed in the RBD trash.
func (s *Sim) deleteSnapshotLive(ctx context.Context, snap *Snapshot) (bool, error) {
	err := s.patchContent(ctx, snap.ContentName, map[string]any{"spec": map[string]any{"deletionPolicy": snapv1.VolumeSnapshotContentDelete}})
	if err != nil {
		return false, err
	}
	if snap.VSName != "" {
		err = s.Snap.SnapshotV1().VolumeSnapshots(snap.VSNamespace).Delete(ctx, snap.VSName, metav1.DeleteOptions{})
	} else {
		err = s.Snap.SnapshotV1().VolumeSnapshotContents().Delete(ctx, snap.ContentName, metav1.DeleteOptions{})
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("delete snapshot %s: %w", snap.ContentName, err)
	}
	err = waitFor(ctx, "volumesnapshotcontent "+snap.ContentName+" to go", func(ctx context.Context) (bool, error) {
		_, err := s.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, snap.ContentName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	if err != nil {
		return false, err
	}
	if snap.ImageID == "" {
		return false, nil
	}
	return s.InTrash(snap.ImageID)
}

// preBind names the PV of a fabricated claim before the claim exists, so
// that csi-provisioner, which only provisions unbound claims, leaves it
// alone. "" when no sidecars serve the driver.
func (s *Sim) preBind(claim *corev1.PersistentVolumeClaim) string {
	if !s.live() {
		return ""
	}
	name := "pvc-" + uuid.NewString()
	claim.Spec.VolumeName = name
	return name
}
