// Package crbd holds lifeboat's own cgo calls into librbd, for what
// go-ceph's rbd package does not offer: zero-copy AIO writes into C memory
// (see Image.Write) and rbd_get_op_features. It follows go-ceph's style:
// one C call per Go function, its C prototype in the doc comment, and
// every negative return value turned into an error by one function,
// errorOf.
//
// It is internal to rbd: the rest of lifeboat goes through rbd.
package crbd

/*
#include <errno.h>
*/
import "C"

import (
	"syscall"

	librbd "github.com/ceph/go-ceph/rbd"
)

// Error is the negative errno a librbd call returned.
type Error struct {
	Call  string // the C function, e.g. "rbd_open"
	Errno syscall.Errno
}

func (e *Error) Error() string { return e.Call + ": " + e.Errno.Error() }

// Unwrap lets errors.Is match the errno (syscall.ENOENT, ...).
func (e *Error) Unwrap() error { return e.Errno }

// ErrorCode is the negative errno, as go-ceph's errors report it: rbd's
// retry tells an outage (ETIMEDOUT, ...) from other errors by it.
func (e *Error) ErrorCode() int { return -int(e.Errno) }

// Is makes ENOENT match go-ceph's librbd.ErrNotFound, as go-ceph's own
// ENOENT errors do, so callers test "not found" one way.
func (e *Error) Is(target error) bool {
	return target == librbd.ErrNotFound && e.Errno == syscall.ENOENT
}

// errorOf is the one errno → error mapping: nil for r >= 0, else an
// *Error naming call.
func errorOf(call string, r C.int) error {
	if r >= 0 {
		return nil
	}
	return &Error{Call: call, Errno: syscall.Errno(-r)}
}
