package rbd

import (
	"fmt"
	"slices"
	"strings"

	librbd "github.com/ceph/go-ceph/rbd"

	"github.com/lifeboat-backup/lifeboat/rbd/internal/crbd"
)

// This file is lifeboat's one table of RBD features: the bits and names
// come from librbd.h, through go-ceph's constants where it has them and
// crbd's where it does not.

// Image features lifeboat tests or creates images with.
const (
	FeatureLayering    = librbd.FeatureLayering
	FeatureObjectMap   = librbd.FeatureObjectMap
	FeatureFastDiff    = librbd.FeatureFastDiff
	FeatureDeepFlatten = librbd.FeatureDeepFlatten
	FeatureOperations  = librbd.FeatureOperations
)

// Operation features (librbd's RBD_OPERATION_FEATURE_*): what an image is
// part of, as opposed to what it can do.
const (
	OpCloneParent = crbd.OpFeatureCloneParent
	OpCloneChild  = crbd.OpFeatureCloneChild
	OpGroup       = crbd.OpFeatureGroup
	OpSnapTrash   = crbd.OpFeatureSnapTrash
)

type namedBit struct {
	bit  uint64
	name string
}

// features are every image feature, in the order `rbd info` prints them
// (go-ceph's FeatureSet.Names walks a map: no order).
var features = []namedBit{
	{librbd.FeatureLayering, librbd.FeatureNameLayering},
	{librbd.FeatureStripingV2, librbd.FeatureNameStripingV2},
	{librbd.FeatureExclusiveLock, librbd.FeatureNameExclusiveLock},
	{librbd.FeatureObjectMap, librbd.FeatureNameObjectMap},
	{librbd.FeatureFastDiff, librbd.FeatureNameFastDiff},
	{librbd.FeatureDeepFlatten, librbd.FeatureNameDeepFlatten},
	{librbd.FeatureJournaling, librbd.FeatureNameJournaling},
	{librbd.FeatureDataPool, librbd.FeatureNameDataPool},
	{librbd.FeatureOperations, librbd.FeatureNameOperations},
	{librbd.FeatureMigrating, librbd.FeatureNameMigrating},
	{crbd.FeatureNonPrimary, crbd.FeatureNameNonPrimary},
	{crbd.FeatureDirtyCache, crbd.FeatureNameDirtyCache},
}

var opFeatures = []namedBit{
	{OpCloneParent, crbd.OpFeatureNameCloneParent},
	{OpCloneChild, crbd.OpFeatureNameCloneChild},
	{OpGroup, crbd.OpFeatureNameGroup},
	{OpSnapTrash, crbd.OpFeatureNameSnapTrash},
}

// creatable are the features a new image may be created with; the others
// (operations, migrating, non-primary, ...) are set by librbd itself.
const creatable = librbd.FeatureLayering | librbd.FeatureExclusiveLock | librbd.FeatureObjectMap |
	librbd.FeatureFastDiff | librbd.FeatureDeepFlatten

// FeatureNames names the bits set in f, in the order `rbd info` prints them.
func FeatureNames(f uint64) []string { return names(features, f) }

// OpFeatureNames names the bits set in op, in librbd's order.
func OpFeatureNames(op uint64) []string { return names(opFeatures, op) }

func names(table []namedBit, f uint64) []string {
	out := []string{}
	for _, n := range table {
		if f&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

// ParseFeatures turns a comma-separated list of feature names, as `rbd
// info` prints them and FeatureNames returns them ("layering,deep-flatten";
// spaces around names and empty items are ignored), into feature bits. An
// unknown name fails. It is the one parser: restore reads a backup's
// features with it, the simulated ceph-csi (test/csidriver) a
// StorageClass's imageFeatures; what may be set on a new image is the
// caller's to decide (CreateImage keeps only what librbd lets it create).
func ParseFeatures(list string) (uint64, error) {
	var f uint64
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		i := slices.IndexFunc(features, func(n namedBit) bool { return n.name == name })
		if i < 0 {
			return 0, fmt.Errorf("unknown RBD feature %q (librbd knows %s)", name, strings.Join(FeatureNames(^uint64(0)), ", "))
		}
		f |= features[i].bit
	}
	return f, nil
}
