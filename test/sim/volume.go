package sim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/ceph/go-ceph/rbd"
	"github.com/lifeboat-backup/lifeboat/test/csidriver"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// chunkSize is the I/O size for fills and reads (one RBD object at the
// default order 22).
const chunkSize = 4 << 20

// discardAlign is librbd's default rbd_discard_granularity_bytes.
const discardAlign = 64 << 10

// Volume is a ceph-csi RBD volume bound to a PVC.
type Volume struct {
	Name        string // RBD image, csi-vol-<uuid>
	ID          string // RBD image ID
	UUID        string // journal UUID
	Handle      string // CSI volume handle (PV spec.csi.volumeHandle)
	RequestName string // CSI CreateVolume name, pvc-<PVC uid>; also the PV name
	PV          string
	Namespace   string // PVC namespace
	PVC         string
	Size        uint64 // bytes
	Pool        string
	RadosNS     string

	sim *Sim
}

// CreateVolume provisions a volume like external-provisioner + ceph-csi
// CreateVolume: the PVC (created first: its UID names the request), the
// journal reservation csi.volume.<uuid> (csi.imagename, csi.volname,
// csi.volume.owner, then csi.imageid), the image csi-vol-<uuid> (format 2,
// Options.VolumeFeatures) and the PV pvc-<uid> bound to the claim. size is
// rounded like ceph-csi does (MiB below 1 GiB, GiB above). The namespace is
// created if missing.
func (s *Sim) CreateVolume(ctx context.Context, namespace, pvc string, size uint64) (*Volume, error) {
	if size == 0 {
		return nil, errors.New("sim: zero volume size")
	}
	size = csidriver.RoundOffBytes(size)
	return s.provision(ctx, namespace, pvc, size, nil, func(name string) error {
		return csidriver.CreateImage(s.ioctx, name, size, s.features)
	})
}

