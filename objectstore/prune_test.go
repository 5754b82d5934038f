package objectstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestForgetAndPrune(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	r := newRepo(t, be, []byte("k"))

	// a and b are shared by both backups; the r chunks differ.
	first := image(1, "abrr", 0)
	m1 := backup(t, r, first, BackupOptions{})
	second := bytes.Clone(first)
	copy(second[3*testChunk:], image(9, "r", 0))
	m2 := backup(t, r, second, BackupOptions{Parent: m1})
	other := backup(t, r, image(3, "bt", 0), BackupOptions{}) // another volume
	before := objects(t, be, "data/")
	if len(before) != 6 { // a b r1 r2 r2' t
		t.Fatalf("%d chunks stored, want 6", len(before))
	}

	gone := m1Only(t, r, m1, m2)
	st, err := r.Prune(ctx, PruneOptions{})
	if err != nil || st.ChunksDeleted != 0 || st.PagesDeleted != 0 || st.ChunksKept != 6 || st.Backups != 3 {
		t.Fatalf("prune with nothing forgotten: %+v, %v", st, err)
	}

	if err := r.Forget(ctx, m1.ID, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Forget(ctx, m1.ID, false); !errors.Is(err, ErrBackupNotFound) {
		t.Fatalf("forgetting it again: %v", err)
	}
	if _, err := r.LoadBackup(ctx, m1.ID); !errors.Is(err, ErrBackupNotFound) {
		t.Fatalf("forgotten backup loads: %v", err)
	}

	st, err = r.Prune(ctx, PruneOptions{DryRun: true})
	if err != nil || st.ChunksDeleted != 1 || !st.DryRun {
		t.Fatalf("dry run: %+v, %v", st, err)
	}
	if got := objects(t, be, "data/"); !slices.Equal(got, before) {
		t.Fatal("a dry run deleted chunks")
	}

	st, err = r.Prune(ctx, PruneOptions{})
	if err != nil || st.ChunksDeleted != 1 || st.ChunksKept != 5 || st.PagesDeleted != 1 || st.BytesDeleted == 0 {
		t.Fatalf("prune: %+v, %v", st, err)
	}
	// Exactly m1's own chunk is gone: the one m2 replaced.
	for _, name := range objects(t, be, "data/") {
		if name == gone {
			t.Fatalf("chunk %s only the forgotten backup referenced survived", name)
		}
	}
	for _, m := range []*Manifest{m2, other} {
		want := second
		if m == other {
			want = image(3, "bt", 0)
		}
		if got, err := restore(r, m); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("restore of %s after prune: %v", m.ID, err)
		}
	}
	if locks := objects(t, be, locksPrefix); len(locks) != 0 {
		t.Fatalf("locks left behind: %v", locks)
	}
	if st, err = r.Prune(ctx, PruneOptions{}); err != nil || st.ChunksDeleted+st.PagesDeleted != 0 {
		t.Fatalf("second prune: %+v, %v", st, err)
	}
}

// m1Only is the name of the chunk m1 has and m2 has not.
func m1Only(t *testing.T, r *Repository, m1, m2 *Manifest) string {
	t.Helper()
	in2 := map[ChunkID]bool{}
	for _, e := range extentsOf(t, r, m2) {
		in2[e.ID] = true
	}
	var only []string
	for _, e := range extentsOf(t, r, m1) {
		if !in2[e.ID] {
			only = append(only, chunkName(e.ID))
		}
	}
	if len(only) != 1 {
		t.Fatalf("%d chunks only in the first backup, want 1", len(only))
	}
	return only[0]
}

