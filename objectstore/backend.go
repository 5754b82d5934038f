package objectstore

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Backend stores whole objects by name. Names are relative to the
// repository root ("config", "data/ab/ab12…", "backups/<id>"); a backend
// maps them under its own prefix.
//
// Objects are small (at most a chunk plus a few bytes, or one manifest),
// so they travel as byte slices: that keeps retries trivial and lets S3 do a
// single atomic PUT with a known Content-Length. A Put is all-or-nothing:
// a reader never sees a partial object.
type Backend interface {
	// Put stores data under name, replacing any object there. The backend
	// must not keep data after returning.
	Put(ctx context.Context, name string, data []byte) error
	// Get returns the object's content, or an error wrapping ErrNotFound.
	Get(ctx context.Context, name string) ([]byte, error)
	// Stat returns the object's size, or an error wrapping ErrNotFound.
	Stat(ctx context.Context, name string) (int64, error)
	// List calls fn for every object whose name starts with prefix, in
	// lexical order. An error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(name string, size int64) error) error
	// Delete removes the object; deleting a missing object is not an error.
	Delete(ctx context.Context, name string) error
	// String names the location for messages (never with credentials).
	String() string
}

// Into is a Backend that can read an object into the caller's buffer, so
// that a restore reuses a few buffers instead of allocating (and the
// kernel faulting in) a new one per chunk.
type Into interface {
	// GetInto is Get, returning the content in buf's storage when it is
	// large enough. An object over limit bytes (limit ≥ 0) is not read:
	// the error wraps ErrCorrupt, so a damaged or planted object cannot
	// make the reader allocate without bound.
	GetInto(ctx context.Context, name string, buf []byte, limit int64) ([]byte, error)
}

// tooLarge is the error of an object over GetInto's limit.
func tooLarge(where string, size, limit int64) error {
	return fmt.Errorf("%w: %s is %d bytes, larger than the %d it can be", ErrCorrupt, where, size, limit)
}

// Creator is a Backend that can store an object only if none of that
// name exists, atomically (S3's conditional PUT, If-None-Match: *). Init
// uses it for the config, so of two concurrent `repo init`s of one
// location exactly one wins and the other's key is never half-used.
type Creator interface {
	// Create is Put that fails with an error wrapping ErrExists, and
	// changes nothing, if name exists.
	Create(ctx context.Context, name string, data []byte) error
}

// Memory is an in-memory Backend for tests.
type Memory struct {
	mu      sync.Mutex
	objects map[string][]byte
	locking bool                 // a "bucket" with object lock
	until   map[string]time.Time // retain-until dates
	// DenyDelete makes Delete and DeleteVersions fail as S3 does for
	// credentials without delete permission.
	DenyDelete bool
}

// NewLockedMemory is NewMemory with object lock on, for tests of it.
func NewLockedMemory() *Memory {
	m := NewMemory()
	m.locking, m.until = true, map[string]time.Time{}
	return m
}

func (m *Memory) ObjectLockEnabled(context.Context) (bool, error) { return m.locking, nil }

// PutRetained keeps the later of the old and new dates: S3 keeps the old
// version, locked, beside the new.
func (m *Memory) PutRetained(_ context.Context, name string, data []byte, _ string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.locking {
		return fmt.Errorf("%s: the memory backend has no object lock", name)
	}
	m.objects[name] = append([]byte(nil), data...)
	if until.After(m.until[name]) {
		m.until[name] = until
	}
	return nil
}

func (m *Memory) RetainedUntil(_ context.Context, name string) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objects[name]; !ok {
		return time.Time{}, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	return m.until[name], nil
}

// Retain refuses to shorten a retention, as S3 does in compliance mode.
func (m *Memory) Retain(_ context.Context, name, _ string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.locking {
		return fmt.Errorf("%s: the memory backend has no object lock", name)
	}
	if _, ok := m.objects[name]; !ok {
		return fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	if until.Before(m.until[name]) {
		return fmt.Errorf("%s: retention cannot be shortened", name)
	}
	m.until[name] = until
	return nil
}

func (m *Memory) DeleteVersions(ctx context.Context, name string) error { return m.Delete(ctx, name) }

// NewMemory returns an empty in-memory backend. It is meant for tests:
// nothing survives the process.
func NewMemory() *Memory { return &Memory{objects: map[string][]byte{}} }

func (m *Memory) Put(_ context.Context, name string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objects[name] = append([]byte(nil), data...)
	return nil
}

func (m *Memory) Create(_ context.Context, name string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objects[name]; ok {
		return fmt.Errorf("%s: %w", name, ErrExists)
	}
	m.objects[name] = append([]byte(nil), data...)
	return nil
}

func (m *Memory) Get(ctx context.Context, name string) ([]byte, error) {
	return m.GetInto(ctx, name, nil, -1)
}

func (m *Memory) GetInto(_ context.Context, name string, buf []byte, limit int64) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	data, ok := m.objects[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	if limit >= 0 && int64(len(data)) > limit {
		return nil, tooLarge(name, int64(len(data)), limit)
	}
	if buf == nil {
		buf = []byte{} // a copy, never the stored slice, even when empty
	}
	return append(buf[:0], data...), nil
}

func (m *Memory) Stat(_ context.Context, name string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	data, ok := m.objects[name]
	if !ok {
		return 0, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	return int64(len(data)), nil
}

func (m *Memory) List(ctx context.Context, prefix string, fn func(string, int64) error) error {
	// Snapshot first so fn may call back into the backend.
	m.mu.Lock()
	var names []string
	sizes := map[string]int64{}
	for name, data := range m.objects {
		if strings.HasPrefix(name, prefix) {
			names = append(names, name)
			sizes[name] = int64(len(data))
		}
	}
	m.mu.Unlock()
	sort.Strings(names)
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(name, sizes[name]); err != nil {
			return err
		}
	}
	return nil
}

func (m *Memory) Delete(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.DenyDelete {
		return fmt.Errorf("deleting %s: %w (AccessDenied)", name, ErrCredentials)
	}
	if until := m.until[name]; until.After(time.Now()) {
		return &RetainedError{Name: name, Until: until}
	}
	delete(m.objects, name)
	delete(m.until, name)
	return nil
}

func (m *Memory) String() string { return "memory" }