// provision is the common part of CreateVolume and CreateVolumeFromSnapshot.
func (s *Sim) provision(ctx context.Context, namespace, pvcName string, size uint64,
	dataSource *corev1.TypedLocalObjectReference, makeImage func(name string) error) (vol *Volume, err error) {
	if err := timeout(ctx); err != nil {
		return nil, err
	}
	if err := s.ensureNamespace(ctx, namespace); err != nil {
		return nil, err
	}
	if err := s.ensureStorageClass(ctx); err != nil {
		return nil, fmt.Errorf("storageclass: %w", err)
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

	qty := *resource.NewQuantity(int64(size), resource.BinarySI)
	fs := corev1.PersistentVolumeFilesystem
	sc := s.opts.StorageClass
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name:      pvcName,
			Namespace: namespace,
			Annotations: map[string]string{
				"volume.beta.kubernetes.io/storage-provisioner": s.opts.Driver,
				"volume.kubernetes.io/storage-provisioner":      s.opts.Driver,
			},
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: qty}},
			StorageClassName: &sc,
			VolumeMode:       &fs,
			DataSource:       dataSource,
		},
	}
	if dataSource != nil {
		claim.Spec.DataSourceRef = &corev1.TypedObjectReference{APIGroup: dataSource.APIGroup, Kind: dataSource.Kind, Name: dataSource.Name}
	}
	preBound := s.preBind(claim)
	pvcs := s.Kube.CoreV1().PersistentVolumeClaims(namespace)
	claim, err = pvcs.Create(ctx, claim, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pvc %s/%s: %w", namespace, pvcName, err)
	}
	undo = append(undo, func() { _ = s.deletePVC(bg, namespace, pvcName) })

	v := &Volume{
		RequestName: "pvc-" + string(claim.UID),
		Namespace:   namespace,
		PVC:         pvcName,
		Size:        size,
		Pool:        s.opts.Pool,
		RadosNS:     s.opts.RadosNamespace,
		sim:         s,
	}
	if preBound != "" {
		v.RequestName = preBound
	}
	v.PV = v.RequestName
	vj := csidriver.VolumeJournal
	if v.UUID, err = s.reserve(vj, v.RequestName, VolumePrefix, "", namespace); err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = vj.Undo(s.ioctx, s.opts.InstanceID, v.UUID, v.RequestName) })
	v.Name = vj.ImageName(VolumePrefix, v.UUID)
	if v.Handle, err = s.handle(v.UUID); err != nil {
		return nil, err
	}
	if err = makeImage(v.Name); err != nil {
		return nil, err
	}
	undo = append(undo, func() { _, _ = csidriver.DeleteImage(s.ioctx, v.Name) })
	if v.ID, err = s.imageID(v.Name); err != nil {
		return nil, err
	}
	if err = vj.StoreImageID(s.ioctx, v.UUID, v.ID); err != nil {
		return nil, err
	}

	// The PV external-provisioner creates from ceph-csi's answer.
	attrs := map[string]string{
		"clusterID":     s.opts.ClusterID,
		"pool":          s.opts.Pool,
		"journalPool":   s.opts.Pool,
		"imageFormat":   "2",
		"imageFeatures": s.opts.VolumeFeatures,
		"imageName":     v.Name,
		"storage.kubernetes.io/csiProvisionerIdentity": provisionerIdentity + "-" + s.opts.Driver,
	}
	if s.opts.RadosNamespace != "" {
		attrs["radosNamespace"] = s.opts.RadosNamespace
	}
	rn := s.opts.RookNamespace
	// With live sidecars, Retain keeps csi-provisioner from deleting the
	// image of a released PV behind DeleteVolume's back.
	reclaim := corev1.PersistentVolumeReclaimDelete
	if preBound != "" {
		reclaim = corev1.PersistentVolumeReclaimRetain
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name: v.PV,
			Annotations: map[string]string{
				"pv.kubernetes.io/provisioned-by":                            s.opts.Driver,
				"volume.kubernetes.io/provisioner-deletion-secret-name":      RookSecret,
				"volume.kubernetes.io/provisioner-deletion-secret-namespace": rn,
			},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: qty},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              sc,
			VolumeMode:                    &fs,
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: namespace, Name: pvcName, UID: claim.UID, ResourceVersion: claim.ResourceVersion,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver:                    s.opts.Driver,
				VolumeHandle:              v.Handle,
				FSType:                    "ext4",
				VolumeAttributes:          attrs,
				ControllerExpandSecretRef: &corev1.SecretReference{Name: RookSecret, Namespace: rn},
				NodeStageSecretRef:        &corev1.SecretReference{Name: RookNodeSecret, Namespace: rn},
			}},
		},
	}
	pvs := s.Kube.CoreV1().PersistentVolumes()
	if _, err = pvs.Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create pv %s: %w", v.PV, err)
	}
	undo = append(undo, func() { _ = s.deletePV(bg, v.PV) })
	// What the PV controller does to bind the pair. A real
	// kube-controller-manager may be doing the same at once: every update
	// starts from a fresh copy and is retried on conflicts.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pvs.Get(ctx, v.PV, metav1.GetOptions{})
		if err != nil || cur.Status.Phase == corev1.VolumeBound {
			return err
		}
		cur.Status.Phase = corev1.VolumeBound
		_, err = pvs.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pv %s status: %w", v.PV, err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pvcs.Get(ctx, pvcName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.Spec.VolumeName != "" && cur.Spec.VolumeName != v.PV {
			return fmt.Errorf("bound to %s meanwhile", cur.Spec.VolumeName)
		}
		cur.Spec.VolumeName = v.PV
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations["pv.kubernetes.io/bind-completed"] = "yes"
		cur.Annotations["pv.kubernetes.io/bound-by-controller"] = "yes"
		_, err = pvcs.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bind pvc %s/%s: %w", namespace, pvcName, err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pvcs.Get(ctx, pvcName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status = corev1.PersistentVolumeClaimStatus{
			Phase:       corev1.ClaimBound,
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: qty},
		}
		_, err = pvcs.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pvc %s/%s status: %w", namespace, pvcName, err)
	}
	return v, nil
}

