package rbd

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"syscall"
	"time"
)

// RetryFor is how long a read is retried while Ceph does not answer it
// within the per-operation timeout (ClusterConfig.Timeout, which librados
// applies as rados_osd_op_timeout): an OSD or monitor restart. librados
// itself reconnects and follows the new OSD map; what fails meanwhile is
// the operation that timed out, so it is sent again.
var RetryFor = 5 * time.Minute

// retryBase and retryMax pace the retries (doubling, jittered).
var retryBase, retryMax = 500 * time.Millisecond, 10 * time.Second

// outage tells errors of a cluster that is restarting or unreachable
// from those retrying cannot fix (a missing image, a bad argument).
func outage(err error) bool {
	var ce interface{ ErrorCode() int }
	if !errors.As(err, &ce) {
		return false
	}
	switch syscall.Errno(-ce.ErrorCode()) {
	case syscall.ETIMEDOUT, syscall.EAGAIN, syscall.ENOTCONN, syscall.ESHUTDOWN, syscall.ECONNREFUSED, syscall.ECONNRESET:
		return true
	}
	return false
}

// retry calls fn until it succeeds, fails with an error that is no
// outage, or an outage outlasts RetryFor; where names what is read.
// waiting counts the calls retrying, for Cluster.Waiting.
func retry(where string, waiting *atomic.Int64, fn func() error) error {
	start, wait := time.Now(), retryBase
	for {
		err := fn()
		if err == nil || !outage(err) {
			return err
		}
		if time.Since(start) >= RetryFor {
			return fmt.Errorf("%w: %w; gave up after retrying %s for %v", ErrUnreachable, err, where, time.Since(start).Round(time.Second))
		}
		if wait == retryBase {
			waiting.Add(1)
			defer waiting.Add(-1)
			slog.Warn("Ceph did not answer a read: retrying", "image", where, "for", RetryFor, "err", err)
		}
		time.Sleep(wait/2 + rand.N(wait/2+1))
		wait = min(2*wait, retryMax)
	}
}
