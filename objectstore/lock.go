package objectstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
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
// longer counts. Prune deletes stale locks; an export checks that its lock
// is still there before it writes its manifest, so one that stalled past
// LockStaleAfter (while a prune may have run) fails instead of committing
// a backup that may reference deleted chunks.
const locksPrefix = "locks/"

// LockStaleAfter is how long a lock counts without being refreshed. Far
// longer than lockRefresh, so that slow requests or clock skew between
// hosts of a few minutes never make a live lock look stale.
var LockStaleAfter = 30 * time.Minute

var lockRefresh = 5 * time.Minute

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
	err := r.be.List(ctx, locksPrefix, func(name string, _ int64) error {
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
	r    *Repository
	lock Lock
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// acquire writes a lock of kind and fails with ErrLocked if another live
// lock conflicts with it: any other for a prune, a prune's for an export.
// A prune deletes the stale locks it finds and returns them.
func (r *Repository) acquire(ctx context.Context, kind, backup string) (*heldLock, []Lock, error) {
	host, _ := os.Hostname()
	now := time.Now().UTC()
	l := Lock{Name: locksPrefix + randomHex(16), Kind: kind, Host: host, PID: os.Getpid(),
		Backup: backup, Created: now, Refreshed: now}
	if err := r.putLock(ctx, l); err != nil {
		return nil, nil, fmt.Errorf("writing lock %s: %w", l.Name, err)
	}
	h := &heldLock{r: r, lock: l, stop: make(chan struct{}), done: make(chan struct{})}
	others, err := r.Locks(ctx)
	if err != nil {
		h.remove()
		return nil, nil, err
	}
	var stale []Lock
	for _, o := range others {
		switch {
		case o.Name == l.Name:
		case o.Stale(time.Now()):
			stale = append(stale, o)
		case kind == LockPrune || o.Kind == LockPrune:
			h.remove()
			return nil, nil, fmt.Errorf("%w at %s: %s; wait for it to finish (a lock of a process that died goes stale after %s without a refresh)",
				ErrLocked, r.be, o, LockStaleAfter)
		}
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

func (r *Repository) putLock(ctx context.Context, l Lock) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return r.put(ctx, l.Name, data)
}

// refresh rewrites the lock every lockRefresh until release. A failed
// refresh is tried again at the next tick: the lock only goes stale after
// several misses, and check catches one that was removed.
func (h *heldLock) refresh() {
	defer close(h.done)
	t := time.NewTicker(lockRefresh)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			l := h.lock
			l.Refreshed = time.Now().UTC()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			_ = h.r.putLock(ctx, l)
			cancel()
		}
	}
}

// check fails if the lock is gone: a prune found it stale and removed it,
// so what this process relied on may have been deleted.
func (h *heldLock) check(ctx context.Context) error {
	ok, err := h.r.exists(ctx, h.lock.Name)
	if err == nil && !ok {
		return fmt.Errorf("%w: this process's lock %s was removed as stale (not refreshed for %s: was the process paused?); a prune may have run meanwhile, so nothing was committed: run it again",
			ErrLockLost, h.lock.Name, LockStaleAfter)
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
func (h *heldLock) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = h.r.delete(ctx, h.lock.Name)
}