// provisionerIdentity imitates external-provisioner's identity prefix
// ("<start time ms>-<random>").
var provisionerIdentity = fmt.Sprintf("%d-%d", time.Now().UnixMilli(), time.Now().UnixNano()%10000)

// LookupVolume finds the volume of a bound PVC from the objects themselves:
// PVC spec.volumeName -> PV csi.volumeHandle -> journal csi.volume.<uuid>.
func (s *Sim) LookupVolume(ctx context.Context, namespace, pvc string) (*Volume, error) {
	claim, err := s.Kube.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, pvc, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("pvc %s/%s: %w", namespace, pvc, err)
	}
	if claim.Spec.VolumeName == "" {
		return nil, fmt.Errorf("pvc %s/%s is not bound", namespace, pvc)
	}
	pv, err := s.Kube.CoreV1().PersistentVolumes().Get(ctx, claim.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("pv %s: %w", claim.Spec.VolumeName, err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != s.opts.Driver {
		return nil, fmt.Errorf("pv %s is not a %s volume", pv.Name, s.opts.Driver)
	}
	h, err := s.parseHandle(pv.Spec.CSI.VolumeHandle)
	if err != nil {
		return nil, err
	}
	attrs, err := s.VolumeJournal(h.UUID)
	if err != nil {
		return nil, err
	}
	v := &Volume{
		Name:        attrs[JournalImageName],
		ID:          attrs[JournalImageID],
		UUID:        h.UUID,
		Handle:      pv.Spec.CSI.VolumeHandle,
		RequestName: attrs[JournalVolName],
		PV:          pv.Name,
		Namespace:   namespace,
		PVC:         pvc,
		Pool:        s.opts.Pool,
		RadosNS:     s.opts.RadosNamespace,
		sim:         s,
	}
	if v.Name == "" {
		v.Name = VolumePrefix + h.UUID // ceph-csi's fallback
	}
	img, err := rbd.OpenImageReadOnly(s.ioctx, v.Name, rbd.NoSnapshot)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", v.Name, err)
	}
	defer img.Close()
	if v.Size, err = img.GetSize(); err != nil {
		return nil, err
	}
	if v.ID == "" {
		v.ID, _ = img.GetId()
	}
	return v, nil
}

// DeleteVolume deletes the PVC and PV and, like ceph-csi DeleteVolume
// (csidriver.DeleteImage), the image - through the RBD trash, where it
// stays while snapshots in its trash namespace have children (snapshot
// clones csi-snap-* of CSI snapshots) - and its journal reservation. It
// reports whether the image stayed in the trash.
func (s *Sim) DeleteVolume(ctx context.Context, v *Volume) (trashed bool, err error) {
	if err := s.deletePVC(ctx, v.Namespace, v.PVC); err != nil {
		return false, err
	}
	if err := s.deletePV(ctx, v.PV); err != nil {
		return false, err
	}
	if trashed, err = csidriver.DeleteImage(s.ioctx, v.Name); err != nil {
		return false, err
	}
	return trashed, csidriver.VolumeJournal.Undo(s.ioctx, s.opts.InstanceID, v.UUID, v.RequestName)
}

// Children lists the images (as "pool/[ns/]image", trashed ones with a
// " (trash)" suffix) cloned from any snapshot of image name, in every
// snapshot namespace (user and trash).
func (s *Sim) Children(name string) ([]string, error) {
	img, err := rbd.OpenImageReadOnly(s.ioctx, name, rbd.NoSnapshot)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	snaps, err := img.GetSnapshotNames()
	if err != nil {
		return nil, fmt.Errorf("rbd snap ls %s: %w", name, err)
	}
	var kids []string
	for _, sn := range snaps {
		if err := img.SetSnapByID(sn.Id); err != nil {
			return nil, fmt.Errorf("%s: set snap %d: %w", name, sn.Id, err)
		}
		specs, err := img.ListChildrenAttributes()
		if err != nil {
			return nil, fmt.Errorf("%s@%d: list children: %w", name, sn.Id, err)
		}
		for _, c := range specs {
			k := c.PoolName + "/"
			if c.PoolNamespace != "" {
				k += c.PoolNamespace + "/"
			}
			k += c.ImageName
			if c.Trash {
				k += " (trash)"
			}
			kids = append(kids, k)
		}
	}
	return kids, nil
}

