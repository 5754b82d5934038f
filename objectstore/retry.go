package objectstore

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Retry policy for backend calls. S3 throttles (503 SlowDown), resets
// connections and has the odd 500; all of these clear up within seconds.
// Six attempts with doubling, jittered waits span about 6 seconds.
var (
	retryAttempts = 6
	retryBase     = 200 * time.Millisecond
	retryMax      = 3 * time.Second
)

// permanent tells errors that retrying cannot fix.
func permanent(err error) bool {
	for _, p := range []error{ErrNotFound, ErrExists, ErrCorrupt, ErrCredentials, ErrNoBucket} {
		if errors.Is(err, p) {
			return true
		}
	}
	return false
}

// retry calls fn until it succeeds, fails permanently, ctx ends or the
// attempts run out; it returns fn's last error.
func retry(ctx context.Context, fn func() error) error {
	wait := retryBase
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || permanent(err) || ctx.Err() != nil || attempt == retryAttempts {
			return err
		}
		// Full jitter keeps parallel uploads from retrying in lockstep.
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
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

func (r *Repository) put(ctx context.Context, name string, data []byte) error {
	return retry(ctx, func() error { return r.be.Put(ctx, name, data) })
}

func (r *Repository) delete(ctx context.Context, name string) error {
	return retry(ctx, func() error { return r.be.Delete(ctx, name) })
}

// create is Creator.Create where the backend has it, else put. A retry
// after a lost answer to a Create that did succeed sees ErrExists.
func (r *Repository) create(ctx context.Context, name string, data []byte) error {
	c, ok := r.be.(Creator)
	if !ok {
		return r.put(ctx, name, data)
	}
	return retry(ctx, func() error { return c.Create(ctx, name, data) })
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
	err = retry(ctx, func() error {
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
	err := retry(ctx, func() error {
		_, err := r.be.Stat(ctx, name)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
