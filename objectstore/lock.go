package objectstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Locks keep Prune from deleting what a running export is about to
// reference: a chunk it found by HEAD, or one of its parent's chunks it
// reuses unread. Every export holds a shared lock from NewBackup to
// Commit; Prune holds an exclusive one. Both write their lock first and
// list the others second, so of an export and a prune that start together
// at least one sees the other (S3 lists are strongly consistent) and
// gives up. Restores and cats take no lock: a prune deletes only what no
// backup references, so it can only break a restore of a backup being
// forgotten at the same time, which then fails loudly on a missing chunk.
//
// A lock is refreshed every lockRefresh; one not refreshed for
// LockStaleAfter belongs to a process that died (or stalled) and no
// longer counts. Prune deletes stale locks. A holder relies on its lock
// only while its last successful refresh is less than LockStaleAfter -
// lockMargin old, by its own clock: past that (a stalled process, S3
// unreachable) it stops refreshing, since a prune may already have taken
// the lock for stale, and gives up its work. A refresh also fails the
// holder if the lock was removed. The margin covers a last request that
// is slow to land and clocks that disagree between hosts by less than it.
const locksPrefix = "locks/"

// LockStaleAfter is how long a lock counts without being refreshed. Far
// longer than lockRefresh, so that a few failed refreshes never make a
// live lock look stale.
var LockStaleAfter = 30 * time.Minute

var (
	lockRefresh = 5 * time.Minute
	// lockMargin: clocks of hosts sharing a repository must agree within it.
	lockMargin = 5 * time.Minute
)

// Lock kinds.
const (
	LockExport = "export" // shared: exports run side by side
	LockPrune  = "prune"  // exclusive
)

// Lock is one lock object, plain JSON under locks/ (it holds no backup
// data, only who holds it).
type Lock struct {
	Name      string    `json:"-"` // object name
	Kind      string    `json:"kind"`
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Backup    string    `json:"backup,omitempty"` // the backup an export is writing
	Created   time.Time `json:"created"`
	Refreshed time.Time `json:"refreshed"`
	// Released: its holder is done but may not delete it (no delete
	// permission); its zero Refreshed makes it stale.
	Released bool `json:"released,omitempty"`
}

// Stale reports whether l has gone unrefreshed for LockStaleAfter.
func (l Lock) Stale(now time.Time) bool { return now.Sub(l.Refreshed) > LockStaleAfter }

func (l Lock) String() string {
	s := fmt.Sprintf("%s lock %s of %s (pid %d), since %s, refreshed %s", l.Kind,
		strings.TrimPrefix(l.Name, locksPrefix), l.Host, l.PID,
		l.Created.Format(time.RFC3339), l.Refreshed.Format(time.RFC3339))
	if l.Backup != "" {
		s += ", writing backup " + l.Backup
	}
	return s
}

// Locks lists the repository's locks. A lock object that cannot be read
// or decoded is returned with only its name and a zero Refreshed time, so
// it counts as stale.
func (r *Repository) Locks(ctx context.Context) ([]Lock, error) {
	var names []string
	err := r.list(ctx, locksPrefix, func(name string, _ int64) error {
		names = append(names, name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing locks: %w", err)
	}
	locks := make([]Lock, 0, len(names))
	for _, name := range names {
		data, err := r.get(ctx, name)
		if errors.Is(err, ErrNotFound) {
			continue // released since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("reading lock %s: %w", name, err)
		}
		var l Lock
		if json.Unmarshal(data, &l) != nil {
			l = Lock{Kind: "unreadable"}
		}
		l.Name = name
		locks = append(locks, l)
	}
	return locks, nil
}

// heldLock is a lock this process holds, refreshed in the background
// until release.
type heldLock struct {
	r      *Repository
	lock   Lock
	onLost func(error) // called once, from the refresher, when the lock is lost
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once

	mu       sync.Mutex
	fresh    time.Time // when the last successful write of the lock started
	lost     error     // why the lock can no longer be relied on; final
	notified bool      // onLost was called
}

// acquire writes a lock of kind and fails with ErrLocked if another live
// lock conflicts with it: any other for a prune, a prune's for an export.
// A prune deletes the stale locks it finds and returns them. onLost, if
// not nil, is called once if the lock is lost before release.
func (r *Repository) acquire(ctx context.Context, kind, backup string, onLost func(error)) (*heldLock, []Lock, error) {
	host, _ := os.Hostname()
	start := time.Now()
	l := Lock{Name: locksPrefix + randomHex(16), Kind: kind, Host: host, PID: os.Getpid(),
		Backup: backup, Created: start.UTC(), Refreshed: start.UTC()}
	if err := r.putLock(ctx, l); err != nil {
		return nil, nil, fmt.Errorf("writing lock %s: %w", l.Name, err)
	}
	h := &heldLock{r: r, lock: l, onLost: onLost, fresh: start, stop: make(chan struct{}), done: make(chan struct{})}
	others, err := r.Locks(ctx)
	if err != nil {
		h.remove()
		return nil, nil, err
	}
	stale, err := conflicts(others, l)
	if err != nil {
		h.remove()
		return nil, nil, fmt.Errorf("%w at %s: %v; wait for it to finish (a lock of a process that died goes stale after %s without a refresh)",
			ErrLocked, r.be, err, LockStaleAfter)
	}
	if kind == LockPrune {
		for _, o := range stale {
			if err := r.delete(ctx, o.Name); err != nil {
				h.remove()
				return nil, nil, fmt.Errorf("removing stale %s: %w", o, err)
			}
		}
	} else {
		stale = nil
	}
	go h.refresh()
	return h, stale, nil
}

// conflicts returns the stale locks among others, or the first live one
// that excludes l.
func conflicts(others []Lock, l Lock) ([]Lock, error) {
	var stale []Lock
	for _, o := range others {
		switch {
		case o.Name == l.Name:
		case o.Stale(time.Now()):
			stale = append(stale, o)
		case l.Kind == LockPrune || o.Kind == LockPrune:
			return nil, errors.New(o.String())
		}
	}
	return stale, nil
}

func (r *Repository) putLock(ctx context.Context, l Lock) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return r.put(ctx, l.Name, data)
}

// refresh rewrites the lock every lockRefresh until release, or until
// the lock is lost: it never writes a lock that may have been taken for
// stale, since that would hide from check that a prune may have run.
func (h *heldLock) refresh() {
	defer close(h.done)
	t := time.NewTicker(lockRefresh)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			if err := h.refreshOnce(); err != nil {
				h.fail(err)
				return
			}
		}
	}
}