// RemoveTrashed removes an image from the RBD trash by ID (e.g. a deleted
// volume's image once its snapshots are gone). Missing is not an error.
func (s *Sim) RemoveTrashed(ctx context.Context, imageID string) error {
	if err := rbd.TrashRemove(s.ioctx, imageID, true); err != nil && !errors.Is(err, rbd.ErrNotFound) {
		return fmt.Errorf("rbd trash rm %s: %w", imageID, err)
	}
	return nil
}

// InTrash reports whether an image ID is in the pool's (namespace's) trash.
func (s *Sim) InTrash(imageID string) (bool, error) {
	list, err := rbd.GetTrashList(s.ioctx)
	if err != nil {
		return false, err
	}
	for _, t := range list {
		if t.Id == imageID {
			return true, nil
		}
	}
	return false, nil
}

func (s *Sim) imageID(name string) (string, error) {
	img, err := rbd.OpenImageReadOnly(s.ioctx, name, rbd.NoSnapshot)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", name, err)
	}
	defer img.Close()
	return img.GetId()
}

// WriteAt writes p at off into the volume's image (head). It implements
// io.WriterAt; each call opens the image, so use Fill for bulk data.
func (v *Volume) WriteAt(p []byte, off int64) (int, error) {
	img, err := rbd.OpenImage(v.sim.ioctx, v.Name, rbd.NoSnapshot)
	if err != nil {
		return 0, err
	}
	defer img.Close()
	for n := 0; n < len(p); {
		end := min(n+chunkSize, len(p))
		w, err := img.WriteAt(p[n:end], off+int64(n))
		n += w
		if err != nil {
			return n, err
		}
	}
	return len(p), img.Flush()
}

// ReadAt reads the volume's image (head) at off. It implements io.ReaderAt.
func (v *Volume) ReadAt(p []byte, off int64) (int, error) {
	img, err := rbd.OpenImageReadOnly(v.sim.ioctx, v.Name, rbd.NoSnapshot)
	if err != nil {
		return 0, err
	}
	defer img.Close()
	return img.ReadAt(p, off)
}

// Fill writes regions (in order; overlapping later ones win) with data
// generated from seed, in 4 MiB writes from parallel workers. Hole regions
// are left alone; Discard regions are discarded. The result is exactly
// Render(model, 0, regions, seed) applied to the previous content, so a test
// can keep a model or use ContentSHA256 for a fresh volume.
func (v *Volume) Fill(ctx context.Context, regions []Region, seed int64) error {
	for _, r := range regions {
		if r.Off+r.Len > v.Size || r.Off+r.Len < r.Off {
			return fmt.Errorf("sim: region %v beyond volume size %d", r, v.Size)
		}
	}
	img, err := rbd.OpenImage(v.sim.ioctx, v.Name, rbd.NoSnapshot)
	if err != nil {
		return fmt.Errorf("open %s: %w", v.Name, err)
	}
	defer img.Close()
	workers := max(2, min(8, 2*runtime.GOMAXPROCS(0)))
	for _, r := range regions {
		if err := fillRegion(ctx, img, r, seed, workers); err != nil {
			return fmt.Errorf("fill %s %v: %w", v.Name, r, err)
		}
	}
	return img.Flush()
}

