package crbd

/*
#cgo LDFLAGS: -lrbd
#include <stdlib.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

// lb_write is rbd_aio_write made synchronous: it writes len bytes of buf at
// off and waits. AIO because only AIO writes are zero-copy (with
// rbd_disable_zero_copy_writes=false): librbd then sends buf itself and
// completes only once it holds no reference to it, so the caller may
// reuse buf at once. librbd's synchronous rbd_write, all go-ceph offers,
// copies every write into a fresh buffer.
static int lb_write(rbd_image_t img, uint64_t off, size_t len, const char *buf) {
	rbd_completion_t c;
	int r = rbd_aio_create_completion(NULL, NULL, &c);
	if (r < 0) return r;
	r = rbd_aio_write(img, off, len, buf, c);
	if (r < 0) {
		rbd_aio_release(c);
		return r;
	}
	rbd_aio_wait_for_complete(c);
	r = (int)rbd_aio_get_return_value(c);
	rbd_aio_release(c);
	return r < 0 ? r : 0;
}

// lb_zero is rbd_writesame of zeros, without a Go buffer to pass.
static int lb_zero(rbd_image_t img, uint64_t off, size_t len) {
	static const char zeros[512];
	ssize_t r = rbd_writesame(img, off, len, zeros, sizeof zeros, 0);
	return r < 0 ? (int)r : 0;
}
*/
import "C"

import (
	"unsafe"

	"github.com/ceph/go-ceph/rados"
)

// Image is an open librbd image handle. Write and OpFeatures may be called
// concurrently (librbd locks the image); Close must be the last call.
type Image struct {
	img C.rbd_image_t
}

func ioctxOf(ioctx *rados.IOContext) C.rados_ioctx_t {
	return C.rados_ioctx_t(ioctx.Pointer())
}

// Open opens image name for writing, at its head.
//
// Implements:
//
//	int rbd_open(rados_ioctx_t io, const char *name, rbd_image_t *image,
//	             const char *snap_name);
func Open(ioctx *rados.IOContext, name string) (*Image, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var img C.rbd_image_t
	if err := errorOf("rbd_open", C.rbd_open(ioctxOf(ioctx), cname, &img, nil)); err != nil {
		return nil, err
	}
	return &Image{img: img}, nil
}

// OpenByIDReadOnly opens the image with that id (in the RBD trash too)
// read-only, at its head.
//
// Implements:
//
//	int rbd_open_by_id_read_only(rados_ioctx_t io, const char *id,
//	                             rbd_image_t *image, const char *snap_name);
func OpenByIDReadOnly(ioctx *rados.IOContext, id string) (*Image, error) {
	cid := C.CString(id)
	defer C.free(unsafe.Pointer(cid))
	var img C.rbd_image_t
	if err := errorOf("rbd_open_by_id_read_only", C.rbd_open_by_id_read_only(ioctxOf(ioctx), cid, &img, nil)); err != nil {
		return nil, err
	}
	return &Image{img: img}, nil
}

// Close closes the image.
//
// Implements:
//
//	int rbd_close(rbd_image_t image);
func (i *Image) Close() error {
	return errorOf("rbd_close", C.rbd_close(i.img))
}

// ObjectSize is the size of the image's RADOS objects.
//
// Implements:
//
//	int rbd_stat(rbd_image_t image, rbd_image_info_t *info, size_t infosize);
func (i *Image) ObjectSize() (uint64, error) {
	var st C.rbd_image_info_t
	if err := errorOf("rbd_stat", C.rbd_stat(i.img, &st, C.sizeof_rbd_image_info_t)); err != nil {
		return 0, err
	}
	return uint64(st.obj_size), nil
}

// OpFeatures returns the image's operation features
// (RBD_OPERATION_FEATURE_*), which go-ceph has no call for.
//
// Implements:
//
//	int rbd_get_op_features(rbd_image_t image, uint64_t *op_features);
func (i *Image) OpFeatures() (uint64, error) {
	var out C.uint64_t
	if err := errorOf("rbd_get_op_features", C.rbd_get_op_features(i.img, &out)); err != nil {
		return 0, err
	}
	return uint64(out), nil
}

// Write writes buf at off and returns once librbd is done with buf. buf
// must be C memory (Malloc): librbd sends it as it is, without a copy.
//
// Implements (see lb_write):
//
//	int rbd_aio_write(rbd_image_t image, uint64_t off, size_t len,
//	                  const char *buf, rbd_completion_t c);
func (i *Image) Write(buf []byte, off uint64) error {
	p := (*C.char)(unsafe.Pointer(unsafe.SliceData(buf)))
	return errorOf("rbd_aio_write", C.lb_write(i.img, C.uint64_t(off), C.size_t(len(buf)), p))
}

// Zero makes [off, off+n) read as zeros.
//
// Implements (see lb_zero):
//
//	ssize_t rbd_writesame(rbd_image_t image, uint64_t ofs, size_t len,
//	                      const char *buf, size_t data_len, int op_flags);
func (i *Image) Zero(off, n uint64) error {
	return errorOf("rbd_writesame", C.lb_zero(i.img, C.uint64_t(off), C.size_t(n)))
}

// Flush waits for the image's writes to be persisted.
//
// Implements:
//
//	int rbd_flush(rbd_image_t image);
func (i *Image) Flush() error {
	return errorOf("rbd_flush", C.rbd_flush(i.img))
}

// Resize sets the image's size.
//
// Implements:
//
//	int rbd_resize(rbd_image_t image, uint64_t size);
func (i *Image) Resize(size uint64) error {
	return errorOf("rbd_resize", C.rbd_resize(i.img, C.uint64_t(size)))
}

// SnapCreate creates a user snapshot of the image's head.
//
// Implements:
//
//	int rbd_snap_create(rbd_image_t image, const char *snapname);
func (i *Image) SnapCreate(name string) error {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	return errorOf("rbd_snap_create", C.rbd_snap_create(i.img, cname))
}
