//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-backup/lifeboat/test/sim"
)

// TestObjectLockAgent: `lifeboat run` with S3 credentials that cannot
// delete (noDeletePolicy), on an encrypted repository with Object Lock
// (governance, 20 s) and a retention policy keeping the last backup of a
// volume. It exports each snapshot exactly once and never fails on
// AccessDenied; its retention marks the older backup forgotten (the mark
// under forgotten/, the manifest still there and locked) and the snapshot
// Forgotten; each export leaves its lock released, stale at once, so a
// prune with full credentials runs right away, removes those locks and
// keeps the locked backup; past the backup's date the next prune deletes it.
func TestObjectLockAgent(t *testing.T) {
	s3Creds(t) // the CLI below runs with the stack's full credentials
	ctx := context.Background()
	w := newWorld(t)
	kc := saKubeconfig(t, w)
	b := newBucket(t)
	t.Cleanup(func() { removeLocked(t, b) }) // before newBucket's removal
	b.keyFile = filepath.Join(t.TempDir(), "repo.key")
	writeFile(t, b.keyFile, "object lock key\n")
	r := runLifeboat(t, append([]string{"repo", "init", "--s3-create-bucket", "--object-lock", "governance:20s"}, b.flags()...)...)
	if r.code != 0 {
		t.Fatalf("repo init --object-lock: exit %d: %s", r.code, r.stderr)
	}
	repo := openRepo(t, b)

	user, secret := minioUser(t, noDeletePolicy)
	cfg := agentConfig(t, b.name, fmt.Sprintf("  retention: {keepLast: 1}\nencryptionKeyFile: %q\n", b.keyFile))
	a := startAgentWith(t, s3Env(user, secret), w, kc, cfg, "nodelete")
	phase := func(s *sim.Snapshot) string { return w.annotations(s.ContentName)["lifeboat.io/phase"] }
	exported := func(s *sim.Snapshot) {
		t.Helper()
		waitFor(t, "an export of "+s.ContentName, 60*time.Second, func() bool { return phase(s) == "Exported" }, a)
	}
	vol := w.volume("locked", 16*MiB)
	first := w.snapshot(vol, "monday")
	exported(first)
	if err := vol.Fill(ctx, []sim.Region{{Off: 0, Len: 1 * MiB, Kind: sim.Random}}, 7); err != nil {
		t.Fatal(err)
	}
	second := w.snapshot(vol, "tuesday")
	exported(second)
	waitFor(t, "the first snapshot to be marked Forgotten", 30*time.Second, func() bool { return phase(first) == "Forgotten" }, a)
	id1, id2 := w.annotations(first.ContentName)["lifeboat.io/backup-id"], w.annotations(second.ContentName)["lifeboat.io/backup-id"]

	// Each snapshot exported once; the forgotten backup only marked: no
	// longer listed, its manifest kept by the lock.
	checkAgentBackups(t, b, map[string]string{id2: second.Handle})
	if marks := b.objects("forgotten/"); len(marks) != 1 || marks["forgotten/"+id1] == 0 {
		t.Fatalf("forget marks %v, want forgotten/%s only", marks, id1)
	}
	if b.objects("backups/")["backups/"+id1] == 0 {
		t.Fatalf("the locked backup %s's manifest is gone before its date", id1)
	}
	m1, m2 := load(t, repo, id1), load(t, repo, id2)
	checkLockedS3(t, b, repo, m1)
	checkLockedS3(t, b, repo, m2)
	mf, err := a.scrape()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, result string
		want         float64
	}{
		{"lifeboat_exports_total", "success", 2}, {"lifeboat_exports_total", "failure", 0},
		{"lifeboat_retention_forgets_total", "forgotten", 1}, {"lifeboat_retention_forgets_total", "failure", 0},
	} {
		if got := value(mf, c.name, "result", c.result); got != c.want {
			t.Errorf("%s{result=%s} = %v, want %v", c.name, c.result, got, c.want)
		}
	}
	for _, denied := range []string{"AccessDenied", "rejected the credentials"} {
		if strings.Contains(a.log(), denied) {
			t.Errorf("the agent's log mentions %q", denied)
		}
	}

	// Its locks could not be deleted: released, stale at once.
	locks, err := repo.Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(locks) != 2 {
		t.Fatalf("%d locks after two exports, want 2 (released, not deleted): %+v", len(locks), locks)
	}
	for _, l := range locks {
		if l.Kind != "export" || !l.Released || !l.Stale(time.Now()) {
			t.Errorf("the agent's lock %+v: want an export lock, released and stale", l)
		}
	}

	// A prune with full credentials, while the agent runs, is not kept out
	// by those locks; it removes them and keeps the locked backup.
	p := lockedPrune(t, b)
	if len(p.StaleLocks) != 2 || len(p.BackupsLocked) != 1 || p.BackupsLocked[0].ID != id1 || p.Backups != 2 {
		t.Fatalf("prune while backup %s is locked: %+v", id1, p)
	}
	for _, l := range p.StaleLocks {
		if l.Kind != "export" || !l.Released {
			t.Errorf("prune removed %+v, want only the agent's released export locks", l)
		}
	}
	time.Sleep(time.Until(m1.LockedUntil.Add(time.Second)))
	p = lockedPrune(t, b)
	if len(p.BackupsLocked) != 0 || p.Backups != 1 {
		t.Fatalf("prune past backup %s's date: %+v", id1, p)
	}
	checkAgentBackups(t, b, map[string]string{id2: second.Handle})
	if len(b.objects("forgotten/")) != 0 || len(b.objects("locks/")) != 0 {
		t.Errorf("marks or locks left: %v %v", b.objects("forgotten/"), b.objects("locks/"))
	}
	// The agent, still running, exported nothing again.
	if a.exited.Load() {
		t.Fatalf("the agent exited:\n%s", a.log())
	}
	if mf, err := a.scrape(); err != nil || value(mf, "lifeboat_exports_total", "result", "success") != 2 || phase(first) != "Forgotten" {
		t.Errorf("after the prune: exports %v (%v), first snapshot %q; want 2 and Forgotten",
			value(mf, "lifeboat_exports_total", "result", "success"), err, phase(first))
	}
}

// checkAgentBackups fails unless the repository holds exactly want
// (backup id → snapshot handle): one backup per snapshot.
func checkAgentBackups(t *testing.T, b *bucket, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	for _, s := range listBackups(t, b) {
		if _, dup := got[s.ID]; dup || s.Source["snapshotHandle"] == "" {
			t.Fatalf("backup %s listed twice or without a snapshot handle: %+v", s.ID, s.Source)
		}
		got[s.ID] = s.Source["snapshotHandle"]
	}
	handles := map[string]bool{}
	for id, h := range got {
		if want[id] != h || handles[h] {
			t.Fatalf("backups (id → snapshot handle) %v, want %v", got, want)
		}
		handles[h] = true
	}
	if len(got) != len(want) {
		t.Fatalf("backups (id → snapshot handle) %v, want %v", got, want)
	}
}
