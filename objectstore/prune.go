package objectstore

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Forget deletes backup id's manifest: the backup is gone at once, as one
// object. Its chunks and extents pages stay until a Prune finds nothing
// else references them. Forgetting a parent does not harm its children:
// every manifest lists all of its own chunks. A manifest that cannot be
// read (damaged) is deleted only with force: Prune refuses to run while
// one is there.
//
// A manifest that may not be deleted yet, because it is locked (S3 Object
// Lock) or these credentials lack delete permission, is marked instead: a
// small object under forgotten/ that the next Prune able to delete it
// acts on. The backup stays listed, and restorable, until then.
func (r *Repository) Forget(ctx context.Context, id string, force bool) error {
	_, err := r.ForgetBackup(ctx, id, force)
	return err
}

// Forgotten says what Forget did with a backup.
type Forgotten struct {
	ID     string    `json:"id"`
	Marked bool      `json:"marked"`           // not deleted: marked for a prune
	Until  time.Time `json:"until,omitzero"`   // marked: locked until then
	Reason string    `json:"reason,omitempty"` // marked: why
}

// ForgetBackup is Forget, saying whether the backup was deleted or marked.
func (r *Repository) ForgetBackup(ctx context.Context, id string, force bool) (Forgotten, error) {
	f := Forgotten{ID: id}
	var s Summary
	err := r.loadManifest(ctx, id, &s)
	switch {
	case errors.Is(err, ErrBackupNotFound):
		return f, err
	case err != nil && !force:
		return f, fmt.Errorf("%w (forget --force deletes it anyway)", err)
	}
	name := manifestName(id)
	err = r.lockedNow(ctx, name)
	if err == nil {
		err = r.delete(ctx, name)
	}
	var re *RetainedError
	switch {
	case errors.As(err, &re):
		f.Marked, f.Until, f.Reason = true, re.Until, "locked by S3 Object Lock"
	case errors.Is(err, ErrCredentials):
		f.Marked, f.Reason = true, "these credentials may not delete"
	case err != nil:
		return f, fmt.Errorf("deleting backup %s: %w", id, err)
	default:
		return f, nil
	}
	if err := r.put(ctx, markName(id), []byte(id)); err != nil {
		return f, fmt.Errorf("marking backup %s forgotten (%s): %w", id, f.Reason, err)
	}
	return f, nil
}

// marksPrefix holds forget marks: backups forgotten that a prune deletes.
const marksPrefix = "forgotten/"

func markName(id string) string { return marksPrefix + id }

// LockedBackup is a backup a prune could not delete yet.
type LockedBackup struct {
	ID    string    `json:"id"`
	Until time.Time `json:"until"`
}

// forgetMarked deletes the manifests of backups marked forgotten, and the
// marks, except those still locked: it returns those, and the ids of the
// others. Without a lock (a dry run) it deletes nothing.
func (r *Repository) forgetMarked(ctx context.Context, lock *heldLock) ([]LockedBackup, map[string]bool, error) {
	var names []string
	if err := r.list(ctx, marksPrefix, func(name string, _ int64) error {
		names = append(names, name)
		return nil
	}); err != nil {
		return nil, nil, err
	}
	var locked []LockedBackup
	forgotten := map[string]bool{}
	for _, mark := range names {
		id := strings.TrimPrefix(mark, marksPrefix)
		err := r.lockedNow(ctx, manifestName(id))
		var re *RetainedError
		if errors.As(err, &re) {
			locked = append(locked, LockedBackup{ID: id, Until: re.Until})
			continue
		}
		if err == nil && lock != nil {
			err = r.deleteLocked(ctx, lock, manifestName(id))
		}
		if err == nil && lock != nil {
			err = r.deleteLocked(ctx, lock, mark)
		}
		if err != nil {
			return locked, nil, fmt.Errorf("forgetting backup %s, marked forgotten: %w", id, err)
		}
		forgotten[id] = true
	}
	return locked, forgotten, nil
}

