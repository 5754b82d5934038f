package objectstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// DefaultRetryFor is how long a backend call is retried while the service
// is down or overloaded (connection refused or reset, timeouts, 5xx,
// 429/SlowDown): long enough for a restart, a rolling upgrade or a
// load-balancer failover. restic waits 15 minutes; a backup that waits
// longer only hides an outage someone should look at.
const DefaultRetryFor = 5 * time.Minute

// Retry policy for backend calls. An outage (transient) is retried for
// the repository's retryFor, with doubling, jittered waits up to
// retryMax; any other error that is not permanent (an answer of a kind
// nothing here expects) gets retryAttempts tries.
var (
	retryAttempts = 6
	retryBase     = 200 * time.Millisecond
	retryMax      = 10 * time.Second
)

// permanent tells errors that retrying cannot fix.
func permanent(err error) bool {
	for _, p := range []error{ErrNotFound, ErrExists, ErrCorrupt, ErrCredentials, ErrNoBucket, ErrRetained} {
		if errors.Is(err, p) {
			return true
		}
	}
	return false
}

// transient tells errors of a service that is down or overloaded.
func transient(err error) bool {
	return errors.Is(err, ErrUnreachable) || errors.Is(err, ErrUnavailable)
}

// health is what the repository's backend calls last saw: whether the
// service is in an outage, since when, and its last error.
type health struct {
	mu    sync.Mutex
	since time.Time // zero: no outage
	err   error
}

func (h *health) failed(err error) (first bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	first = h.since.IsZero()
	if first {
		h.since = time.Now()
	}
	h.err = err
	return first
}

func (h *health) ok() (was time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	was, h.since, h.err = h.since, time.Time{}, nil
	return was
}

// Outage returns the last error of an outage of the backend (S3
// unreachable or answering 5xx or 429) and when it began, or nil while
// the last backend call got an answer. Callers retry through outages for
// the repository's retry window (SetRetryFor); Outage lets a watcher
// report one meanwhile.
func (r *Repository) Outage() (error, time.Time) {
	r.health.mu.Lock()
	defer r.health.mu.Unlock()
	return r.health.err, r.health.since
}

// SetRetryFor sets how long a backend call is retried through an outage
// (default DefaultRetryFor; d ≤ 0 keeps it).
func (r *Repository) SetRetryFor(d time.Duration) {
	if d > 0 {
		r.retryFor = d
	}
}

func (r *Repository) window() time.Duration {
	if r.retryFor > 0 {
		return r.retryFor
	}
	return DefaultRetryFor
}

// retry calls fn until it succeeds, fails permanently, ctx ends, an
// outage outlasts the retry window or other errors use up their attempts;
// it returns fn's last error, and says how long it tried if it gave up
// on an outage.
func (r *Repository) retry(ctx context.Context, fn func() error) error {
	start, wait, others := time.Now(), retryBase, 0
	for {
		err := fn()
		if err == nil {
			if was := r.health.ok(); !was.IsZero() {
				slog.Info("S3 answers again", "repository", r.be.String(), "after", time.Since(was).Round(time.Second))
			}
			return nil
		}
		if permanent(err) || ctx.Err() != nil {
			return err
		}
		left := r.window() - time.Since(start)
		if transient(err) {
			if r.health.failed(err) {
				slog.Warn("S3 outage: retrying", "repository", r.be.String(), "for", r.window(), "err", err)
			}
			if left <= 0 {
				return fmt.Errorf("%w; gave up after retrying for %v (the retry window: --s3-retry-for, s3.retryFor)",
					err, time.Since(start).Round(time.Second))
			}
		} else if others++; others >= retryAttempts {
			return err
		}
		// Full jitter keeps parallel uploads from retrying in lockstep;
		// the last try falls at the end of the window, not past it.
		d := wait/2 + rand.N(wait/2+1)
		if transient(err) {
			d = min(d, left)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, retryMax)
	}
}

// Backend calls with retries.

// put stores name, locked as retainUntil says when the repository has
// object lock.
func (r *Repository) put(ctx context.Context, name string, data []byte) error {
	return r.putUntil(ctx, name, data, r.retainUntil(name, time.Now()))
}

// delete removes name; with object lock every version of it, so that the
// storage is freed rather than the object hidden behind a delete marker.
func (r *Repository) delete(ctx context.Context, name string) error {
	if rt := r.retainer(); rt != nil {
		return r.retry(ctx, func() error { return rt.DeleteVersions(ctx, name) })
	}
	return r.retry(ctx, func() error { return r.be.Delete(ctx, name) })
}

// create is Creator.Create where the backend has it, else put. A retry
// after a lost answer to a Create that did succeed sees ErrExists.
func (r *Repository) create(ctx context.Context, name string, data []byte) error {
	c, ok := r.be.(Creator)
	if !ok {
		return r.put(ctx, name, data)
	}
	return r.retry(ctx, func() error { return c.Create(ctx, name, data) })
}

// get reads a config, manifest or extents page: at most maxObject bytes.
func (r *Repository) get(ctx context.Context, name string) ([]byte, error) {
	return r.getInto(ctx, name, nil, maxObject)
}

// maxObject bounds any stored object but a chunk: a manifest or page
// decodes to at most maxManifest bytes, and encode stores it raw, with a
// few bytes of header, nonce and tag, if compressing it does not pay.
const maxObject = maxManifest + 64

// getInto is get into buf's storage, if the backend can (an Into) and buf
// is large enough; an object over limit bytes is refused as corrupt.
func (r *Repository) getInto(ctx context.Context, name string, buf []byte, limit int64) (data []byte, err error) {
	into, ok := r.be.(Into)
	err = r.retry(ctx, func() error {
		if ok {
			data, err = into.GetInto(ctx, name, buf, limit)
		} else if data, err = r.be.Get(ctx, name); err == nil && int64(len(data)) > limit {
			err = tooLarge(name, int64(len(data)), limit)
		}
		return err
	})
	return data, err
}

// exists reports whether the object is present; only a definite "not
// found" counts as absent.
func (r *Repository) exists(ctx context.Context, name string) (bool, error) {
	err := r.retry(ctx, func() error {
		_, err := r.be.Stat(ctx, name)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// list is Backend.List with retries: a listing cut off by an outage
// starts again, and fn sees only the names after the last it saw (a
// listing is in lexical order). An error of fn stops it, unretried.
func (r *Repository) list(ctx context.Context, prefix string, fn func(name string, size int64) error) error {
	last, stop := "", error(nil)
	err := r.retry(ctx, func() error {
		err := r.be.List(ctx, prefix, func(name string, size int64) error {
			if last != "" && name <= last {
				return nil
			}
			last = name
			stop = fn(name, size)
			return stop
		})
		if stop != nil {
			return nil
		}
		return err
	})
	if stop != nil {
		return stop
	}
	return err
}
