//go:build e2e

package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeboat-backup/lifeboat/test/sim"
)

// TestKeyChange: after `repo key-change` the new key restores the backups
// bit-exactly and the old one is refused, with a message saying so.
func TestKeyChange(t *testing.T) {
	s3Creds(t)
	w := newWorld(t)
	repo := newRepo(t, "64KiB", "the old key")
	v := w.volumeWith("kc", 4*MiB, 3, sim.Region{Off: 0, Len: 3 * MiB, Kind: sim.Random})
	s := w.snapshot(v, "k1")
	e := w.export(repo, s.ContentName)

	newKey := filepath.Join(t.TempDir(), "new.key")
	writeFile(t, newKey, "the new key\n")
	if r := runLifeboat(t, append([]string{"repo", "key-change", "--new-encryption-key-file", repo.keyFile}, repo.flags()...)...); r.code == 0 ||
		!strings.Contains(r.stderr, "is the current key") {
		t.Fatalf("key change to the same key: exit %d: %s", r.code, r.stderr)
	}
	if r := runLifeboat(t, append([]string{"repo", "key-change", "--new-encryption-key-file", newKey}, repo.flags()...)...); r.code != 0 {
		t.Fatalf("key change: exit %d: %s", r.code, r.stderr)
	}
	r := runLifeboat(t, append([]string{"backups", "list"}, repo.flags()...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "wrong") {
		t.Fatalf("the old key after the change: exit %d: %s", r.code, r.stderr)
	}
	restoreAndCompare(t, w, repo.name, e.ID, s, "--encryption-key-file", newKey)
}