// deleteLocked deletes name while lock is valid.
func (r *Repository) deleteLocked(ctx context.Context, lock *heldLock, name string) error {
	ctx, cancel, err := lock.bound(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	return r.delete(ctx, name)
}

// PruneOptions configure Prune.
type PruneOptions struct {
	DryRun   bool // count what would be deleted, delete nothing
	Parallel int  // deletes at once (default DefaultParallel)
}

// PruneStats is what Prune found and did.
type PruneStats struct {
	Backups       int    `json:"backups"`
	ChunksKept    int64  `json:"chunksKept"`
	ChunksDeleted int64  `json:"chunksDeleted"`
	BytesDeleted  int64  `json:"bytesDeleted"`
	PagesKept     int64  `json:"pagesKept"`
	PagesDeleted  int64  `json:"pagesDeleted"`
	StaleLocks    []Lock `json:"staleLocksRemoved,omitempty"`
	DryRun        bool   `json:"dryRun"`
	// Object lock: backups marked forgotten, chunks and pages unreferenced,
	// not deleted because still locked; LockedUntil is when the last of
	// those chunks and pages can go.
	BackupsLocked []LockedBackup `json:"backupsLocked,omitempty"`
	ObjectsLocked int64          `json:"objectsLocked,omitempty"`
	LockedUntil   time.Time      `json:"lockedUntil,omitzero"`
}

// Prune deletes the chunks and extents pages that no backup references,
// under an exclusive lock (see Lock): it fails with ErrLocked while an
// export runs, and exports fail with ErrLocked while it runs.
//
// It reads every backup's whole extent list first, checking it as a
// restore would; if any backup cannot be read it deletes nothing, since
// it cannot know what that backup needs. Memory grows with the number of
// distinct chunks the repository's backups reference (about 100 bytes
// each: 100 MB for 1 TiB of distinct data in 1 MiB chunks), never with
// the number of objects deleted.
func (r *Repository) Prune(ctx context.Context, opt PruneOptions) (PruneStats, error) {
	st := PruneStats{DryRun: opt.DryRun}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var lock *heldLock // none for a dry run: it deletes nothing, so it need not keep exports out
	if opt.DryRun {
		locks, err := r.Locks(ctx)
		if err != nil {
			return st, err
		}
		st.StaleLocks = staleLocks(locks)
	} else {
		var err error
		if lock, st.StaleLocks, err = r.acquire(ctx, LockPrune, "", cancel); err != nil {
			return st, err
		}
		defer lock.release()
	}

	// A dry run forgets nothing, but counts as a prune would: without the
	// marked backups it would forget, with the locked ones it would keep.
	locked, forgotten, err := r.forgetMarked(ctx, lock)
	st.BackupsLocked = locked
	if err != nil {
		return st, fmt.Errorf("pruning %s: %w", r.be, lostOr(lock, err))
	}
	chunks, pages, n, err := r.referenced(ctx, forgotten)
	if err != nil {
		return st, lostOr(lock, err)
	}
	st.Backups = n
	d := r.newDeleter(ctx, lock, opt)
	if lock != nil {
		// The lock was listed after it was written, and exports write
		// theirs before they look: no export can have started since, as
		// long as the lock stays valid, which every delete checks.
		err = lock.check(ctx)
	}
	if err == nil {
		err = d.sweep("data/", chunkName, chunks, &st.ChunksKept, &d.chunks)
	}
	if err == nil {
		err = d.sweep("pages/", pageName, pages, &st.PagesKept, &d.pages)
	}
	if werr := d.wait(); err == nil {
		err = werr
	}
	st.ChunksDeleted, st.PagesDeleted, st.BytesDeleted = d.chunks.Load(), d.pages.Load(), d.bytes.Load()
	st.ObjectsLocked, st.LockedUntil = d.locked.Load(), d.lockedUntil
	if err != nil {
		return st, fmt.Errorf("pruning %s: %w", r.be, lostOr(lock, err))
	}
	return st, nil
}

// lostOr is err, or why the lock was lost if it was: that loss cancelled
// the context err may be about.
func lostOr(h *heldLock, err error) error {
	if lerr := h.valid(); lerr != nil {
		return lerr
	}
	return err
}

// referenced reads every backup's extents and returns the chunks and
// pages they reference, and how many backups there are. It reads them
// all even past a damaged one, so that its error names every backup that
// keeps a prune from deleting.
func (r *Repository) referenced(ctx context.Context, forgotten map[string]bool) (map[ChunkID]struct{}, map[ChunkID]struct{}, int, error) {
	ids, err := r.backupIDs(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	ids = slices.DeleteFunc(ids, func(id string) bool { return forgotten[id] })
	chunks, pages := map[ChunkID]struct{}{}, map[ChunkID]struct{}{}
	var damaged []string
	for _, id := range ids {
		err := r.reference(ctx, id, chunks, pages)
		switch {
		case errors.Is(err, ErrBackupNotFound):
			continue // forgotten since the listing
		case err != nil && damage(err):
			damaged = append(damaged, fmt.Sprintf("%s (%v)", id, err))
		case err != nil:
			return nil, nil, 0, fmt.Errorf("nothing deleted: reading backup %s: %w", id, err)
		}
	}
	if len(damaged) > 0 {
		return nil, nil, 0, fmt.Errorf("nothing deleted: %d backups cannot be read, so what they reference is unknown "+
			"(forget them with backups forget --force, or restore the objects, first): %s: %w",
			len(damaged), strings.Join(damaged, "; "), ErrCorrupt)
	}
	return chunks, pages, len(ids), nil
}

// reference adds the chunks and pages of backup id to chunks and pages.
func (r *Repository) reference(ctx context.Context, id string, chunks, pages map[ChunkID]struct{}) error {
	m, err := r.LoadBackup(ctx, id)
	if err != nil {
		return err
	}
	for _, p := range m.Pages {
		pages[p.ID] = struct{}{}
	}
	x := r.Extents(ctx, m)
	for e, ok := x.Next(); ok; e, ok = x.Next() {
		chunks[e.ID] = struct{}{}
	}
	return x.Err()
}

// deleter deletes objects on a few goroutines; the first error stops it.
// It counts what it deleted (or, dry, would delete). With a lock, every
// delete must be sent while the lock is valid.
type deleter struct {
	r      *Repository
	ctx    context.Context
	lock   *heldLock // nil: dry run
	dry    bool
	g      errgroup.Group
	failed atomic.Pointer[error]

	chunks, pages, bytes atomic.Int64
	locked               atomic.Int64 // object lock: not deleted yet
	mu                   sync.Mutex
	lockedUntil          time.Time // the latest of those
}

type doomed struct {
	name  string
	size  int64
	count *atomic.Int64 // chunks or pages
}

func (r *Repository) newDeleter(ctx context.Context, lock *heldLock, opt PruneOptions) *deleter {
	par := opt.Parallel
	if par <= 0 {
		par = DefaultParallel
	}
	d := &deleter{r: r, ctx: ctx, lock: lock, dry: opt.DryRun}
	d.g.SetLimit(par)
	return d
}

// remove deletes o, or, dry, only sees whether S3 Object Lock would
// refuse it.
func (d *deleter) remove(o doomed) error {
	ctx, cancel := context.WithCancel(d.ctx)
	if !d.dry {
		var err error
		if ctx, cancel, err = d.lock.bound(d.ctx); err != nil {
			return err
		}
	}
	defer cancel()
	err := d.r.lockedNow(ctx, o.name) // a HEAD, only with object lock
	if err == nil && !d.dry {
		err = d.r.delete(ctx, o.name)
	}
	var re *RetainedError
	if errors.As(err, &re) { // skipped, not a failure: a later prune deletes it
		d.retained(re.Until)
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting %s: %w", o.name, err)
	}
	d.done(o)
	return nil
}

func (d *deleter) retained(until time.Time) {
	d.locked.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if until.After(d.lockedUntil) {
		d.lockedUntil = until
	}
}

func (d *deleter) done(o doomed) {
	o.count.Add(1)
	d.bytes.Add(o.size)
}

// sweep deletes the objects under prefix whose id is not in keep,
// counting those kept (and, once deleted, the others in count). Names
// that are not nameOf their id are not ours: they are left alone.
func (d *deleter) sweep(prefix string, nameOf func(ChunkID) string, keep map[ChunkID]struct{}, kept *int64, count *atomic.Int64) error {
	return d.r.list(d.ctx, prefix, func(name string, size int64) error {
		id, err := ParseChunkID(path.Base(name))
		if err != nil || name != nameOf(id) {
			return nil
		}
		if _, ok := keep[id]; ok {
			*kept++
			return nil
		}
		return d.delete(doomed{name, size, count})
	})
}

func (d *deleter) delete(o doomed) error {
	if err := d.failed.Load(); err != nil {
		return *err
	}
	if err := context.Cause(d.ctx); err != nil {
		return err
	}
	d.g.Go(func() error { // waits for one of the goroutines to be free
		if d.failed.Load() != nil {
			return nil
		}
		err := d.remove(o)
		if err != nil {
			d.failed.CompareAndSwap(nil, &err)
		}
		return err
	})
	return nil
}

func (d *deleter) wait() error { return d.g.Wait() }
