package crbd

// #include <rbd/features.h>
import "C"

// Feature bits and names librbd.h defines that go-ceph (v0.38) does not
// export: two internal image features, which `rbd info` still prints, and
// the operation features (RBD_OPERATION_FEATURE_*), which say what an image
// is part of rather than what it can do. rbd/features.go names them all.
const (
	FeatureNonPrimary     = uint64(C.RBD_FEATURE_NON_PRIMARY)
	FeatureDirtyCache     = uint64(C.RBD_FEATURE_DIRTY_CACHE)
	FeatureNameNonPrimary = C.RBD_FEATURE_NAME_NON_PRIMARY
	FeatureNameDirtyCache = C.RBD_FEATURE_NAME_DIRTY_CACHE

	OpFeatureCloneParent     = uint64(C.RBD_OPERATION_FEATURE_CLONE_PARENT)
	OpFeatureCloneChild      = uint64(C.RBD_OPERATION_FEATURE_CLONE_CHILD)
	OpFeatureGroup           = uint64(C.RBD_OPERATION_FEATURE_GROUP)
	OpFeatureSnapTrash       = uint64(C.RBD_OPERATION_FEATURE_SNAP_TRASH)
	OpFeatureNameCloneParent = C.RBD_OPERATION_FEATURE_NAME_CLONE_PARENT
	OpFeatureNameCloneChild  = C.RBD_OPERATION_FEATURE_NAME_CLONE_CHILD
	OpFeatureNameGroup       = C.RBD_OPERATION_FEATURE_NAME_GROUP
	OpFeatureNameSnapTrash   = C.RBD_OPERATION_FEATURE_NAME_SNAP_TRASH
)
