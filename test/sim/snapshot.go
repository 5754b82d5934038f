package sim

import (
	"encoding/json"

	"context"
	"errors"
	"fmt"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"time"

	"github.com/ceph/go-ceph/rbd"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"github.com/lifeboat-backup/lifeboat/test/csidriver"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Snapshot is a ceph-csi RBD snapshot with its VolumeSnapshot and
// VolumeSnapshotContent.
type Snapshot struct {
	ImageName   string // RBD clone csi-snap-<uuid>
	SnapName    string // RBD snapshot on the clone, also csi-snap-<uuid>
	UUID        string // journal UUID
	Handle      string // CSI snapshot handle (VSC status.snapshotHandle)
	ImageID     string // RBD image ID of the clone
	RequestName string // CSI CreateSnapshot name, snapshot-<VS uid>
	ContentName string // VolumeSnapshotContent snapcontent-<VS uid>
	VSNamespace string
	VSName      string
	Backup      string // Velero backup name ("" when none)
	Size        uint64 // restore size in bytes
	CreatedAt   time.Time
	// ParentImage is the source image (journal csi.source) and
	// ParentSnapID the ID of the temporary snapshot, now in the parent's
	// trash snapshot namespace, that the clone hangs from.
	ParentImage  string
	ParentSnapID uint64
	Source       *Volume // nil when it could not be resolved (LookupSnapshot)
}

// CreateSnapshot does what snapshot-controller, csi-snapshotter, ceph-csi
// v3 CreateSnapshot and Velero's CSI plugin do for a backup of v:
//
//   - VolumeSnapshotClass Options.SnapshotClass (Velero label, Retain) if
//     missing;
//   - VolumeSnapshot generateName velero-<pvc>- in the PVC's namespace,
//     label velero.io/backup-name=<backup> (omitted when backup is "");
//   - VolumeSnapshotContent snapcontent-<VS uid> (Retain, volumeHandle, ref
//     with uid, label velero.io/backup-name);
//   - in Ceph: journal csi.snaps.<instance> (csi.snap.snapshot-<VS uid> ->
//     uuid) and csi.snap.<uuid> (csi.imagename, csi.snapname, csi.source,
//     csi.imageid); snapshot csi-snap-<uuid> on the volume; clone v2 of it
//     to image csi-snap-<uuid> with features layering,deep-flatten; removal
//     of the temporary snapshot (it moves to the parent's trash snapshot
//     namespace); snapshot csi-snap-<uuid> on the clone;
//   - VSC status (snapshotHandle, readyToUse, restoreSize, creationTime in
//     unix ns), VS status (boundVolumeSnapshotContentName, readyToUse,
//     restoreSize, creationTime) and Velero's VS annotations.
func (s *Sim) CreateSnapshot(ctx context.Context, v *Volume, backup string) (_ *Snapshot, err error) {
	if err := timeout(ctx); err != nil {
		return nil, err
	}
	if s.live() {
		return s.createSnapshotLive(ctx, v, backup)
	}
	if err := s.ensureSnapshotClass(ctx); err != nil {
		return nil, fmt.Errorf("volumesnapshotclass: %w", err)
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	bg := context.WithoutCancel(ctx)
	var labels map[string]string
	if backup != "" {
		labels = map[string]string{VeleroBackupNameLabel: backup}
	}
	class := s.opts.SnapshotClass
	pvcName := v.PVC
	vss := s.Snap.SnapshotV1().VolumeSnapshots(v.Namespace)
	vs, err := vss.Create(ctx, &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "velero-" + v.PVC + "-", Namespace: v.Namespace, Labels: labels},
		Spec: snapv1.VolumeSnapshotSpec{
			Source:                  snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: &pvcName},
			VolumeSnapshotClassName: &class,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create volumesnapshot for %s/%s: %w", v.Namespace, v.PVC, err)
	}
	undo = append(undo, func() { _ = vss.Delete(bg, vs.Name, metav1.DeleteOptions{}) })

	snap := &Snapshot{
		RequestName: "snapshot-" + string(vs.UID),
		ContentName: "snapcontent-" + string(vs.UID),
		VSNamespace: v.Namespace,
		VSName:      vs.Name,
		Backup:      backup,
		Size:        v.Size,
		ParentImage: v.Name,
		Source:      v,
	}
	handle := v.Handle
	fs := corev1.PersistentVolumeFilesystem
	vscs := s.Snap.SnapshotV1().VolumeSnapshotContents()
	content := &snapv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{
			Name:   snap.ContentName,
			Labels: labels,
			Annotations: map[string]string{
				"snapshot.storage.kubernetes.io/deletion-secret-name":      RookSecret,
				"snapshot.storage.kubernetes.io/deletion-secret-namespace": s.opts.RookNamespace,
			},
		},
		Spec: snapv1.VolumeSnapshotContentSpec{
			VolumeSnapshotRef: corev1.ObjectReference{
				Kind: "VolumeSnapshot", APIVersion: "snapshot.storage.k8s.io/v1",
				Namespace: vs.Namespace, Name: vs.Name, UID: vs.UID, ResourceVersion: vs.ResourceVersion,
			},
			DeletionPolicy:          snapv1.VolumeSnapshotContentRetain,
			Driver:                  s.opts.Driver,
			VolumeSnapshotClassName: &class,
			Source:                  snapv1.VolumeSnapshotContentSource{VolumeHandle: &handle},
			SourceVolumeMode:        &fs,
		},
	}
	vsc, err := s.createContent(ctx, content)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = vscs.Delete(bg, vsc.Name, metav1.DeleteOptions{}) })

	// ceph-csi: reserve, then doSnapshotClone.
	sj := csidriver.SnapshotJournal
	if snap.UUID, err = s.reserve(sj, snap.RequestName, SnapshotPrefix, v.Name, ""); err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = sj.Undo(s.ioctx, s.opts.InstanceID, snap.UUID, snap.RequestName) })
	snap.ImageName = sj.ImageName(SnapshotPrefix, snap.UUID)
	snap.SnapName = snap.ImageName
	if snap.Handle, err = s.handle(snap.UUID); err != nil {
		return nil, err
	}
	if err = csidriver.SnapshotClone(s.ioctx, v.Name, snap.ImageName); err != nil {
		return nil, err
	}
	undo = append(undo, func() { _, _ = csidriver.DeleteSnapshotImage(s.ioctx, snap.ImageName) })
	clone, err := rbd.OpenImageReadOnly(s.ioctx, snap.ImageName, rbd.NoSnapshot)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", snap.ImageName, err)
	}
	snap.ImageID, err = clone.GetId()
	if err == nil {
		var p *rbd.ParentInfo
		if p, err = clone.GetParent(); err == nil {
			snap.ParentSnapID = p.Snap.ID
		}
	}
	var ts rbd.Timespec
	if err == nil {
		var id uint64
		if id, err = clone.GetSnapID(snap.SnapName); err == nil {
			ts, err = clone.GetSnapTimestamp(id)
		}
	}
	clone.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", snap.ImageName, err)
	}
	snap.CreatedAt = time.Unix(ts.Sec, ts.Nsec)
	if err = sj.StoreImageID(s.ioctx, snap.UUID, snap.ImageID); err != nil {
		return nil, err
	}

	// csi-snapshotter's status update.
	ready := true
	created := snap.CreatedAt.UnixNano()
	size := int64(snap.Size)
	snapHandle := snap.Handle
	status := &snapv1.VolumeSnapshotContentStatus{
		SnapshotHandle: &snapHandle, CreationTime: &created, RestoreSize: &size, ReadyToUse: &ready,
	}
	// Others (lifeboat's agent) may annotate the object meanwhile: retry on
	// conflict with a fresh copy, as csi-snapshotter does.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := vscs.Get(ctx, vsc.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status = status
		_, err = vscs.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("volumesnapshotcontent %s status: %w", vsc.Name, err)
	}
	// snapshot-controller's status update.
	contentName := snap.ContentName
	qty := resource.NewQuantity(size, resource.BinarySI)
	// A real snapshot-controller may be updating it too: fresh copies,
	// retried on conflicts.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := vss.Get(ctx, vs.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status = &snapv1.VolumeSnapshotStatus{
			BoundVolumeSnapshotContentName: &contentName,
			CreationTime:                   &metav1.Time{Time: snap.CreatedAt},
			ReadyToUse:                     &ready,
			RestoreSize:                    qty,
		}
		_, err = vss.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("volumesnapshot %s/%s status: %w", v.Namespace, snap.VSName, err)
	}
	snap.VSName = vs.Name
	if err := s.annotateVelero(ctx, snap); err != nil {
		return nil, err
	}
	return snap, nil
}

