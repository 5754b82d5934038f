//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/lifeboat-backup/lifeboat/test/sim"
)

// TestDamagedBackupsIsolated: one manifest truncated, one with a flipped
// byte and one backup's extents page deleted. backups list and check
// --all name the three (exit 1) and list or check the rest; forget
// --keep-last 1 forgets only intact backups; the agent starts, exports a
// new snapshot and applies its retention to the intact backups, with
// lifeboat_repository_damaged_objects 3; prune deletes nothing and names
// the three.
func TestDamagedBackupsIsolated(t *testing.T) {
	w, kc, name := agentWorld(t)
	b := &bucket{t: t, name: name, s3: minioClient(t, env.Get("AWS_ACCESS_KEY_ID"), env.Get("AWS_SECRET_ACCESS_KEY")),
		keyFile: filepath.Join(t.TempDir(), "repo.key")}
	writeFile(t, b.keyFile, "damage-test-key\n")
	if r := runLifeboat(t, append([]string{"repo", "init", "--s3-create-bucket"}, b.flags()...)...); r.code != 0 {
		t.Fatalf("repo init: %s", r.stderr)
	}
	config := func(extra string) string {
		p := filepath.Join(t.TempDir(), "config.yaml")
		writeFile(t, p, fmt.Sprintf("s3: {endpoint: %q, bucket: %q}\nencryptionKeyFile: %q\nagent:\n  verifyInterval: 2s\n%s",
			env.Get("S3_ENDPOINT"), name, b.keyFile, extra))
		return p
	}
	vol := w.volume("db", 16*MiB)
	exported := func(s *sim.Snapshot) func() bool {
		return func() bool { return w.annotations(s.ContentName)["lifeboat.io/phase"] == "Exported" }
	}
	// Five backups of one volume, each of other data (pages are content
	// addressed: the same extents would share one).
	a := startAgent(t, w, kc, config(""), "replica-a")
	var snaps []*sim.Snapshot
	var ids []string
	var newPages [][]string // the pages each export added
	seen := map[string]bool{}
	for i := range 5 {
		if err := vol.Fill(context.Background(), []sim.Region{{Off: 0, Len: 2 * MiB, Kind: sim.Random}}, int64(100+i)); err != nil {
			t.Fatal(err)
		}
		s := w.snapshot(vol, fmt.Sprintf("day%d", i))
		waitFor(t, fmt.Sprintf("snapshot %d to be exported", i), 90*time.Second, exported(s), a)
		snaps = append(snaps, s)
		ids = append(ids, w.annotations(s.ContentName)["lifeboat.io/backup-id"])
		var added []string
		for p := range b.objects("pages/") {
			if !seen[p] {
				seen[p] = true
				added = append(added, p)
			}
		}
		newPages = append(newPages, added)
	}
	_ = a.cmd.Process.Kill()
	<-a.done
	a.done <- nil // for its cleanup

	truncated, flipped, paged := ids[1], ids[2], ids[3]
	obj := b.get("backups/" + truncated)
	b.put("backups/"+truncated, obj[:len(obj)/2])
	obj = b.get("backups/" + flipped)
	obj[len(obj)/2] ^= 0x10
	b.put("backups/"+flipped, obj)
	pages := newPages[3]
	if len(pages) != 1 {
		t.Fatalf("export 3 added pages %v, want one", pages)
	}
	if err := b.s3.RemoveObject(context.Background(), name, pages[0], minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	damaged := []string{truncated, flipped, paged}

	// backups list: exit 1, the intact ones listed, the three named.
	r := runLifeboat(t, append([]string{"backups", "list", "-o", "json"}, b.flags()...)...)
	var rows []struct {
		ID, State, Object, Reason string
	}
	mustJSON(t, r.stdout, &rows)
	var ok, bad []string
	for _, row := range rows {
		if row.State == "ok" {
			ok = append(ok, row.ID)
		} else if row.State == "damaged" && row.Reason != "" {
			bad = append(bad, row.ID)
		}
	}
	slices.Sort(bad)
	if r.code != 1 || !slices.Equal(ok, []string{ids[0], ids[4]}) || !slices.Equal(bad, sorted(damaged)) {
		t.Fatalf("backups list: exit %d, ok %v, damaged %v; want 1, %v, %v", r.code, ok, bad, []string{ids[0], ids[4]}, sorted(damaged))
	}
	for _, id := range damaged {
		if !strings.Contains(r.stderr, id) {
			t.Errorf("backups list's warnings do not name %s", id)
		}
	}
	if r := runLifeboat(t, append([]string{"backups", "list"}, b.flags()...)...); r.code != 1 || !strings.Contains(r.stdout, pages[0]) {
		t.Errorf("backups list (table): exit %d, the missing page %s not named", r.code, pages[0])
	}

	// check --all: exit 1, each damaged one named, the rest OK.
	r = runLifeboat(t, append([]string{"backups", "check", "--all", "-o", "json"}, b.flags()...)...)
	var checks []struct{ ID, Status, Error string }
	mustJSON(t, r.stdout, &checks)
	status := map[string]string{}
	for _, c := range checks {
		status[c.ID] = c.Status
	}
	want := map[string]string{ids[0]: "OK", ids[4]: "OK", truncated: "Damaged", flipped: "Damaged", paged: "Damaged"}
	if r.code != 1 || fmt.Sprint(status) != fmt.Sprint(want) {
		t.Fatalf("check --all: exit %d, %v; want 1, %v", r.code, status, want)
	}

	// forget --keep-last 1 forgets the older intact backup only.
	r = runLifeboat(t, append([]string{"backups", "forget", "--keep-last", "1"}, b.flags()...)...)
	if r.code != 0 || !strings.Contains(r.stderr, "forgot backup "+ids[0]) || strings.Count(r.stderr, "forgot backup") != 1 {
		t.Fatalf("forget --keep-last 1: exit %d, want only %s forgotten", r.code, ids[0])
	}

	// The agent starts, exports a new snapshot and applies retention to
	// the intact backups only.
	a = startAgent(t, w, kc, config("  retention: {keepLast: 1}\n"), "replica-b")
	if err := vol.Fill(context.Background(), []sim.Region{{Off: 0, Len: 2 * MiB, Kind: sim.Random}}, 200); err != nil {
		t.Fatal(err)
	}
	last := w.snapshot(vol, "day5")
	waitFor(t, "the new snapshot to be exported", 90*time.Second, exported(last), a)
	waitFor(t, "the previous intact backup to be forgotten by retention", 30*time.Second, func() bool {
		return w.annotations(snaps[4].ContentName)["lifeboat.io/phase"] == "Forgotten"
	}, a)
	mf, err := a.scrape()
	if err != nil {
		t.Fatal(err)
	}
	if got := value(mf, "lifeboat_repository_damaged_objects"); got != 3 {
		t.Errorf("lifeboat_repository_damaged_objects = %v, want 3", got)
	}
	if got := value(mf, "lifeboat_retention_forgets_total", "result", "forgotten"); got != 1 {
		t.Errorf("retention forgot %v backups, want 1 (the intact one)", got)
	}
	for _, id := range damaged {
		if len(b.objects("backups/"+id)) != 1 {
			t.Errorf("damaged backup %s was deleted", id)
		}
	}

	// prune: nothing deleted, the three named.
	chunks := len(b.objects("data/"))
	r = runLifeboat(t, append([]string{"repo", "prune"}, b.flags()...)...)
	if r.code == 0 || len(b.objects("data/")) != chunks {
		t.Fatalf("prune with damaged backups: exit %d, %d of %d chunks left", r.code, len(b.objects("data/")), chunks)
	}
	for _, id := range damaged {
		if !strings.Contains(r.stderr, id) {
			t.Errorf("prune's error does not name %s", id)
		}
	}
	restoreAndCompare(t, w, name, w.annotations(last.ContentName)["lifeboat.io/backup-id"], last, "--encryption-key-file", b.keyFile)
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
