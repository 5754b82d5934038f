package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
)

// Velero's labels and annotations (pkg/apis/velero/v1/labels_annotations.go).
const (
	VeleroBackupNameLabel          = "velero.io/backup-name"
	VeleroSnapshotClassLabel       = "velero.io/csi-volumesnapshot-class"
	VeleroSnapshotHandleAnnotation = "velero.io/csi-volumesnapshot-handle"
	VeleroDriverNameAnnotation     = "velero.io/csi-driver-name"
	VeleroRestoreSizeAnnotation    = "velero.io/csi-volumesnapshot-restore-size"
	VeleroVSCDeletionPolicyAnnot   = "velero.io/csi-vsc-deletion-policy"
)

// InstallRook creates or updates the objects a Rook deployment offers a
// Deployment in the Rook namespace: the ConfigMap rook-ceph-csi-config (its
// csi-cluster-config-json entry for Options.ClusterID is replaced, other
// entries and unknown fields are kept) and the Secret
// rook-csi-rbd-provisioner (userID, userKey). It also creates the Rook
// namespace if missing.
//
// Concurrent callers (other Sims, other processes) are safe: the
// read-modify-write is retried on conflicts.
func (s *Sim) InstallRook(ctx context.Context, monitors []string, userID, userKey string) error {
	ns := s.opts.RookNamespace
	if err := s.ensureNamespace(ctx, ns); err != nil {
		return err
	}
	err := retry.OnError(rookBackoff, func(err error) bool {
		return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
	}, func() error { return s.updateRookConfig(ctx, monitors) })
	if err != nil {
		return fmt.Errorf("configmap %s/%s: %w", ns, RookConfigMap, err)
	}
	return retry.OnError(rookBackoff, func(err error) bool {
		return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
	}, func() error { return s.updateRookSecret(ctx, userID, userKey) })
}

// UninstallRook removes this Sim's clusterID entry from the Rook ConfigMap
// (retrying on conflicts). The shared Secret is left alone.
func (s *Sim) UninstallRook(ctx context.Context) error {
	cms := s.Kube.CoreV1().ConfigMaps(s.opts.RookNamespace)
	return retry.OnError(rookBackoff, apierrors.IsConflict, func() error {
		cm, err := cms.Get(ctx, RookConfigMap, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		var entries []map[string]any
		if err := json.Unmarshal([]byte(cm.Data[RookConfigKey]), &entries); err != nil {
			return fmt.Errorf("configmap %s/%s: %w", cm.Namespace, cm.Name, err)
		}
		kept := entries[:0]
		for _, e := range entries {
			if e["clusterID"] != s.opts.ClusterID {
				kept = append(kept, e)
			}
		}
		if len(kept) == len(entries) {
			return nil
		}
		b, err := json.Marshal(kept)
		if err != nil {
			return err
		}
		cm.Data[RookConfigKey] = string(b)
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
}

// rookBackoff outlasts many parallel tests updating the one ConfigMap.
var rookBackoff = wait.Backoff{Steps: 40, Duration: 10 * time.Millisecond, Factor: 1.3, Jitter: 1, Cap: time.Second}

func (s *Sim) updateRookConfig(ctx context.Context, monitors []string) error {
	ns := s.opts.RookNamespace
	cms := s.Kube.CoreV1().ConfigMaps(ns)
	cm, err := cms.Get(ctx, RookConfigMap, metav1.GetOptions{})
	create := apierrors.IsNotFound(err)
	if err != nil && !create {
		return err
	}
	if create {
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: RookConfigMap, Namespace: ns}}
	}
	var entries []map[string]any
	if raw := cm.Data[RookConfigKey]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &entries); err != nil {
			return fmt.Errorf("configmap %s/%s: %s is not a JSON list: %w", ns, RookConfigMap, RookConfigKey, err)
		}
	}
	var entry map[string]any
	for _, e := range entries {
		if e["clusterID"] == s.opts.ClusterID {
			entry = e
		}
	}
	if entry == nil {
		entry = map[string]any{"clusterID": s.opts.ClusterID}
		entries = append(entries, entry)
	}
	entry["monitors"] = monitors
	rbdCfg, _ := entry["rbd"].(map[string]any)
	if rbdCfg == nil {
		rbdCfg = map[string]any{}
	}
	rbdCfg["radosNamespace"] = s.opts.RadosNamespace
	entry["rbd"] = rbdCfg
	if _, ok := entry["namespace"]; !ok {
		entry["namespace"] = ns // Rook writes the cluster namespace too
	}
	b, err := json.Marshal(entries)
	if err != nil {
		return err
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[RookConfigKey] = string(b)
	if create {
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
	} else {
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
	return err
}

func (s *Sim) updateRookSecret(ctx context.Context, userID, userKey string) error {
	ns := s.opts.RookNamespace
	secrets := s.Kube.CoreV1().Secrets(ns)
	data := map[string][]byte{"userID": []byte(userID), "userKey": []byte(userKey)}
	sec, err := secrets.Get(ctx, RookSecret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: RookSecret, Namespace: ns},
			Type:       "kubernetes.io/rook",
			Data:       data,
		}, metav1.CreateOptions{})
	case err == nil:
		sec.Data = data
		_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("secret %s/%s: %w", ns, RookSecret, err)
	}
	return nil
}

