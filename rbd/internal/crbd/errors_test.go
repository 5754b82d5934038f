package crbd

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	librbd "github.com/ceph/go-ceph/rbd"
)

func TestError(t *testing.T) {
	err := fmt.Errorf("opening p/i: %w", &Error{Call: "rbd_open", Errno: syscall.ENOENT})
	if !errors.Is(err, librbd.ErrNotFound) || !errors.Is(err, syscall.ENOENT) {
		t.Errorf("%v is not librbd.ErrNotFound and ENOENT", err)
	}
	if got := err.Error(); got != "opening p/i: rbd_open: no such file or directory" {
		t.Errorf("message %q", got)
	}
	timeout := error(&Error{Call: "rbd_aio_write", Errno: syscall.ETIMEDOUT})
	if errors.Is(timeout, librbd.ErrNotFound) {
		t.Errorf("%v is librbd.ErrNotFound", timeout)
	}
	var ce interface{ ErrorCode() int }
	if !errors.As(timeout, &ce) || ce.ErrorCode() != -int(syscall.ETIMEDOUT) {
		t.Errorf("%v has no go-ceph ErrorCode -ETIMEDOUT", timeout)
	}
}
