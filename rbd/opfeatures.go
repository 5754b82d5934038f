package rbd

// go-ceph has no wrapper for rbd_get_op_features (in librbd since Mimic), so
// this small helper opens its own read-only handle by image ID.

/*
#cgo LDFLAGS: -lrbd
#include <stdlib.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

static int lb_op_features(rados_ioctx_t io, const char *id, uint64_t *out) {
	rbd_image_t img;
	int r = rbd_open_by_id_read_only(io, id, &img, NULL);
	if (r < 0) return r;
	r = rbd_get_op_features(img, out);
	rbd_close(img);
	return r;
}
*/
import "C"

import (
	"fmt"
	"syscall"
	"unsafe"

	"github.com/ceph/go-ceph/rados"
)

// Operation features (librbd's RBD_OPERATION_FEATURE_*): what an image is
// part of, as opposed to what it can do.
const (
	OpCloneParent uint64 = 1 << 0
	OpCloneChild  uint64 = 1 << 1
	OpGroup       uint64 = 1 << 2
	OpSnapTrash   uint64 = 1 << 3
)

var opFeatureNames = []struct {
	bit  uint64
	name string
}{{OpCloneParent, "clone-parent"}, {OpCloneChild, "clone-child"}, {OpGroup, "group"}, {OpSnapTrash, "snap-trash"}}

// OpFeatureNames names the bits set in op, in librbd's order.
func OpFeatureNames(op uint64) []string {
	names := []string{}
	for _, f := range opFeatureNames {
		if op&f.bit != 0 {
			names = append(names, f.name)
		}
	}
	return names
}

func opFeatures(ioctx *rados.IOContext, imageID string) (uint64, error) {
	cid := C.CString(imageID)
	defer C.free(unsafe.Pointer(cid))
	var out C.uint64_t
	if r := C.lb_op_features(C.rados_ioctx_t(ioctx.Pointer()), cid, &out); r < 0 {
		return 0, fmt.Errorf("rbd_get_op_features of image id %s: %w", imageID, syscall.Errno(-r))
	}
	return uint64(out), nil
}
