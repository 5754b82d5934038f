package kube

import (
	"context"
	"fmt"
	"sort"
	"strings"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultDriverSuffix matches ceph-csi's RBD driver under Rook
// (rook-ceph.rbd.csi.ceph.com, or <namespace>.rbd.csi.ceph.com) and plain
// ceph-csi (rbd.csi.ceph.com).
const DefaultDriverSuffix = "rbd.csi.ceph.com"

// VeleroBackupLabel is set by Velero's CSI plugin on the VolumeSnapshots and
// VolumeSnapshotContents it creates.
const VeleroBackupLabel = "velero.io/backup-name"

// IsRBDDriver tells whether a CSI driver name is ceph-csi's RBD driver.
func IsRBDDriver(driver, suffix string) bool {
	if suffix == "" {
		suffix = DefaultDriverSuffix
	}
	return driver == suffix || strings.HasSuffix(driver, "."+suffix)
}

// Snapshot is a VolumeSnapshotContent with what it belongs to.
type Snapshot struct {
	Content *snapv1.VolumeSnapshotContent
	// Snapshot is nil when the VolumeSnapshot is gone or unreadable.
	Snapshot *snapv1.VolumeSnapshot
}

// Handle is the CSI snapshot ID: status.snapshotHandle for dynamic
// snapshots, spec.source.snapshotHandle for pre-provisioned ones.
func (s Snapshot) Handle() string {
	if st := s.Content.Status; st != nil && st.SnapshotHandle != nil {
		return *st.SnapshotHandle
	}
	if h := s.Content.Spec.Source.SnapshotHandle; h != nil {
		return *h
	}
	return ""
}

// Ready reports status.readyToUse.
func (s Snapshot) Ready() bool {
	st := s.Content.Status
	return st != nil && st.ReadyToUse != nil && *st.ReadyToUse
}

// RestoreSize is status.restoreSize in bytes, 0 when unknown.
func (s Snapshot) RestoreSize() int64 {
	if st := s.Content.Status; st != nil && st.RestoreSize != nil {
		return *st.RestoreSize
	}
	return 0
}

// VolumeSnapshotName is namespace/name of the bound VolumeSnapshot.
func (s Snapshot) VolumeSnapshotName() string {
	ref := s.Content.Spec.VolumeSnapshotRef
	if ref.Name == "" {
		return ""
	}
	return ref.Namespace + "/" + ref.Name
}

// PVC is namespace/name of the PersistentVolumeClaim the snapshot was taken
// of, "" when unknown (pre-provisioned, or the VolumeSnapshot is gone).
func (s Snapshot) PVC() string {
	if s.Snapshot == nil || s.Snapshot.Spec.Source.PersistentVolumeClaimName == nil {
		return ""
	}
	return s.Snapshot.Namespace + "/" + *s.Snapshot.Spec.Source.PersistentVolumeClaimName
}

// VeleroBackup is the Velero backup that made the snapshot, if any.
func (s Snapshot) VeleroBackup() string {
	if b := s.Content.Labels[VeleroBackupLabel]; b != "" {
		return b
	}
	if s.Snapshot != nil {
		return s.Snapshot.Labels[VeleroBackupLabel]
	}
	return ""
}

// ListSnapshots lists the VolumeSnapshotContents of RBD drivers (matching
// driverSuffix) with their VolumeSnapshots, sorted by name.
func (c *Clients) ListSnapshots(ctx context.Context, driverSuffix string) ([]Snapshot, error) {
	contents, err := c.Snap.SnapshotV1().VolumeSnapshotContents().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing VolumeSnapshotContents: %w", err)
	}
	snaps, err := c.Snap.SnapshotV1().VolumeSnapshots(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing VolumeSnapshots: %w", err)
	}
	byName := map[string]*snapv1.VolumeSnapshot{}
	for i := range snaps.Items {
		vs := &snaps.Items[i]
		byName[vs.Namespace+"/"+vs.Name] = vs
	}
	var out []Snapshot
	for i := range contents.Items {
		vsc := &contents.Items[i]
		if !IsRBDDriver(vsc.Spec.Driver, driverSuffix) {
			continue
		}
		s := Snapshot{Content: vsc}
		s.Snapshot = byName[s.VolumeSnapshotName()]
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Content.Name < out[j].Content.Name })
	return out, nil
}

// GetContent reads one VolumeSnapshotContent and its VolumeSnapshot.
func (c *Clients) GetContent(ctx context.Context, name string) (Snapshot, error) {
	vsc, err := c.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Snapshot{}, fmt.Errorf("VolumeSnapshotContent %q %w", name, ErrNotFound)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("reading VolumeSnapshotContent %q: %w", name, err)
	}
	s := Snapshot{Content: vsc}
	if ref := vsc.Spec.VolumeSnapshotRef; ref.Name != "" {
		vs, err := c.Snap.SnapshotV1().VolumeSnapshots(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			s.Snapshot = vs
		} else if !apierrors.IsNotFound(err) {
			return s, fmt.Errorf("reading VolumeSnapshot %s/%s: %w", ref.Namespace, ref.Name, err)
		}
	}
	return s, nil
}

// GetVolumeSnapshot reads a VolumeSnapshot and the content bound to it.
func (c *Clients) GetVolumeSnapshot(ctx context.Context, namespace, name string) (Snapshot, error) {
	vs, err := c.Snap.SnapshotV1().VolumeSnapshots(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Snapshot{}, fmt.Errorf("VolumeSnapshot %s/%s %w", namespace, name, ErrNotFound)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("reading VolumeSnapshot %s/%s: %w", namespace, name, err)
	}
	if vs.Status == nil || vs.Status.BoundVolumeSnapshotContentName == nil || *vs.Status.BoundVolumeSnapshotContentName == "" {
		return Snapshot{}, fmt.Errorf("VolumeSnapshot %s/%s is not bound to a VolumeSnapshotContent yet", namespace, name)
	}
	s, err := c.GetContent(ctx, *vs.Status.BoundVolumeSnapshotContentName)
	if err != nil {
		return s, err
	}
	s.Snapshot = vs
	return s, nil
}
