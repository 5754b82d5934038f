package rbd

/*
#include <malloc.h>
*/
import "C"

import "os"

// librbd moves data in buffers of a chunk (1 MiB and up), allocated and
// freed by its messenger threads. glibc serves such buffers from mmap only
// until the first one is freed, then raises its mmap threshold and keeps
// them in per-thread arenas, where freed memory stays resident: about
// 15 MB more RSS for an export or a restore, growing with the data moved.
// A fixed threshold (which also stops the raising) returns every large
// buffer to the kernel on free, and two arenas are plenty for librados'
// few busy threads. The environment (MALLOC_MMAP_THRESHOLD_,
// MALLOC_ARENA_MAX) still wins.
func init() {
	if os.Getenv("MALLOC_MMAP_THRESHOLD_") == "" {
		C.mallopt(C.M_MMAP_THRESHOLD, 128<<10)
	}
	if os.Getenv("MALLOC_ARENA_MAX") == "" {
		C.mallopt(C.M_ARENA_MAX, 2)
	}
}
