package crbd

/*
#include <malloc.h>
#include <stdlib.h>
*/
import "C"

import (
	"os"
	"unsafe"
)

// librbd moves data in buffers of a chunk (1 MiB and up), allocated and
// freed by its messenger threads. glibc serves such buffers from mmap only
// until the first one is freed, then raises its mmap threshold and keeps
// them in per-thread arenas, where freed memory stays resident: about
// 15 MB more RSS for an export or a restore, growing with the data moved.
// A fixed threshold (which also stops the raising) returns every large
// buffer to the kernel on free, and two arenas are plenty for librados'
// few busy threads. The environment (MALLOC_MMAP_THRESHOLD_,
// MALLOC_ARENA_MAX) still wins.
//
// Implements:
//
//	int mallopt(int param, int value);
func init() {
	if os.Getenv("MALLOC_MMAP_THRESHOLD_") == "" {
		C.mallopt(C.M_MMAP_THRESHOLD, 128<<10)
	}
	if os.Getenv("MALLOC_ARENA_MAX") == "" {
		C.mallopt(C.M_ARENA_MAX, 2)
	}
}

// Malloc returns n bytes of C memory as a slice, for buffers librbd reads
// without copying (Image.Write); Go's collector neither moves nor frees
// them: Free does.
//
// Implements:
//
//	void *malloc(size_t size);
func Malloc(n int) []byte {
	return unsafe.Slice((*byte)(C.malloc(C.size_t(n))), n)
}

// Free releases a buffer from Malloc (any slice of it that starts where
// it starts).
//
// Implements:
//
//	void free(void *ptr);
func Free(b []byte) {
	C.free(unsafe.Pointer(unsafe.SliceData(b)))
}
