package objectstore

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sync"
	"sync/atomic"
)

// Forget deletes backup id's manifest: the backup is gone at once, as one
// object. Its chunks and extents pages stay until a Prune finds nothing
// else references them. Forgetting a parent does not harm its children:
// every manifest lists all of its own chunks.
func (r *Repository) Forget(ctx context.Context, id string) error {
	var s Summary
	if err := r.loadManifest(ctx, id, &s); err != nil {
		return err
	}
	if err := r.delete(ctx, manifestName(id)); err != nil {
		return fmt.Errorf("deleting backup %s: %w", id, err)
	}
	return nil
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
	lock, stale, err := r.acquire(ctx, LockPrune, "")
	if err != nil {
		return st, err
	}
	defer lock.release()
	st.StaleLocks = stale

	chunks, pages, n, err := r.referenced(ctx)
	if err != nil {
		return st, err
	}
	st.Backups = n
	// The lock was listed after it was written, and exports write theirs
	// before they look: no export can have started since. Checking it
	// again guards against this prune having stalled past LockStaleAfter.
	if err := lock.check(ctx); err != nil {
		return st, err
	}
	d := r.newDeleter(ctx, opt)
	err = d.sweep("data/", chunkName, chunks, &st.ChunksKept, &st.ChunksDeleted, &st.BytesDeleted)
	if err == nil {
		err = d.sweep("pages/", pageName, pages, &st.PagesKept, &st.PagesDeleted, &st.BytesDeleted)
	}
	if werr := d.wait(); err == nil {
		err = werr
	}
	if err != nil {
		return st, fmt.Errorf("pruning %s: %w", r.be, err)
	}
	return st, nil
}

// referenced reads every backup's extents and returns the chunks and
// pages they reference, and how many backups there are.
func (r *Repository) referenced(ctx context.Context) (map[ChunkID]struct{}, map[ChunkID]struct{}, int, error) {
	ids, err := r.backupIDs(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	chunks, pages := map[ChunkID]struct{}{}, map[ChunkID]struct{}{}
	for _, id := range ids {
		m, err := r.LoadBackup(ctx, id)
		if errors.Is(err, ErrBackupNotFound) {
			continue // forgotten since the listing
		}
		if err != nil {
			return nil, nil, 0, fmt.Errorf("nothing deleted: backup %s cannot be read, so what it references is unknown (forget it, or fix it, first): %w", id, err)
		}
		for _, p := range m.Pages {
			pages[p.ID] = struct{}{}
		}
		x := r.Extents(ctx, m)
		for e, ok := x.Next(); ok; e, ok = x.Next() {
			chunks[e.ID] = struct{}{}
		}
		if err := x.Err(); err != nil {
			return nil, nil, 0, fmt.Errorf("nothing deleted: the chunk list of backup %s cannot be read (forget it, or fix it, first): %w", id, err)
		}
	}
	return chunks, pages, len(ids), nil
}

// deleter deletes objects on a few goroutines; the first error stops it.
type deleter struct {
	r      *Repository
	ctx    context.Context
	dry    bool
	names  chan string
	wg     sync.WaitGroup
	failed atomic.Pointer[error]
}

func (r *Repository) newDeleter(ctx context.Context, opt PruneOptions) *deleter {
	par := opt.Parallel
	if par <= 0 {
		par = DefaultParallel
	}
	d := &deleter{r: r, ctx: ctx, dry: opt.DryRun, names: make(chan string)}
	for range par {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			for name := range d.names {
				if d.failed.Load() != nil {
					continue
				}
				if err := r.delete(ctx, name); err != nil {
					err = fmt.Errorf("deleting %s: %w", name, err)
					d.failed.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	return d
}

// sweep deletes the objects under prefix whose id is not in keep,
// counting them. Names that are not nameOf their id are not ours: they
// are left alone.
func (d *deleter) sweep(prefix string, nameOf func(ChunkID) string, keep map[ChunkID]struct{}, kept, deleted, bytes *int64) error {
	return d.r.be.List(d.ctx, prefix, func(name string, size int64) error {
		id, err := ParseChunkID(path.Base(name))
		if err != nil || name != nameOf(id) {
			return nil
		}
		if _, ok := keep[id]; ok {
			*kept++
			return nil
		}
		*deleted++
		*bytes += size
		return d.delete(name)
	})
}

func (d *deleter) delete(name string) error {
	if err := d.failed.Load(); err != nil {
		return *err
	}
	if d.dry {
		return nil
	}
	select {
	case d.names <- name:
		return nil
	case <-d.ctx.Done():
		return d.ctx.Err()
	}
}

func (d *deleter) wait() error {
	close(d.names)
	d.wg.Wait()
	if err := d.failed.Load(); err != nil {
		return *err
	}
	return nil
}