func fillRegion(ctx context.Context, img *rbd.Image, r Region, seed int64, workers int) error {
	if r.Len == 0 || r.Kind == Hole {
		return nil
	}
	if r.Kind == Discard {
		// librbd skips the parts of a discard that are not aligned to
		// rbd_discard_granularity_bytes (64 KiB; rbd_skip_partial_discard
		// is on by default): write zeros there so the range reads as zeros.
		lo := (r.Off + discardAlign - 1) / discardAlign * discardAlign
		hi := (r.Off + r.Len) / discardAlign * discardAlign
		if lo >= hi {
			return fillRegion(ctx, img, Region{Off: r.Off, Len: r.Len, Kind: Zero}, seed, workers)
		}
		if err := fillRegion(ctx, img, Region{Off: r.Off, Len: lo - r.Off, Kind: Zero}, seed, workers); err != nil {
			return err
		}
		if err := fillRegion(ctx, img, Region{Off: hi, Len: r.Off + r.Len - hi, Kind: Zero}, seed, workers); err != nil {
			return err
		}
		for off := lo; off < hi; off += 1 << 30 {
			n := min(1<<30, hi-off)
			if _, err := img.Discard(off, n); err != nil {
				return err
			}
		}
		return nil
	}
	type job struct{ off, n uint64 }
	jobs := make(chan job)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	one := []Region{r}
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunkSize)
			for j := range jobs {
				b := buf[:j.n]
				clear(b)
				Render(b, j.off, one, seed)
				if _, err := img.WriteAt(b, int64(j.off)); err != nil {
					errc <- err
					for range jobs {
					}
					return
				}
			}
		}()
	}
	var err error
	// Chunks aligned on absolute 4 MiB boundaries: whole RADOS objects.
	for off := r.Off; off < r.Off+r.Len && err == nil; {
		end := min((off/chunkSize+1)*chunkSize, r.Off+r.Len)
		select {
		case jobs <- job{off, end - off}:
		case err = <-errc:
		case <-ctx.Done():
			err = ctx.Err()
		}
		off = end
	}
	close(jobs)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	return err
}

// SHA256 returns the hex SHA-256 of the whole volume (head).
func (v *Volume) SHA256(ctx context.Context) (string, error) {
	return v.sim.ImageSHA256(ctx, v.Name, "")
}

// ImageSHA256 reads image (at snapshot snap, or the head when snap is "")
// completely - through its parents, like `rbd export` - and returns the hex
// SHA-256. Reads are 4 MiB and parallel.
func (s *Sim) ImageSHA256(ctx context.Context, image, snap string) (string, error) {
	name := rbd.NoSnapshot
	if snap != "" {
		name = snap
	}
	img, err := rbd.OpenImageReadOnly(s.ioctx, image, name)
	if err != nil {
		return "", fmt.Errorf("open %s@%s: %w", image, snap, err)
	}
	defer img.Close()
	size, err := img.GetSize()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if err := readParallel(ctx, img, size, func(b []byte) { h.Write(b) }); err != nil {
		return "", fmt.Errorf("read %s@%s: %w", image, snap, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readParallel reads [0,size) in chunkSize pieces with a few readers ahead
// and hands them to consume in order.
func readParallel(ctx context.Context, img *rbd.Image, size uint64, consume func([]byte)) error {
	const depth = 8
	type res struct {
		buf []byte
		err error
	}
	n := (size + chunkSize - 1) / chunkSize
	slots := make([]chan res, depth)
	for i := range slots {
		slots[i] = make(chan res, 1)
	}
	pool := make(chan []byte, depth)
	for i := 0; i < depth; i++ {
		pool <- make([]byte, chunkSize)
	}
	read := func(i uint64) {
		buf := <-pool
		off := i * chunkSize
		b := buf[:min(chunkSize, size-off)]
		got, err := img.ReadAt(b, int64(off))
		if err == nil && got != len(b) {
			err = fmt.Errorf("short read at %d: %d of %d", off, got, len(b))
		}
		slots[i%depth] <- res{b, err}
	}
	started := min(n, depth)
	for i := uint64(0); i < started; i++ {
		go read(i)
	}
	var firstErr error
	// Drain every started read (they use img) even after an error.
	for i := uint64(0); i < started; i++ {
		r := <-slots[i%depth]
		if firstErr == nil {
			firstErr = r.err
			if firstErr == nil {
				firstErr = ctx.Err()
			}
		}
		if firstErr == nil {
			consume(r.buf)
		}
		pool <- r.buf[:cap(r.buf)]
		if next := i + depth; next < n && firstErr == nil {
			go read(next)
			started++
		}
	}
	return firstErr
}