// annotateVelero adds the annotations Velero's CSI plugin puts on a
// VolumeSnapshot once it is ready, merge-patched: an Update could conflict
// with anyone else touching the object.
func (s *Sim) annotateVelero(ctx context.Context, snap *Snapshot) error {
	qty := resource.NewQuantity(int64(snap.Size), resource.BinarySI)
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		VeleroSnapshotHandleAnnotation: snap.Handle,
		VeleroDriverNameAnnotation:     s.opts.Driver,
		VeleroRestoreSizeAnnotation:    qty.String(),
		VeleroVSCDeletionPolicyAnnot:   string(snapv1.VolumeSnapshotContentRetain),
	}}})
	if err != nil {
		return err
	}
	_, err = s.Snap.SnapshotV1().VolumeSnapshots(snap.VSNamespace).Patch(ctx, snap.VSName, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("volumesnapshot %s/%s annotations: %w", snap.VSNamespace, snap.VSName, err)
	}
	return nil
}

// createContent creates the VolumeSnapshotContent of a dynamic snapshot.
// A real snapshot-controller may have created it first (same name,
// snapcontent-<VS uid>): that one is adopted, with the labels and
// annotations merged in, when it refers to the same VolumeSnapshot.
func (s *Sim) createContent(ctx context.Context, c *snapv1.VolumeSnapshotContent) (*snapv1.VolumeSnapshotContent, error) {
	vscs := s.Snap.SnapshotV1().VolumeSnapshotContents()
	vsc, err := vscs.Create(ctx, c, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return nil, fmt.Errorf("create volumesnapshotcontent %s: %w", c.Name, err)
		}
		return vsc, nil
	}
	cur, err := vscs.Get(ctx, c.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("volumesnapshotcontent %s: %w", c.Name, err)
	}
	if cur.Spec.VolumeSnapshotRef.UID != c.Spec.VolumeSnapshotRef.UID {
		return nil, fmt.Errorf("volumesnapshotcontent %s exists for another VolumeSnapshot (uid %s)", c.Name, cur.Spec.VolumeSnapshotRef.UID)
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": c.Labels, "annotations": c.Annotations}})
	if err != nil {
		return nil, err
	}
	if vsc, err = vscs.Patch(ctx, c.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return nil, fmt.Errorf("volumesnapshotcontent %s: %w", c.Name, err)
	}
	return vsc, nil
}

