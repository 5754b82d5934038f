package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/lifeboat-backup/lifeboat/kube"
	"github.com/lifeboat-backup/lifeboat/rbd"
	"github.com/lifeboat-backup/lifeboat/rbd/handle"
)

// Image names an RBD snapshot the way verify's JSON does.
type Image struct {
	ClusterID string `json:"clusterID"`
	Pool      string `json:"pool"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Snapshot  string `json:"snapshot"`
}

func imageOf(ref rbd.Ref) Image {
	return Image{ClusterID: ref.ClusterID, Pool: ref.Pool, Namespace: ref.Namespace, Name: ref.Image, Snapshot: ref.Snapshot}
}

// Resolution is everything lifeboat knows of one CSI snapshot.
type Resolution struct {
	VolumeSnapshotContent string `json:"volumeSnapshotContent,omitempty"`
	// VolumeSnapshotContents lists every content with this handle when
	// there are several (e.g. the original and one a Velero restore made).
	VolumeSnapshotContents []string        `json:"volumeSnapshotContents,omitempty"`
	VolumeSnapshot         string          `json:"volumeSnapshot,omitempty"`
	PVC                    string          `json:"pvc,omitempty"`
	VeleroBackup           string          `json:"veleroBackup,omitempty"`
	Handle                 string          `json:"snapshotHandle"`
	Image                  Image           `json:"image"`
	ImageID                string          `json:"imageID"`
	FSID                   string          `json:"fsid"`
	Source                 string          `json:"source,omitempty"`
	FromJournal            bool            `json:"fromJournal"`
	Size                   uint64          `json:"size"`
	SnapshotSize           uint64          `json:"snapshotSize"`
	Features               []string        `json:"features"`
	OpFeatures             []string        `json:"opFeatures"`
	Parent                 *rbd.ParentInfo `json:"parent,omitempty"`
	Overlap                uint64          `json:"overlap"`
	Flattened              bool            `json:"flattened"`
	Info                   *rbd.ImageInfo  `json:"-"`
}

// Locate decodes a snapshot handle and finds its image in Ceph, without
// opening the image. The cluster connection is shared.
func (b *Bridge) Locate(ctx context.Context, h string) (rbd.Ref, *rbd.Cluster, error) {
	id, err := handle.Decode(h)
	if err != nil {
		return rbd.Ref{}, nil, err
	}
	csi, err := b.csiCluster(ctx, id.ClusterID)
	if err != nil {
		return rbd.Ref{ClusterID: id.ClusterID}, nil, err
	}
	cl, err := b.Ceph.Get(ctx, id.ClusterID)
	if err != nil {
		return rbd.Ref{ClusterID: id.ClusterID}, nil, err
	}
	ref, err := cl.Resolve(id, rbd.Snapshot, rbd.ResolveOptions{Namespace: csi.RadosNamespace(), Prefix: b.opts.SnapshotPrefix})
	return ref, cl, err
}

// Find reads the snapshot a user named: a VolumeSnapshotContent name, a
// VolumeSnapshot as namespace/name, or a raw ceph-csi handle (then the
// content with that handle, if any, is looked up).
func (b *Bridge) Find(ctx context.Context, target string) (kube.Snapshot, string, error) {
	if b.Kube == nil {
		return kube.Snapshot{}, "", errNoKube
	}
	if _, err := handle.Decode(target); err == nil {
		all, err := b.Kube.ListSnapshots(ctx, b.opts.DriverSuffix)
		if err != nil {
			return kube.Snapshot{}, "", err
		}
		if same := withHandle(all, target); len(same) > 0 {
			return same[0], target, nil
		}
		return kube.Snapshot{}, target, nil
	}
	var s kube.Snapshot
	var err error
	if ns, name, ok := strings.Cut(target, "/"); ok {
		s, err = b.Kube.GetVolumeSnapshot(ctx, ns, name)
	} else {
		s, err = b.Kube.GetContent(ctx, target)
	}
	if err != nil {
		return s, "", err
	}
	h := s.Handle()
	if h == "" {
		return s, "", fmt.Errorf("VolumeSnapshotContent %s has no snapshot handle yet (not ready)", s.Content.Name)
	}
	return s, h, nil
}

// Resolve answers "which RBD image is this snapshot, and what is it like".
func (b *Bridge) Resolve(ctx context.Context, target string) (*Resolution, error) {
	s, h, err := b.Find(ctx, target)
	if err != nil {
		return nil, err
	}
	r := &Resolution{Handle: h}
	if err := b.sharing(ctx, r); err != nil {
		return nil, err
	}
	if s.Content != nil {
		r.VolumeSnapshotContent = s.Content.Name
		r.VolumeSnapshot = s.VolumeSnapshotName()
		r.PVC = s.PVC()
		r.VeleroBackup = s.VeleroBackup()
	}
	ref, cl, err := b.Locate(ctx, h)
	if err != nil {
		return nil, err
	}
	r.Image, r.ImageID, r.Source, r.FromJournal, r.FSID = imageOf(ref), ref.ImageID, ref.Source, ref.FromJournal, cl.FSID
	info, err := cl.Inspect(ref.Pool, ref.Namespace, ref.Image, true)
	if err != nil {
		return nil, err
	}
	r.Info = info
	r.ImageID, r.Size, r.Overlap, r.Parent, r.Flattened = info.ID, info.Size, info.Overlap, info.Parent, info.Parent == nil
	r.Features, r.OpFeatures = info.FeatureNames(), info.OpFeatureNames()
	if snap, ok := info.Snapshot(ref.Snapshot); ok {
		r.SnapshotSize = snap.Size
	}
	return r, nil
}

func withHandle(all []kube.Snapshot, h string) []kube.Snapshot {
	var out []kube.Snapshot
	for _, s := range all {
		if s.Handle() == h {
			out = append(out, s)
		}
	}
	return out
}

// sharing lists every VolumeSnapshotContent with r's handle when there is
// more than one: which of them a user means is not resolve's to guess.
func (b *Bridge) sharing(ctx context.Context, r *Resolution) error {
	if b.Kube == nil {
		return nil
	}
	all, err := b.Kube.ListSnapshots(ctx, b.opts.DriverSuffix)
	if err != nil {
		return err
	}
	if same := withHandle(all, r.Handle); len(same) > 1 {
		for _, s := range same {
			r.VolumeSnapshotContents = append(r.VolumeSnapshotContents, s.Content.Name)
		}
	}
	return nil
}

// problemCode maps an error to the problem it shows, or false when the
// error means lifeboat could not check at all (Ceph or the API server
// unreachable, permission denied).
func problemCode(err error) (rbd.Code, bool) {
	switch {
	case errors.Is(err, handle.ErrMalformed):
		return rbd.MalformedHandle, true
	case errors.Is(err, ErrUnknownCluster):
		return rbd.UnknownCluster, true
	case errors.Is(err, rbd.ErrPoolNotFound):
		return rbd.PoolNotFound, true
	case errors.Is(err, rbd.ErrImageNotFound):
		return rbd.ImageNotFound, true
	case errors.Is(err, rbd.ErrParentMissing):
		return rbd.ParentMissing, true
	}
	return "", false
}