func (s *Sim) ensureNamespace(ctx context.Context, ns string) error {
	_, err := s.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = s.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	return nil
}

// ensureStorageClass creates Rook's example StorageClass if missing.
func (s *Sim) ensureStorageClass(ctx context.Context) error {
	sc, err := s.Kube.StorageV1().StorageClasses().Get(ctx, s.opts.StorageClass, metav1.GetOptions{})
	if err == nil && sc.Provisioner != s.opts.Driver {
		return fmt.Errorf("storageclass %s exists with provisioner %s, not %s: set Options.StorageClass", sc.Name, sc.Provisioner, s.opts.Driver)
	}
	if !apierrors.IsNotFound(err) {
		return err
	}
	rn := s.opts.RookNamespace
	params := map[string]string{
		"clusterID":     s.opts.ClusterID,
		"pool":          s.opts.Pool,
		"imageFormat":   "2",
		"imageFeatures": s.opts.VolumeFeatures,
		"csi.storage.k8s.io/provisioner-secret-name":            RookSecret,
		"csi.storage.k8s.io/provisioner-secret-namespace":       rn,
		"csi.storage.k8s.io/controller-expand-secret-name":      RookSecret,
		"csi.storage.k8s.io/controller-expand-secret-namespace": rn,
		"csi.storage.k8s.io/node-stage-secret-name":             RookNodeSecret,
		"csi.storage.k8s.io/node-stage-secret-namespace":        rn,
		"csi.storage.k8s.io/fstype":                             "ext4",
	}
	if s.opts.RadosNamespace != "" {
		params["radosNamespace"] = s.opts.RadosNamespace
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	expand := true
	_, err = s.Kube.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta:           metav1.ObjectMeta{Name: s.opts.StorageClass},
		Provisioner:          s.opts.Driver,
		Parameters:           params,
		ReclaimPolicy:        &reclaim,
		AllowVolumeExpansion: &expand,
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		err = nil
	}
	return err
}

// ensureSnapshotClass creates the VolumeSnapshotClass Velero picks (label
// velero.io/csi-volumesnapshot-class=true, deletionPolicy Retain) if missing.
func (s *Sim) ensureSnapshotClass(ctx context.Context) error {
	classes := s.Snap.SnapshotV1().VolumeSnapshotClasses()
	c, err := classes.Get(ctx, s.opts.SnapshotClass, metav1.GetOptions{})
	if err == nil && c.Driver != s.opts.Driver {
		return fmt.Errorf("volumesnapshotclass %s exists with driver %s, not %s: set Options.SnapshotClass", c.Name, c.Driver, s.opts.Driver)
	}
	if !apierrors.IsNotFound(err) {
		return err
	}
	_, err = classes.Create(ctx, &snapv1.VolumeSnapshotClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:   s.opts.SnapshotClass,
			Labels: map[string]string{VeleroSnapshotClassLabel: "true"},
		},
		Driver:         s.opts.Driver,
		DeletionPolicy: snapv1.VolumeSnapshotContentRetain,
		Parameters: map[string]string{
			"clusterID": s.opts.ClusterID,
			"csi.storage.k8s.io/snapshotter-secret-name":      RookSecret,
			"csi.storage.k8s.io/snapshotter-secret-namespace": s.opts.RookNamespace,
		},
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		err = nil
	}
	return err
}

// deletePVC removes a claim at once, dropping the pvc-protection finalizer
// instead of waiting for kube-controller-manager to (and deletePV the PV's
// pv-protection one).
func (s *Sim) deletePVC(ctx context.Context, ns, name string) error {
	return deleteGone(ctx, s.Kube.CoreV1().PersistentVolumeClaims(ns), "pvc "+ns+"/", name)
}

func (s *Sim) deletePV(ctx context.Context, name string) error {
	return deleteGone(ctx, s.Kube.CoreV1().PersistentVolumes(), "pv ", name)
}

// DeleteNamespace deletes a namespace and clears its "kubernetes"
// finalizer, so that it goes at once instead of when a namespace controller
// (kube-controller-manager, when the stack runs one) has emptied it.
// Objects still inside it are left in etcd: delete them first
// (PurgeObjects). Missing is not an error.
func (s *Sim) DeleteNamespace(ctx context.Context, name string) error {
	nss := s.Kube.CoreV1().Namespaces()
	err := nss.Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	ns, err := nss.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	ns.Spec.Finalizers = nil
	if _, err = nss.Finalize(ctx, ns, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("finalize namespace %s: %w", name, err)
	}
	return nil
}

// DeleteClasses deletes the StorageClass and VolumeSnapshotClass the Sim
// created for a non-default configuration (see Options.StorageClass);
// the shared default classes are left alone.
func (s *Sim) DeleteClasses(ctx context.Context) error {
	var errs []error
	if s.opts.StorageClass != DefaultStorageClass {
		err := s.Kube.StorageV1().StorageClasses().Delete(ctx, s.opts.StorageClass, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	if s.opts.SnapshotClass != DefaultSnapshotClass {
		err := s.Snap.SnapshotV1().VolumeSnapshotClasses().Delete(ctx, s.opts.SnapshotClass, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