// CreateVolumeFromSnapshot restores snap into a new PVC like ceph-csi: the
// PVC (dataSource = the VolumeSnapshot when in the same namespace), a
// volume journal reservation, a clone v2 of csi-snap-X@csi-snap-X into
// csi-vol-<uuid> with Options.VolumeFeatures, and the bound PV.
func (s *Sim) CreateVolumeFromSnapshot(ctx context.Context, snap *Snapshot, namespace, pvc string) (*Volume, error) {
	var ds *corev1.TypedLocalObjectReference
	if snap.VSName != "" && namespace == snap.VSNamespace {
		group := "snapshot.storage.k8s.io"
		ds = &corev1.TypedLocalObjectReference{APIGroup: &group, Kind: "VolumeSnapshot", Name: snap.VSName}
	}
	return s.provision(ctx, namespace, pvc, snap.Size, ds, func(name string) error {
		return csidriver.Clone(s.ioctx, snap.ImageName, snap.SnapName, s.ioctx, name, s.features)
	})
}

// LookupSnapshot resolves a VolumeSnapshot from the objects: VS status ->
// VSC status.snapshotHandle -> journal csi.snap.<uuid>. Source is looked up
// from the VS's PVC and left nil when that fails.
func (s *Sim) LookupSnapshot(ctx context.Context, namespace, vsName string) (*Snapshot, error) {
	vs, err := s.Snap.SnapshotV1().VolumeSnapshots(namespace).Get(ctx, vsName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("volumesnapshot %s/%s: %w", namespace, vsName, err)
	}
	if vs.Status == nil || vs.Status.BoundVolumeSnapshotContentName == nil {
		return nil, fmt.Errorf("volumesnapshot %s/%s is not bound", namespace, vsName)
	}
	vsc, err := s.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, *vs.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if vsc.Status == nil || vsc.Status.SnapshotHandle == nil {
		return nil, fmt.Errorf("volumesnapshotcontent %s has no snapshot handle", vsc.Name)
	}
	snap, err := s.SnapshotFromHandle(ctx, *vsc.Status.SnapshotHandle)
	if err != nil {
		return nil, err
	}
	snap.ContentName = vsc.Name
	snap.VSNamespace, snap.VSName = namespace, vsName
	snap.Backup = vs.Labels[VeleroBackupNameLabel]
	if vsc.Status.RestoreSize != nil {
		snap.Size = uint64(*vsc.Status.RestoreSize)
	}
	if p := vs.Spec.Source.PersistentVolumeClaimName; p != nil {
		if v, err := s.LookupVolume(ctx, namespace, *p); err == nil && v.Name == snap.ParentImage {
			snap.Source = v
		}
	}
	return snap, nil
}

