//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-backup/lifeboat/test/sim"
)

// pruneOut is `lifeboat repo prune -o json`.
type pruneOut struct {
	Backups       int   `json:"backups"`
	ChunksKept    int64 `json:"chunksKept"`
	ChunksDeleted int64 `json:"chunksDeleted"`
	BytesDeleted  int64 `json:"bytesDeleted"`
	PagesDeleted  int64 `json:"pagesDeleted"`
	DryRun        bool  `json:"dryRun"`
}

func prune(t *testing.T, b *bucket, args ...string) pruneOut {
	t.Helper()
	r := runLifeboat(t, append(append([]string{"repo", "prune", "-o", "json"}, args...), b.flags()...)...)
	if r.code != 0 {
		t.Fatalf("repo prune %v: exit %d: %s", args, r.code, r.stderr)
	}
	var out pruneOut
	mustJSON(t, r.stdout, &out)
	return out
}

// TestForgetAndPrune: after the first of two backups of a volume is
// forgotten, prune deletes exactly the chunks only it had (those the
// second snapshot overwrote), the second still restores bit-exactly, and
// a live prune lock keeps exports out.
func TestForgetAndPrune(t *testing.T) {
	s3Creds(t)
	ctx := context.Background()
	w := newWorld(t)
	const chunk = 64 * KiB
	repo := newRepo(t, "64KiB", "prune key")
	v := w.volumeWith("pr", 8*MiB, 3, sim.Region{Off: 0, Len: 6 * MiB, Kind: sim.Random})
	s1 := w.snapshot(v, "p1")
	e1 := w.export(repo, s1.ContentName)
	// Three chunks overwritten: the first backup's versions of them are
	// what only it references.
	if err := v.Fill(ctx, []sim.Region{{Off: 0, Len: chunk, Kind: sim.Random},
		{Off: 10 * chunk, Len: 2 * chunk, Kind: sim.Random}}, 7); err != nil {
		t.Fatal(err)
	}
	s2 := w.snapshot(v, "p2")
	e2 := w.export(repo, s2.ContentName)
	chunks := int64(len(repo.objects("data/")))
	if chunks != e1.Chunks+3 {
		t.Fatalf("%d chunks stored, want %d + 3", chunks, e1.Chunks)
	}

	if got := prune(t, repo); got.ChunksDeleted != 0 || got.Backups != 2 {
		t.Fatalf("prune with nothing forgotten: %+v", got)
	}
	// A retention policy of one backup per volume would forget the first.
	r := runLifeboat(t, append([]string{"backups", "forget", "--keep-last", "1", "--dry-run", "-o", "json"}, repo.flags()...)...)
	if r.code != 0 {
		t.Fatalf("forget --keep-last 1 --dry-run: exit %d: %s", r.code, r.stderr)
	}
	var decisions []struct {
		ID      string   `json:"id"`
		Keep    bool     `json:"keep"`
		Reasons []string `json:"reasons"`
	}
	mustJSON(t, r.stdout, &decisions)
	if len(decisions) != 2 || decisions[0].ID != e2.ID || !decisions[0].Keep || decisions[1].ID != e1.ID || decisions[1].Keep {
		t.Fatalf("retention decisions: %+v, want %s kept and %s forgotten", decisions, e2.ID, e1.ID)
	}
	if n := len(listBackups(t, repo)); n != 2 {
		t.Fatalf("%d backups after a dry run, want 2", n)
	}
	if r := runLifeboat(t, append([]string{"backups", "forget", e1.ID}, repo.flags()...)...); r.code != 0 {
		t.Fatalf("forget: exit %d: %s", r.code, r.stderr)
	}
	if r := runLifeboat(t, append([]string{"backups", "show", e1.ID}, repo.flags()...)...); r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("show of a forgotten backup: exit %d: %s", r.code, r.stderr)
	}
	if got := prune(t, repo, "--dry-run"); got.ChunksDeleted != 3 || !got.DryRun || int64(len(repo.objects("data/"))) != chunks {
		t.Fatalf("dry run: %+v, %d chunks left of %d", got, len(repo.objects("data/")), chunks)
	}
	got := prune(t, repo)
	if got.ChunksDeleted != 3 || got.ChunksKept != e2.Chunks || got.BytesDeleted < 3*chunk {
		t.Fatalf("prune: %+v, want 3 chunks (%d bytes or more) deleted, %d kept", got, 3*chunk, e2.Chunks)
	}
	if n := int64(len(repo.objects("data/"))); n != chunks-3 {
		t.Fatalf("%d chunks in the bucket after prune, want %d", n, chunks-3)
	}
	if len(repo.objects("locks/")) != 0 {
		t.Fatalf("locks left: %v", repo.objects("locks/"))
	}

	restoreAndCompare(t, w, repo.name, e2.ID, s2, "--encryption-key-file", repo.keyFile)

	// A live prune lock (another host pruning) keeps an export out, with
	// a message that says who holds it.
	now := time.Now().UTC()
	lock, _ := json.Marshal(map[string]any{"kind": "prune", "host": "other-host", "pid": 7,
		"created": now, "refreshed": now})
	repo.put("locks/0123456789abcdef0123456789abcdef", lock)
	r = w.run(append([]string{"export", s2.ContentName, "--full"}, repo.flags()...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "repository is locked") || !strings.Contains(r.stderr, "other-host") {
		t.Fatalf("export during a prune: exit %d: %s", r.code, r.stderr)
	}
	if n := len(listBackups(t, repo)); n != 1 {
		t.Fatalf("%d backups after the refused export, want 1", n)
	}
	t.Log("refused export:", strings.TrimSpace(r.stderr))

	// repo locks shows who holds it; unlock removes only stale locks.
	old := now.Add(-time.Hour)
	dead, _ := json.Marshal(map[string]any{"kind": "export", "host": "dead-host", "pid": 8, "created": old, "refreshed": old})
	repo.put("locks/fedcba9876543210fedcba9876543210", dead)
	var locks []struct {
		Name, Host string
		Stale      bool
	}
	mustJSON(t, runLifeboat(t, append([]string{"repo", "locks", "-o", "json"}, repo.flags()...)...).stdout, &locks)
	if len(locks) != 2 || locks[0].Host != "other-host" || locks[0].Stale || locks[1].Host != "dead-host" || !locks[1].Stale {
		t.Fatalf("repo locks: %+v", locks)
	}
	if r := runLifeboat(t, append([]string{"repo", "unlock"}, repo.flags()...)...); r.code != 0 || !strings.Contains(r.stdout, "dead-host") {
		t.Fatalf("repo unlock: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if got := repo.objects("locks/"); len(got) != 1 || got["locks/0123456789abcdef0123456789abcdef"] == 0 {
		t.Fatalf("locks after unlock: %v, want only the live one", got)
	}
}
