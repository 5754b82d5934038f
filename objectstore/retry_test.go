package objectstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// down is a backend that is unreachable until up is set, and whose
// listings break off after the first name while down.
type down struct {
	Backend
	up    atomic.Bool
	calls atomic.Int64
}

func (d *down) fail() error {
	d.calls.Add(1)
	if d.up.Load() {
		return nil
	}
	return fmt.Errorf("writing http://127.0.0.1:1/b/x: %w: connection refused", ErrUnreachable)
}

func (d *down) Put(ctx context.Context, name string, data []byte) error {
	if err := d.fail(); err != nil {
		return err
	}
	return d.Backend.Put(ctx, name, data)
}

func (d *down) Get(ctx context.Context, name string) ([]byte, error) {
	if err := d.fail(); err != nil {
		return nil, err
	}
	return d.Backend.Get(ctx, name)
}

func (d *down) List(ctx context.Context, prefix string, fn func(string, int64) error) error {
	up := d.up.Load()
	n := 0
	err := d.Backend.List(ctx, prefix, func(name string, size int64) error {
		if n++; n > 1 && !up {
			return d.fail()
		}
		return fn(name, size)
	})
	return err
}

// TestRetryRidesThroughOutage: calls wait through an outage shorter than
// the window, Outage reports it meanwhile, and a listing cut off by it
// resumes without repeating a name.
func TestRetryRidesThroughOutage(t *testing.T) {
	ctx := context.Background()
	mem := NewMemory()
	r := newRepo(t, mem, nil)
	for _, n := range []string{"backups/a", "backups/b", "backups/c"} {
		mem.Put(ctx, n, nil)
	}
	be := &down{Backend: mem}
	r.be = be
	r.SetRetryFor(time.Minute)
	go func() {
		time.Sleep(200 * time.Millisecond)
		if err, since := r.Outage(); err == nil || since.IsZero() {
			t.Errorf("Outage during the outage: %v %v", err, since)
		}
		be.up.Store(true)
	}()
	if err := r.put(ctx, "x", []byte("y")); err != nil {
		t.Fatal(err)
	}
	if err, _ := r.Outage(); err != nil {
		t.Errorf("Outage after it: %v", err)
	}
	be.up.Store(false)
	go func() { time.Sleep(100 * time.Millisecond); be.up.Store(true) }()
	var names []string
	if err := r.list(ctx, "backups/", func(n string, _ int64) error { names = append(names, n); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "backups/a,backups/b,backups/c" {
		t.Fatalf("listing across an outage: %v", names)
	}
}

// TestRetryGivesUp: an outage longer than the window ends in an error
// that wraps ErrUnreachable, names the endpoint and how long it tried,
// within the window and a little.
func TestRetryGivesUp(t *testing.T) {
	r := newRepo(t, NewMemory(), nil)
	be := &down{Backend: NewMemory()}
	r.be = be
	r.SetRetryFor(300 * time.Millisecond)
	start := time.Now()
	err := r.put(context.Background(), "x", nil)
	took := time.Since(start)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "127.0.0.1:1") || !strings.Contains(err.Error(), "gave up after retrying") {
		t.Fatalf("error %v", err)
	}
	if took < 300*time.Millisecond || took > 400*time.Millisecond || be.calls.Load() < 10 {
		t.Fatalf("gave up after %v and %d calls", took, be.calls.Load())
	}
}