// SnapshotFromHandle resolves a snapshot handle through the journal alone
// (no Kubernetes objects needed: works for orphans).
func (s *Sim) SnapshotFromHandle(ctx context.Context, handle string) (*Snapshot, error) {
	h, err := s.parseHandle(handle)
	if err != nil {
		return nil, err
	}
	attrs, err := s.SnapshotJournal(h.UUID)
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{
		ImageName:   attrs[JournalImageName],
		UUID:        h.UUID,
		Handle:      handle,
		ImageID:     attrs[JournalImageID],
		RequestName: attrs[JournalSnapName],
		ParentImage: attrs[JournalSource],
	}
	if snap.ImageName == "" {
		snap.ImageName = SnapshotPrefix + h.UUID
	}
	snap.SnapName = snap.ImageName
	img, err := rbd.OpenImageReadOnly(s.ioctx, snap.ImageName, snap.SnapName)
	if err != nil {
		return nil, fmt.Errorf("open %s@%s: %w", snap.ImageName, snap.SnapName, err)
	}
	defer img.Close()
	if snap.Size, err = img.GetSize(); err != nil {
		return nil, err
	}
	if p, err := img.GetParent(); err == nil {
		snap.ParentSnapID = p.Snap.ID
	}
	if id, err := img.GetSnapID(snap.SnapName); err == nil {
		if ts, err := img.GetSnapTimestamp(id); err == nil {
			snap.CreatedAt = time.Unix(ts.Sec, ts.Nsec)
		}
	}
	return snap, nil
}

// ReadSnapshotSHA256 reads the whole snapshot csi-snap-X@csi-snap-X through
// the clone's parent (like `rbd export`) and returns its hex SHA-256.
func (s *Sim) ReadSnapshotSHA256(ctx context.Context, snap *Snapshot) (string, error) {
	return s.ImageSHA256(ctx, snap.ImageName, snap.SnapName)
}