// refreshOnce rewrites the lock if it is still there. A failed request
// is not fatal (the next tick tries again) until the lock is too old.
func (h *heldLock) refreshOnce() error {
	start := time.Now()
	ctx, cancel, err := h.bound(context.Background())
	if err != nil {
		return err
	}
	defer cancel()
	ok, err := h.r.exists(ctx, h.lock.Name)
	if err == nil && !ok {
		return h.removed()
	}
	l := h.lock
	l.Refreshed = start.UTC()
	if err == nil && h.r.putLock(ctx, l) == nil {
		h.mu.Lock()
		h.fresh = start
		h.mu.Unlock()
	}
	return nil
}

func (h *heldLock) removed() error {
	return fmt.Errorf("%w: this process's lock %s was removed (by a prune that found it stale, or by hand); a prune may have run meanwhile",
		ErrLockLost, h.lock.Name)
}

// fail marks the lock lost (if it was not already, by age in valid) and
// tells the holder, once.
func (h *heldLock) fail(err error) {
	h.mu.Lock()
	if h.lost == nil {
		h.lost = err
	}
	notify := !h.notified
	h.notified = true
	err = h.lost
	h.mu.Unlock()
	if notify && h.onLost != nil {
		h.onLost(err)
	}
}

// valid returns nil while the holder may rely on the lock: it was not
// lost and its last refresh is recent enough that no other host can
// take it for stale.
func (h *heldLock) valid() error {
	if h == nil {
		return nil // no lock needed (a dry run)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lost == nil {
		if age := since(h.fresh); age > LockStaleAfter-lockMargin {
			h.lost = fmt.Errorf("%w: this process's lock %s was last refreshed %s ago (was the process paused, or S3 unreachable?); a prune may have taken it for stale and run",
				ErrLockLost, h.lock.Name, age.Round(time.Second))
		}
	}
	return h.lost
}

// bound returns ctx limited to the time the lock stays valid, so that a
// request sent while it was valid cannot land long after.
func (h *heldLock) bound(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if err := h.valid(); err != nil {
		return nil, nil, err
	}
	h.mu.Lock()
	left := LockStaleAfter - lockMargin - since(h.fresh) // by both clocks, as valid judges
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, left)
	return ctx, cancel, nil
}

// since is the time elapsed since t by the wall clock or the monotonic
// clock, whichever is more: the monotonic clock stops while a host is
// suspended, and the wall clock can be stepped back.
func since(t time.Time) time.Duration {
	return max(time.Since(t), time.Now().Round(0).Sub(t.Round(0)))
}

// check fails if the lock is lost or gone: what this process relied on
// may have been deleted by a prune.
func (h *heldLock) check(ctx context.Context) error {
	if err := h.valid(); err != nil {
		return err
	}
	ok, err := h.r.exists(ctx, h.lock.Name)
	if err == nil && !ok {
		err = h.removed()
		h.fail(err)
		return err
	}
	if err != nil {
		return fmt.Errorf("checking lock %s: %w", h.lock.Name, err)
	}
	return nil
}

// release stops the refresh and deletes the lock. Safe to call twice.
func (h *heldLock) release() {
	h.once.Do(func() {
		close(h.stop)
		<-h.done
		h.remove()
	})
}

// remove deletes the lock object, with a context of its own: release
// also runs after the caller's context was cancelled.
// In an outage it tries once, so that a process that gave up on S3 exits
// promptly: a lock left behind goes stale and prune removes it.
func (h *heldLock) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err, _ := h.r.Outage(); err != nil {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = h.r.be.Delete(ctx, h.lock.Name)
		return
	}
	if err := h.r.delete(ctx, h.lock.Name); errors.Is(err, ErrCredentials) {
		// Credentials without delete permission (an agent's, with object
		// lock): a lock never refreshed counts as stale, so it no longer
		// keeps a prune out, and the prune removes it.
		l := h.lock
		l.Refreshed, l.Released = time.Time{}, true
		_ = h.r.putLock(ctx, l)
	}
}

// staleLocks returns those of locks that are stale now.
func staleLocks(locks []Lock) []Lock {
	now := time.Now()
	return slices.DeleteFunc(slices.Clone(locks), func(l Lock) bool { return !l.Stale(now) })
}

// RemoveStaleLocks deletes the locks that have gone stale and returns
// them. Live locks are never touched. It is safe at any time: a stale
// lock counts for nothing, and its holder has stopped relying on it.
func (r *Repository) RemoveStaleLocks(ctx context.Context) ([]Lock, error) {
	locks, err := r.Locks(ctx)
	if err != nil {
		return nil, err
	}
	var removed []Lock
	for _, l := range staleLocks(locks) {
		if err := r.delete(ctx, l.Name); err != nil {
			return removed, fmt.Errorf("removing stale %s: %w", l, err)
		}
		removed = append(removed, l)
	}
	return removed, nil
}
