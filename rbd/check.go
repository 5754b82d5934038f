package rbd

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"
)

// Code is one problem lifeboat can find with a CSI snapshot. The set is
// fixed: alerts and scripts match on it.
type Code string

// The problem vocabulary. Some codes are found here, others by the caller
// that reads the Kubernetes side (NotReady, MalformedHandle, UnknownCluster).
const (
	MalformedHandle  Code = "MalformedHandle"
	UnknownCluster   Code = "UnknownCluster"
	PoolNotFound     Code = "PoolNotFound"
	ImageNotFound    Code = "ImageNotFound"
	SnapshotNotFound Code = "SnapshotNotFound"
	NotReady         Code = "NotReady"
	FeatureMissing   Code = "FeatureMissing"
	NotCloneChild    Code = "NotCloneChild"
	ParentMissing    Code = "ParentMissing"
	SizeMismatch     Code = "SizeMismatch"
	// JournalIncomplete: the journal entry csi.snap.<uuid> lacks a key
	// ceph-csi needs to restore a volume from the snapshot (csi.source).
	JournalIncomplete Code = "JournalIncomplete"
)

// Codes lists the vocabulary, for metrics that must show zeros too.
var Codes = []Code{MalformedHandle, UnknownCluster, PoolNotFound, ImageNotFound, SnapshotNotFound,
	NotReady, FeatureMissing, NotCloneChild, ParentMissing, SizeMismatch, JournalIncomplete}

// Problem is one finding, with a message that says what and where.
type Problem struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func problem(code Code, format string, args ...any) Problem {
	return Problem{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CheckSnapshotImage checks an inspected image against what ceph-csi v3
// promises of a snapshot image: format 2 with layering and deep-flatten, a
// clone-v2 child whose parent image and snapshot still exist (possibly in
// the trash), and the user snapshot snap holding restoreSize bytes
// (restoreSize 0 skips that check). A clone ceph-csi flattened has no parent
// any more; that is healthy, and reported as flattened.
func CheckSnapshotImage(info *ImageInfo, snap string, restoreSize int64) (problems []Problem, flattened bool) {
	spec := Ref{Pool: info.Pool, Namespace: info.Namespace, Image: info.Name}.Spec()
	if info.Format != 2 {
		problems = append(problems, problem(FeatureMissing, "%s is RBD format %d; ceph-csi creates format 2", spec, info.Format))
	}
	var missing []string
	for _, f := range []uint64{FeatureLayering, FeatureDeepFlatten} {
		if info.Features&f == 0 {
			missing = append(missing, FeatureNames(f)[0])
		}
	}
	if len(missing) > 0 {
		problems = append(problems, problem(FeatureMissing, "%s lacks feature %s (has %s)", spec,
			strings.Join(missing, ", "), strings.Join(info.FeatureNames(), ", ")))
	}
	s, ok := info.Snapshot(snap)
	if !ok {
		problems = append(problems, problem(SnapshotNotFound, "%s has no snapshot %q", spec, snap))
	}
	problems = append(problems, checkClone(info, spec)...)
	if ok && restoreSize > 0 && s.Size != uint64(restoreSize) {
		problems = append(problems, problem(SizeMismatch, "%s@%s is %d bytes but the VolumeSnapshotContent's restoreSize is %d",
			spec, snap, s.Size, restoreSize))
	}
	return problems, info.Parent == nil
}

// CheckJournal reports a snapshot's journal entry that ceph-csi cannot
// restore a volume from.
func CheckJournal(ref Ref) []Problem {
	if ref.JournalLacks == "" {
		return nil
	}
	return []Problem{problem(JournalIncomplete, "the ceph-csi journal entry (csi.snap.<uuid>) of %s in %s lacks %s: ceph-csi cannot restore a volume from this snapshot; rewrite it (lifeboat restore --velero-backup does) or restore with lifeboat restore",
		ref.Image, Ref{Pool: ref.Pool, Namespace: ref.Namespace}.Spec(), ref.JournalLacks)}
}

func checkClone(info *ImageInfo, spec string) []Problem {
	child := info.OpFeatures&OpCloneChild != 0
	p := info.Parent
	switch {
	case p == nil && child:
		return []Problem{problem(NotCloneChild, "%s has op_feature clone-child but no parent", spec)}
	case p == nil:
		return nil
	case !child:
		return []Problem{problem(NotCloneChild, "%s has parent %s but lacks op_feature clone-child (not a clone v2)", spec, p.Spec())}
	case p.Missing != "":
		return []Problem{problem(ParentMissing, "parent %s of %s is gone (%s): %s", p.Spec(), spec, p.Missing, p.MissingErr)}
	}
	return nil
}

// ImageSummary is one image found by a pool scan.
type ImageSummary struct {
	Name string `json:"name"`
	Size uint64 `json:"size"`
}

// SnapshotImages lists the CSI snapshot images of a pool and RADOS
// namespace that keep(name) rejects: the images ceph-csi's snapshot journal
// names, and any other image whose name starts with prefix (ceph-csi's
// naming convention). Only those are opened, for their size.
func (c *Cluster) SnapshotImages(pool, namespace, prefix, instanceID string, skip func(name string) bool) ([]ImageSummary, error) {
	ioctx, err := c.IOContext(pool, namespace)
	if err != nil {
		return nil, err
	}
	defer ioctx.Destroy()
	where := Ref{Pool: pool, Namespace: namespace}.Spec()
	all, err := librbd.GetImageNames(ioctx)
	if err != nil {
		return nil, fmt.Errorf("listing images in %s: %w", where, err)
	}
	journal, err := journalSnapshotImages(ioctx, instanceID)
	if err != nil {
		return nil, fmt.Errorf("reading ceph-csi snapshot journal in %s: %w", where, err)
	}
	inJournal := map[string]bool{}
	for _, n := range journal {
		inJournal[n] = true
	}
	var out []ImageSummary
	for _, name := range all {
		if skip(name) || (!inJournal[name] && !strings.HasPrefix(name, prefix)) {
			continue
		}
		size, err := imageSize(ioctx, name)
		if err != nil {
			// Removed between listing and opening: not an orphan.
			continue
		}
		out = append(out, ImageSummary{Name: name, Size: size})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func imageSize(ioctx *rados.IOContext, name string) (uint64, error) {
	img, err := librbd.OpenImageReadOnly(ioctx, name, librbd.NoSnapshot)
	if err != nil {
		return 0, err
	}
	defer img.Close()
	return img.GetSize()
}