// Flatten flattens the snapshot's clone (what ceph-csi does past its clone
// depth limit): it no longer has a parent and the parent's trash snapshot
// goes away when it was the last child.
func (s *Sim) Flatten(ctx context.Context, snap *Snapshot) error {
	img, err := rbd.OpenImage(s.ioctx, snap.ImageName, rbd.NoSnapshot)
	if err != nil {
		return fmt.Errorf("open %s: %w", snap.ImageName, err)
	}
	defer img.Close()
	if err := img.Flatten(); err != nil {
		return fmt.Errorf("rbd flatten %s: %w", snap.ImageName, err)
	}
	snap.ParentSnapID = 0
	return nil
}

// DeleteContent deletes the VolumeSnapshot and VolumeSnapshotContent
// objects but keeps the RBD image and journal: what Velero leaves after a
// backup with a Retain class, an orphan only the handle leads to.
func (s *Sim) DeleteContent(ctx context.Context, snap *Snapshot) error {
	var errs []error
	if s.live() && snap.ContentName != "" {
		// Whatever the class said, deleting must not reach Ceph.
		err := s.patchContent(ctx, snap.ContentName, map[string]any{"spec": map[string]any{"deletionPolicy": snapv1.VolumeSnapshotContentRetain}})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	// A real snapshot-controller puts finalizers on both (and may put them
	// back): strip them until the objects are gone.
	vss, vscs := s.Snap.SnapshotV1().VolumeSnapshots(snap.VSNamespace), s.Snap.SnapshotV1().VolumeSnapshotContents()
	if snap.VSName != "" {
		errs = append(errs, deleteGone(ctx, vss, "volumesnapshot "+snap.VSNamespace+"/", snap.VSName))
	}
	if snap.ContentName != "" {
		errs = append(errs, deleteGone(ctx, vscs, "volumesnapshotcontent ", snap.ContentName))
	}
	return errors.Join(errs...)
}

// deletable is what deleteGone needs of a typed client.
type deletable[T metav1.Object] interface {
	purgeable[T]
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
}

// deleteGone deletes an object and waits until it is gone, clearing its
// finalizers as often as a controller puts them back: the real
// snapshot-controller's, and kube-controller-manager's pvc- and
// pv-protection, which re-add theirs to an object not yet being deleted.
// Missing is success.
func deleteGone[T metav1.Object](ctx context.Context, c deletable[T], kind, name string) error {
	return waitFor(ctx, kind+name+" to go", func(ctx context.Context) (bool, error) {
		o, err := c.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if o.GetDeletionTimestamp() == nil {
			err = c.Delete(ctx, name, metav1.DeleteOptions{})
		}
		if err == nil && len(o.GetFinalizers()) > 0 {
			_, err = c.Patch(ctx, name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
		}
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			err = nil
		}
		return false, err
	})
}

// DeleteSnapshot deletes the objects (DeleteContent) and, like ceph-csi
// DeleteSnapshot (csidriver.DeleteSnapshotImage), the snapshot on the clone,
// the clone (it stays in the trash while restored volumes hang from it) and
// the journal reservation. Removing the clone lets librbd drop the parent's
// trash snapshot. It reports whether the clone stayed in the trash.
func (s *Sim) DeleteSnapshot(ctx context.Context, snap *Snapshot) (trashed bool, err error) {
	if s.live() && snap.ContentName != "" {
		trashed, err := s.deleteSnapshotLive(ctx, snap)
		if !apierrors.IsNotFound(err) {
			return trashed, err
		}
		// No content any more: what the real path cannot do, directly.
	}
	if err := s.DeleteContent(ctx, snap); err != nil {
		return false, err
	}
	if trashed, err = csidriver.DeleteSnapshotImage(s.ioctx, snap.ImageName); err != nil {
		return false, err
	}
	return trashed, csidriver.SnapshotJournal.Undo(s.ioctx, s.opts.InstanceID, snap.UUID, snap.RequestName)
}