func TestPruneAndExportExcludeEachOther(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	r := newRepo(t, be, nil)
	forgotten(t, r, image(1, "rr", 0))

	// An export in progress keeps a prune out, and deletes nothing.
	w, err := r.NewBackup(ctx, BackupOptions{Size: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(ctx, PruneOptions{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("prune during an export: %v", err)
	}
	if n := len(objects(t, be, "data/")); n != 2 {
		t.Fatalf("%d chunks after a refused prune, want 2", n)
	}
	w.Abort()

	// A prune in progress keeps an export out.
	h, _, err := r.acquire(ctx, LockPrune, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.NewBackup(ctx, BackupOptions{Size: testChunk}); !errors.Is(err, ErrLocked) {
		t.Fatalf("export during a prune: %v", err)
	}
	h.release()
	if locks := objects(t, be, locksPrefix); len(locks) != 0 {
		t.Fatalf("locks left behind: %v", locks)
	}
	if st, err := r.Prune(ctx, PruneOptions{}); err != nil || st.ChunksDeleted != 2 {
		t.Fatalf("prune after both: %+v, %v", st, err)
	}
}

func TestStaleLocks(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	r := newRepo(t, be, nil)
	old := time.Now().Add(-2 * LockStaleAfter)
	for i, kind := range []string{LockPrune, LockExport} {
		l := Lock{Name: locksPrefix + "dead" + string(rune('0'+i)), Kind: kind, Host: "gone", Created: old, Refreshed: old}
		data, _ := json.Marshal(l)
		be.Put(ctx, l.Name, data)
	}
	be.Put(ctx, locksPrefix+"garbage", []byte("not json"))

	// A dead prune's lock does not stop an export, which leaves it alone.
	backup(t, r, image(1, "r", 0), BackupOptions{})
	if n := len(objects(t, be, locksPrefix)); n != 3 {
		t.Fatalf("%d locks after an export, want the 3 stale ones", n)
	}
	// A prune removes them all and goes on.
	st, err := r.Prune(ctx, PruneOptions{})
	if err != nil || len(st.StaleLocks) != 3 {
		t.Fatalf("prune over stale locks: %+v, %v", st, err)
	}
	if n := len(objects(t, be, locksPrefix)); n != 0 {
		t.Fatalf("%d locks after the prune", n)
	}
}

func TestExportWhoseLockWasRemovedDoesNotCommit(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	r := newRepo(t, be, nil)
	w := uncommitted(t, r)
	for _, name := range objects(t, be, locksPrefix) {
		be.Delete(ctx, name) // what a prune does to a lock it finds stale
	}
	if _, err := w.Commit(ctx); !errors.Is(err, ErrLockLost) {
		t.Fatalf("Commit without its lock: %v", err)
	}
	if list, _ := summaries(ctx, r); len(list) != 0 {
		t.Fatal("a backup was committed without its lock")
	}
}

func TestPruneRefusesUnreadableBackup(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	r := newRepo(t, be, nil)
	m := backup(t, r, image(1, "rr", 0), BackupOptions{})
	keep := backup(t, r, image(2, "r", 0), BackupOptions{})
	if err := r.Forget(ctx, m.ID, false); err != nil {
		t.Fatal(err)
	}
	be.Put(ctx, manifestName(keep.ID), []byte("damaged"))
	if _, err := r.Prune(ctx, PruneOptions{}); err == nil || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("prune with a damaged manifest: %v", err)
	}
	if n := len(objects(t, be, "data/")); n != 3 {
		t.Fatalf("%d chunks left, want all 3: nothing may be deleted", n)
	}
}

// shortLocks makes locks go stale in well under a second.
func shortLocks(t *testing.T) {
	stale, refresh, margin := LockStaleAfter, lockRefresh, lockMargin
	LockStaleAfter, lockRefresh, lockMargin = 400*time.Millisecond, 20*time.Millisecond, 100*time.Millisecond
	t.Cleanup(func() { LockStaleAfter, lockRefresh, lockMargin = stale, refresh, margin })
}

// lockStall is a backend on which the refreshes of one kind of lock fail
// while stalled (a paused process, S3 out of reach), and whose first
// listing of data/ once entered is set closes it and waits for release (a
// prune paused just before it sweeps).
type lockStall struct {
	Backend
	kind     string
	stalled  atomic.Bool
	entered  chan struct{}
	release  chan struct{}
	listOnce sync.Once
}

func (b *lockStall) Put(ctx context.Context, name string, data []byte) error {
	if b.stalled.Load() && strings.HasPrefix(name, locksPrefix) && bytes.Contains(data, []byte(`"kind":"`+b.kind+`"`)) {
		return errors.New("stalled")
	}
	return b.Backend.Put(ctx, name, data)
}

func (b *lockStall) List(ctx context.Context, prefix string, fn func(string, int64) error) error {
	if prefix == "data/" && b.entered != nil {
		b.listOnce.Do(func() { close(b.entered); <-b.release })
	}
	return b.Backend.List(ctx, prefix, fn)
}

// An export stalled past LockStaleAfter must not commit, even once its
// refreshes work again: a prune took its lock for stale and deleted the
// chunk it had uploaded. Rewriting the lock would hide that from Commit.
func TestStalledExportCannotCommit(t *testing.T) {
	shortLocks(t)
	ctx := context.Background()
	be := &lockStall{Backend: NewMemory(), kind: LockExport}
	r := newRepo(t, be, nil)
	w := uncommitted(t, r)
	be.stalled.Store(true)
	time.Sleep(LockStaleAfter + 50*time.Millisecond)
	st, err := r.Prune(ctx, PruneOptions{}) // another host's
	if err != nil || len(st.StaleLocks) != 1 || st.ChunksDeleted != 1 {
		t.Fatalf("prune beside the stalled export: %+v, %v", st, err)
	}
	be.stalled.Store(false)
	time.Sleep(5 * lockRefresh) // the refreshes that would bring the lock back
	if _, err := w.Commit(ctx); !errors.Is(err, ErrLockLost) {
		t.Fatalf("Commit of the stalled export: %v", err)
	}
	if list, _ := summaries(ctx, r); len(list) != 0 {
		t.Fatal("a backup whose chunk was pruned was committed")
	}
	if locks := objects(t, be, locksPrefix); len(locks) != 0 {
		t.Fatalf("locks left behind: %v", locks)
	}
}

// A prune stalled past LockStaleAfter after it read the backups must
// delete nothing once it resumes: an export that took its lock for
// stale may have committed a backup it never read.
func TestStalledPruneDeletesNothing(t *testing.T) {
	shortLocks(t)
	ctx := context.Background()
	be := &lockStall{Backend: NewMemory(), kind: LockPrune}
	r := newRepo(t, be, nil)
	be.entered, be.release = make(chan struct{}), make(chan struct{})
	type result struct {
		st  PruneStats
		err error
	}
	done := make(chan result)
	go func() {
		st, err := r.Prune(ctx, PruneOptions{})
		done <- result{st, err}
	}()
	<-be.entered
	be.stalled.Store(true)
	time.Sleep(LockStaleAfter + 50*time.Millisecond)
	m := backup(t, r, image(2, "rt", 0), BackupOptions{}) // sees the prune's lock stale
	close(be.release)
	got := <-done
	if !errors.Is(got.err, ErrLockLost) || got.st.ChunksDeleted != 0 {
		t.Fatalf("the stalled prune: %+v, %v", got.st, got.err)
	}
	if err := r.Verify(ctx, m, 0); err != nil {
		t.Fatalf("the backup made while the prune stalled: %v", err)
	}
}

// A dry run takes no lock, so it runs beside an export, and it removes
// nothing, stale locks included.
func TestPruneDryRunTakesNoLock(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	r := newRepo(t, be, nil)
	forgotten(t, r, image(1, "rr", 0))
	old := time.Now().Add(-2 * LockStaleAfter)
	data, _ := json.Marshal(Lock{Kind: LockExport, Host: "gone", Created: old, Refreshed: old})
	be.Put(ctx, locksPrefix+"dead", data)
	w, err := r.NewBackup(ctx, BackupOptions{Size: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	st, err := r.Prune(ctx, PruneOptions{DryRun: true})
	if err != nil || !st.DryRun || st.ChunksDeleted != 2 || len(st.StaleLocks) != 1 {
		t.Fatalf("dry run beside an export: %+v, %v", st, err)
	}
	if n := len(objects(t, be, "data/")); n != 2 {
		t.Fatalf("%d chunks after a dry run, want 2", n)
	}
	if n := len(objects(t, be, locksPrefix)); n != 2 {
		t.Fatalf("%d locks after a dry run, want the export's and the stale one", n)
	}
}

// An export whose parent was forgotten (and maybe pruned) between being
// chosen and the lock fails instead of reusing chunks that may be gone.
func TestExportWithForgottenParent(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, NewMemory(), nil)
	m := forgotten(t, r, image(1, "rr", 0))
	if _, err := r.NewBackup(ctx, BackupOptions{Size: m.Size, Parent: m}); !errors.Is(err, ErrBackupNotFound) {
		t.Fatalf("export with a forgotten parent: %v", err)
	}
}

// forget refuses a damaged manifest unless forced.
func TestForgetDamaged(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	r := newRepo(t, be, nil)
	m := backup(t, r, image(1, "r", 0), BackupOptions{})
	be.Put(ctx, manifestName(m.ID), []byte("damaged"))
	if err := r.Forget(ctx, m.ID, false); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("forget of a damaged manifest: %v", err)
	}
	if err := r.Forget(ctx, m.ID, true); err != nil {
		t.Fatalf("forget --force: %v", err)
	}
	if st, err := r.Prune(ctx, PruneOptions{}); err != nil || st.ChunksDeleted != 1 {
		t.Fatalf("prune after forgetting the damaged backup: %+v, %v", st, err)
	}
}

// forgotten backs data up and forgets the backup, leaving its chunks for
// a prune.
func forgotten(t *testing.T, r *Repository, data []byte) *Manifest {
	t.Helper()
	m := backup(t, r, data, BackupOptions{})
	if err := r.Forget(context.Background(), m.ID, false); err != nil {
		t.Fatal(err)
	}
	return m
}

// uncommitted is an export of one chunk that has uploaded it and holds
// its lock, but has not committed yet.
func uncommitted(t *testing.T, r *Repository) *BackupWriter {
	t.Helper()
	w, err := r.NewBackup(context.Background(), BackupOptions{Size: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Abort)
	if err := w.Write(context.Background(), 0, image(1, "r", 0)); err != nil {
		t.Fatal(err)
	}
	return w
}

// RemoveStaleLocks removes only the stale locks.
func TestRemoveStaleLocks(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	r := newRepo(t, be, nil)
	w := uncommitted(t, r) // holds a live lock
	old := time.Now().Add(-2 * LockStaleAfter)
	data, _ := json.Marshal(Lock{Kind: LockPrune, Host: "gone", Created: old, Refreshed: old})
	be.Put(ctx, locksPrefix+"dead", data)
	removed, err := r.RemoveStaleLocks(ctx)
	if err != nil || len(removed) != 1 || removed[0].Host != "gone" {
		t.Fatalf("removed %+v, %v", removed, err)
	}
	if _, err := w.Commit(ctx); err != nil {
		t.Fatalf("the export beside the unlock: %v", err)
	}
}

// A lock that runs out of time fails its export at once, not only at
// Commit: a large export stops instead of uploading for nothing.
func TestExpiredLockStopsExport(t *testing.T) {
	shortLocks(t)
	ctx := context.Background()
	be := &lockStall{Backend: NewMemory(), kind: LockExport}
	r := newRepo(t, be, nil)
	w, err := r.NewBackup(ctx, BackupOptions{Size: 2 * testChunk})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	be.stalled.Store(true)
	time.Sleep(LockStaleAfter)
	if err := w.Write(ctx, 0, image(1, "r", 0)); !errors.Is(err, ErrLockLost) {
		t.Fatalf("a write after the lock ran out: %v", err)
	}
}
