package objectstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseObjectLock(t *testing.T) {
	for in, want := range map[string]ObjectLock{
		"governance:30d":   {LockGovernance, 30 * 86400},
		"COMPLIANCE:720h":  {LockCompliance, 720 * 3600},
		"governance:40s":   {LockGovernance, 40},
		"compliance:1h30m": {LockCompliance, 5400},
	} {
		got, err := ParseObjectLock(in)
		if err != nil || *got != want {
			t.Errorf("%s: got %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "governance", "legal:30d", "governance:0s", "compliance:-1h", "governance:xd", "governance:500ms"} {
		if _, err := ParseObjectLock(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func newLockedRepo(t *testing.T, be Backend, d time.Duration) *Repository {
	t.Helper()
	r, err := Init(context.Background(), be, InitOptions{ChunkSize: testChunk,
		ObjectLock: &ObjectLock{Mode: LockCompliance, Seconds: int64(d / time.Second)}})
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	return r
}

func TestInitObjectLock(t *testing.T) {
	ctx := context.Background()
	_, err := Init(ctx, NewMemory(), InitOptions{ObjectLock: &ObjectLock{Mode: LockGovernance, Seconds: 60}})
	if err == nil || !strings.Contains(err.Error(), "does not have Object Lock enabled") {
		t.Errorf("Init with object lock on a bucket without: %v", err)
	}
	be := NewLockedMemory()
	r := newLockedRepo(t, be, time.Hour)
	r2, err := Open(ctx, be, nil)
	if err != nil || r2.Config().ObjectLock == nil || *r2.Config().ObjectLock != *r.Config().ObjectLock || r2.Config().Version != 2 {
		t.Fatalf("Open: %v, config %+v", err, r2.Config())
	}
	if until, _ := be.RetainedUntil(ctx, configName); until.Before(time.Now().Add(59 * time.Minute)) {
		t.Errorf("config locked until %v, want an hour from now", until)
	}
	// A repository without object lock stays at version 1.
	if r := newRepo(t, NewMemory(), nil); r.Config().Version != 1 {
		t.Errorf("version %d without object lock", r.Config().Version)
	}
}

// checkLocked fails unless every chunk and page of m is locked at least as
// long as m, as long as the manifest says, and the manifest until LockedUntil.
func checkLocked(t *testing.T, be *Memory, r *Repository, m *Manifest) {
	t.Helper()
	ctx := context.Background()
	if m.LockedUntil == nil || m.DataLockedUntil == nil || m.DataLockedUntil.Before(*m.LockedUntil) {
		t.Fatalf("backup %s: locked until %v, data until %v", m.ID, m.LockedUntil, m.DataLockedUntil)
	}
	if until, _ := be.RetainedUntil(ctx, manifestName(m.ID)); until.Before(*m.LockedUntil) {
		t.Errorf("manifest %s locked until %v, before %v", m.ID, until, *m.LockedUntil)
	}
	names := []string{}
	for _, e := range extentsOf(t, r, m) {
		names = append(names, chunkName(e.ID))
	}
	for _, p := range m.Pages {
		names = append(names, pageName(p.ID))
	}
	for _, name := range names {
		if until, _ := be.RetainedUntil(ctx, name); until.Before(*m.DataLockedUntil) {
			t.Errorf("backup %s: %s locked until %v, before %v", m.ID, name, until, *m.DataLockedUntil)
		}
	}
}

// TestIncrementalExtendsLocks: an incremental whose parent's data is
// locked too short for it extends exactly the chunks it reuses (those
// from the parent, written or Reused, and those found by a HEAD); one
// whose parent's data is locked long enough reads no date.
func TestIncrementalExtendsLocks(t *testing.T) {
	ctx := context.Background()
	be := NewLockedMemory()
	r := newLockedRepo(t, be, time.Hour)
	first := image(1, "rrzrt", 100)
	m1 := backup(t, r, first, BackupOptions{})
	checkLocked(t, be, r, m1)
	if m1.Stats.RetentionChecks != 0 {
		t.Errorf("a first backup checked %d locks", m1.Stats.RetentionChecks)
	}
	// Age the repository: its data locked for only a minute more.
	soon := time.Now().Add(time.Minute)
	be.mu.Lock()
	for name := range be.until {
		be.until[name] = soon
	}
	be.mu.Unlock()
	m1.DataLockedUntil = &soon

	// Chunk 1 changes; chunk 0 and 3 are reused unread, 4 written again.
	second := image(1, "rrzrt", 100)
	copy(second[testChunk:], image(9, "r", 0))
	ex1 := extentsOf(t, r, m1)
	w, err := r.NewBackup(ctx, BackupOptions{Size: int64(len(second)), Parent: m1})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []error{
		w.Reuse(ex1[0]), w.Write(ctx, testChunk, second[testChunk:2*testChunk]), w.Reuse(ex1[2]),
		w.Write(ctx, 4*testChunk, second[4*testChunk:]),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	m2, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkLocked(t, be, r, m2)
	if m2.Stats.RetentionChecks != 3 || m2.Stats.RetentionExtended != 3 {
		t.Errorf("checked %d, extended %d locks; want 3 and 3", m2.Stats.RetentionChecks, m2.Stats.RetentionExtended)
	}
	// A chunk found by a HEAD (another volume's) is kept too.
	other := backup(t, r, image(9, "r", 0), BackupOptions{})
	checkLocked(t, be, r, other)
	if other.Stats.RetentionChecks != 1 || other.Stats.RetentionExtended != 0 {
		t.Errorf("dedup: checked %d, extended %d; want 1 and 0 (already long enough)", other.Stats.RetentionChecks, other.Stats.RetentionExtended)
	}
	// The next incremental: the parent's data is locked long enough.
	m3 := backup(t, r, second, BackupOptions{Parent: m2})
	checkLocked(t, be, r, m3)
	if m3.Stats.RetentionChecks != 0 {
		t.Errorf("an incremental of a fresh parent checked %d locks", m3.Stats.RetentionChecks)
	}
}

// TestForgetAndPruneSkipLocked: a locked backup is marked, not deleted,
// survives prunes until its date, then goes; its chunks go at theirs.
func TestForgetAndPruneSkipLocked(t *testing.T) {
	ctx := context.Background()
	be := NewLockedMemory()
	r := newLockedRepo(t, be, 2*time.Second)
	keep := backup(t, r, image(2, "r", 0), BackupOptions{})
	m := backup(t, r, image(1, "rt", 0), BackupOptions{})
	f, err := r.ForgetBackup(ctx, m.ID, false)
	if err != nil || !f.Marked || f.Until.Before(*m.LockedUntil) {
		t.Fatalf("forget of a locked backup: %+v, %v", f, err)
	}
	if cat, err := r.Backups(ctx, true); err != nil || len(cat.Backups) != 1 || cat.Backups[0].ID != keep.ID {
		t.Fatalf("backups after forgetting a locked one: %+v, %v; want only %s (forgotten is forgotten)", cat, err, keep.ID)
	}
	st, err := r.Prune(ctx, PruneOptions{DryRun: true})
	if err != nil || len(st.BackupsLocked) != 1 || st.ChunksDeleted != 0 || st.ObjectsLocked != 0 {
		t.Fatalf("dry prune while locked: %+v, %v; want the locked backup named, nothing to delete", st, err)
	}
	st, err = r.Prune(ctx, PruneOptions{})
	if err != nil || len(st.BackupsLocked) != 1 || st.BackupsLocked[0].ID != m.ID || st.ChunksDeleted != 0 {
		t.Fatalf("prune while locked: %+v, %v", st, err)
	}
	if ok, _ := r.HasBackup(ctx, m.ID); !ok {
		t.Fatal("the locked backup is gone")
	}
	time.Sleep(time.Until(*m.LockedUntil) + 100*time.Millisecond)
	// A dry run counts what the prune will: the backup's objects locked
	// longer than it, nothing deletable; it deletes nothing.
	st, err = r.Prune(ctx, PruneOptions{DryRun: true})
	if err != nil || len(st.BackupsLocked) != 0 || st.ChunksDeleted != 0 || st.ObjectsLocked != 3 {
		t.Fatalf("dry prune after the backup's date: %+v, %v", st, err)
	}
	if ok, _ := r.HasBackup(ctx, m.ID); !ok {
		t.Fatal("a dry prune deleted the backup")
	}
	st, err = r.Prune(ctx, PruneOptions{})
	if err != nil || len(st.BackupsLocked) != 0 || st.ChunksDeleted != 0 || st.ObjectsLocked != 3 || st.LockedUntil.Before(*m.LockedUntil) {
		t.Fatalf("prune after the backup's date, before its data's: %+v, %v", st, err)
	}
	if ok, _ := r.HasBackup(ctx, m.ID); ok {
		t.Fatal("the backup survived its lock")
	}
	if objects(t, be, marksPrefix) != nil {
		t.Error("the forget mark stayed")
	}
	time.Sleep(time.Until(st.LockedUntil) + 100*time.Millisecond)
	st, err = r.Prune(ctx, PruneOptions{})
	if err != nil || st.ChunksDeleted != 2 || st.PagesDeleted != 1 || st.ObjectsLocked != 0 {
		t.Fatalf("prune after the data's date: %+v, %v", st, err)
	}
	if got, err := restore(r, keep); err != nil || sha(got) != sha(image(2, "r", 0)) {
		t.Errorf("the kept backup: %v", err)
	}
}

// TestNoDeleteCredentials: with credentials that may not delete, exports
// work (their lock left stale, not live), forget marks, and a prune with
// credentials that may delete finishes the job.
func TestNoDeleteCredentials(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	r := newRepo(t, be, nil)
	be.DenyDelete = true
	m1 := backup(t, r, image(1, "rt", 0), BackupOptions{})
	m2 := backup(t, r, image(2, "rt", 0), BackupOptions{Parent: m1})
	locks, err := r.Locks(ctx)
	if err != nil || len(locks) != 2 || !locks[0].Released || !locks[0].Stale(time.Now()) {
		t.Fatalf("locks after two exports without delete permission: %+v, %v", locks, err)
	}
	f, err := r.ForgetBackup(ctx, m1.ID, false)
	if err != nil || !f.Marked || !strings.Contains(f.Reason, "may not delete") {
		t.Fatalf("forget without delete permission: %+v, %v", f, err)
	}
	if cat, err := r.Backups(ctx, false); err != nil || len(cat.Backups) != 1 || cat.Backups[0].ID != m2.ID {
		t.Fatalf("backups after a marked forget: %+v, %v; want only %s", cat, err, m2.ID)
	}
	if _, err := r.Prune(ctx, PruneOptions{}); !errors.Is(err, ErrCredentials) {
		t.Errorf("prune without delete permission: %v", err)
	}
	be.DenyDelete = false
	st, err := r.Prune(ctx, PruneOptions{})
	if err != nil || st.Backups != 1 || len(st.StaleLocks) != 3 || // the failed prune's too
		st.ChunksDeleted == 0 {
		t.Fatalf("prune with delete permission: %+v, %v", st, err)
	}
	if ok, _ := r.HasBackup(ctx, m1.ID); ok {
		t.Error("the marked backup survived the prune")
	}
	if _, err := restore(r, m2); err != nil {
		t.Error(err)
	}
}
