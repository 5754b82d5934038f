package rbd

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	librbd "github.com/ceph/go-ceph/rbd"

	"github.com/lifeboat-backup/lifeboat/rbd/internal/crbd"
)

// TestOutage: errors of go-ceph and of crbd are told apart the same way.
func TestOutage(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("writing: %w", &crbd.Error{Call: "rbd_aio_write", Errno: syscall.ETIMEDOUT}), true},
		{&crbd.Error{Call: "rbd_open", Errno: syscall.ENOENT}, false},
		{librbd.ErrNotFound, false},
		{errors.New("no errno"), false},
	} {
		if got := outage(c.err); got != c.want {
			t.Errorf("outage(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
