package objectstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Immutable backups (S3 Object Lock). A repository created with an
// ObjectLock policy has every backup object (config, manifests, extents
// pages, chunks) written with a retain-until date, so that nobody holding
// the S3 credentials, lifeboat included, can delete or overwrite it
// before then. Locks and forget marks are coordination, not backup data:
// they are never retained, or a released lock could not go.
//
// A backup is locked for the policy's duration from its creation
// (Summary.LockedUntil). Its data must outlive it: a chunk is written
// locked for half as long again as the manifest, and an export that
// reuses a chunk (a parent's, or one found in the repository) extends the
// chunk's retention when it is shorter than the new backup's. The half
// duration of slack is what spares most incrementals those checks: while
// the parent's data is still locked past the new backup's own date
// (Summary.DataLockedUntil), nothing taken from the parent is checked.

// ObjectLock is a repository's object-lock policy, in its config.
type ObjectLock struct {
	Mode    string `json:"mode"`           // "governance" or "compliance"
	Seconds int64  `json:"retain_seconds"` // how long a backup stays locked
}

// Object-lock modes, as S3 names them in lower case.
const (
	LockGovernance = "governance"
	LockCompliance = "compliance"
)

// ParseObjectLock parses MODE:DURATION, the duration in Go's notation
// with d for days allowed ("governance:30d", "compliance:720h").
func ParseObjectLock(s string) (*ObjectLock, error) {
	mode, dur, ok := strings.Cut(s, ":")
	mode = strings.ToLower(mode)
	if !ok || (mode != LockGovernance && mode != LockCompliance) {
		return nil, fmt.Errorf("object lock %q: want MODE:DURATION with MODE governance or compliance (e.g. governance:30d)", s)
	}
	d, err := parseDays(dur)
	if err != nil || d < time.Second {
		return nil, fmt.Errorf("object lock %q: the duration %q is not one of at least 1s (e.g. 30d, 720h, 40s)", s, dur)
	}
	return &ObjectLock{Mode: mode, Seconds: int64(d / time.Second)}, nil
}

func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		return time.Duration(days) * 24 * time.Hour, err
	}
	return time.ParseDuration(s)
}

// Retain is how long a backup stays locked.
func (p *ObjectLock) Retain() time.Duration { return time.Duration(p.Seconds) * time.Second }

func (p *ObjectLock) String() string { return fmt.Sprintf("%s:%v", p.Mode, p.Retain()) }

func (p *ObjectLock) check() error {
	if p.Mode != LockGovernance && p.Mode != LockCompliance || p.Seconds < 1 {
		return fmt.Errorf("bad object lock %q for %ds", p.Mode, p.Seconds)
	}
	return nil
}

// Retainer is a Backend on storage with object lock.
type Retainer interface {
	// ObjectLockEnabled reports whether the bucket has object lock on.
	ObjectLockEnabled(ctx context.Context) (bool, error)
	// PutRetained is Put with the object locked in mode until until.
	PutRetained(ctx context.Context, name string, data []byte, mode string, until time.Time) error
	// RetainedUntil is the object's retain-until date (zero: none); it
	// costs one HEAD. The error wraps ErrNotFound for a missing object.
	RetainedUntil(ctx context.Context, name string) (time.Time, error)
	// Retain sets the object's retain-until date to until, which must
	// not be earlier than its current one.
	Retain(ctx context.Context, name, mode string, until time.Time) error
	// DeleteVersions deletes every version of the object, so that the
	// storage is freed (a plain delete in a bucket with object lock only
	// hides it). A version still locked fails with a *RetainedError.
	DeleteVersions(ctx context.Context, name string) error
}

// ErrRetained: an object is locked (S3 Object Lock) and cannot be deleted yet.
var ErrRetained = errors.New("locked by S3 Object Lock")

// RetainedError names a locked object and until when it is locked (zero
// if the server did not say).
type RetainedError struct {
	Name  string
	Until time.Time
}

func (e *RetainedError) Error() string {
	if e.Until.IsZero() {
		return fmt.Sprintf("%s is %v", e.Name, ErrRetained)
	}
	return fmt.Sprintf("%s is %v until %s", e.Name, ErrRetained, e.Until.UTC().Format(time.RFC3339))
}

func (e *RetainedError) Unwrap() error { return ErrRetained }

// retained reports whether name is kept unlocked: locks and forget marks
// must go when their holder is done.
func retained(name string) bool {
	return !strings.HasPrefix(name, locksPrefix) && !strings.HasPrefix(name, marksPrefix)
}

// retainUntil is the one place that decides an object's retain-until
// date: zero when the repository has no object lock or name is not
// retained; for a backup created at t, its manifest (backups/) is locked
// until t plus the policy's duration; data (chunks, pages) written or
// extended at t half as long again (see above); the config like a
// manifest. Dates are rounded up to the second S3 keeps.
func (r *Repository) retainUntil(name string, t time.Time) time.Time {
	p := r.cfg.ObjectLock
	if p == nil || !retained(name) {
		return time.Time{}
	}
	d := p.Retain()
	if strings.HasPrefix(name, "data/") || strings.HasPrefix(name, "pages/") {
		d += d / 2
	}
	return t.Add(d).Truncate(time.Second).Add(time.Second).UTC()
}

// retainer is the backend as a Retainer when the repository locks objects.
func (r *Repository) retainer() Retainer {
	if r.cfg.ObjectLock == nil {
		return nil
	}
	rt, _ := r.be.(Retainer)
	return rt
}

// putUntil stores name locked until until (zero: not locked).
func (r *Repository) putUntil(ctx context.Context, name string, data []byte, until time.Time) error {
	rt := r.retainer()
	if rt == nil || until.IsZero() {
		return r.retry(ctx, func() error { return r.be.Put(ctx, name, data) })
	}
	return r.retry(ctx, func() error { return rt.PutRetained(ctx, name, data, r.cfg.ObjectLock.Mode, until) })
}

// retainedUntil is the object's retain-until date, zero without object lock.
func (r *Repository) retainedUntil(ctx context.Context, name string) (until time.Time, err error) {
	rt := r.retainer()
	if rt == nil {
		return time.Time{}, nil
	}
	err = r.retry(ctx, func() error {
		until, err = rt.RetainedUntil(ctx, name)
		return err
	})
	return until, err
}

// keepUntil makes sure name stays locked at least until need: it reads
// the retain-until date (a HEAD) and, only when it is earlier, extends it
// to what a write now would get. It returns the date the object has now
// and whether it extended it.
func (r *Repository) keepUntil(ctx context.Context, name string, need time.Time) (time.Time, bool, error) {
	until, err := r.retainedUntil(ctx, name)
	if err != nil || !until.Before(need) {
		return until, false, err
	}
	until = r.retainUntil(name, time.Now())
	rt := r.retainer()
	err = r.retry(ctx, func() error { return rt.Retain(ctx, name, r.cfg.ObjectLock.Mode, until) })
	if err != nil {
		return time.Time{}, false, fmt.Errorf("extending the object lock of %s to %s: %w", name, until.Format(time.RFC3339), err)
	}
	return until, true, nil
}

// lockedNow is a *RetainedError if name is locked past now, else nil (an
// object already gone is not locked).
func (r *Repository) lockedNow(ctx context.Context, name string) error {
	until, err := r.retainedUntil(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return err
	case until.After(time.Now()):
		return &RetainedError{Name: name, Until: until}
	}
	return nil
}
