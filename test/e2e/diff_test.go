//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/lifeboat-backup/lifeboat/test/sim"
)

// diffByID reports whether the stack's librbd can diff from a snapshot id
// (Reef and later); on Pacific every CSI incremental falls back to hashing.
func diffByID() bool { return env.Get("LIFEBOAT_CEPH_RELEASE") != "pacific" }

// change is a set of writes made to a volume between two snapshots.
type change struct {
	name   string
	bytes  int64 // exactly the bytes written (writes never overlap)
	chunks int64 // 64 KiB chunks touched
	// aligned: whole 64 KiB chunks, so uploads can be held to 1.5× the
	// change; otherwise small writes scattered inside chunks.
	aligned bool
}

// writeChange writes about 1% of v: distinct random slots of slot bytes,
// aligned to slot, random data.
func writeChange(t *testing.T, v *sim.Volume, size, slot uint64, seed uint64, aligned bool) change {
	t.Helper()
	n := (size/100 + slot - 1) / slot
	rng := rand.New(rand.NewPCG(seed, 7))
	picked, touched := map[uint64]bool{}, map[uint64]bool{}
	buf := make([]byte, slot)
	for uint64(len(picked)) < n {
		i := rng.Uint64N(size / slot)
		if picked[i] {
			continue
		}
		picked[i] = true
		touched[i*slot/(64*KiB)] = true
		for j := range buf {
			buf[j] = byte(rng.Uint32())
		}
		if _, err := v.WriteAt(buf, int64(i*slot)); err != nil {
			t.Fatal(err)
		}
	}
	return change{name: fmt.Sprintf("%d×%d KiB", n, slot/KiB), bytes: int64(n * slot), chunks: int64(len(touched)), aligned: aligned}
}

// catSHA256 streams backup id with `lifeboat cat --format raw` and hashes it.
func catSHA256(t *testing.T, b *bucket, id string) string {
	t.Helper()
	cmd := exec.Command(lifeboat, append([]string{"cat", id, "--format", "raw"}, b.flags()...)...)
	h := sha256.New()
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = hashWriter{h}, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cat %s: %v\n%s", id, err, stderr.String())
	}
	return hex.EncodeToString(h.Sum(nil))
}

type hashWriter struct{ hash.Hash }

// checkExact asserts that each backup streams back to its snapshot's bytes.
func (w *world) checkExact(t *testing.T, b *bucket, backups map[string]*sim.Snapshot) {
	t.Helper()
	for id, s := range backups {
		want, err := w.sim.ReadSnapshotSHA256(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if got := catSHA256(t, b, id); got != want {
			t.Errorf("backup %s of %s streams to sha256 %s, the snapshot is %s", id, s.ImageName, got, want)
		}
	}
}

// TestDiffChain: a full backup and a chain of 5 incrementals, each after
// about 1% of the volume changed. On Reef each incremental asks Ceph for
// the extents that changed between the two snapshots' parent trash
// snapshots and reads at most 1.2× the changed bytes; on Pacific it falls
// back to hashing and says so. Every backup streams back bit-exactly.
func TestDiffChain(t *testing.T) {
	s3Creds(t)
	w := newWorld(t)
	const size, chunk = 128 * MiB, 64 * KiB
	repo := newRepo(t, "64KiB", "")
	// A volume in use: every RBD object exists. (A write into an object
	// that did not exist at the previous snapshot is reported by Ceph's
	// diff from the object's start to the write's end.)
	v := w.volumeWith("chain", size, 3,
		sim.Region{Off: 0, Len: 64 * MiB, Kind: sim.Random},
		sim.Region{Off: 64 * MiB, Len: 64 * MiB, Kind: sim.Text})
	s := w.snapshot(v, "chain0")
	e := w.export(repo, s.ContentName)
	if e.Path != "full" || e.BytesRead != size {
		t.Fatalf("first export: path %q, %d bytes read; want full, %d", e.Path, e.BytesRead, size)
	}
	backups := map[string]*sim.Snapshot{e.ID: s}
	prev := e.ID
	for i := 1; i <= 5; i++ {
		// Rounds 2 and 4 scatter 4 KiB writes inside chunks: Ceph reads
		// stay exact, and the chunks are patched from the previous backup.
		var c change
		if i%2 == 0 {
			c = writeChange(t, v, size, 4*KiB, uint64(i), false)
		} else {
			c = writeChange(t, v, size, chunk, uint64(i), true)
		}
		s := w.snapshot(v, fmt.Sprintf("chain%d", i))
		e := w.export(repo, s.ContentName)
		backups[e.ID] = s
		t.Logf("incremental %d (%s, %d bytes changed): path %s%s, read %d bytes from Ceph (%.2f× the change), uploaded %d (%.2f×), %d stored, %.2fs",
			i, c.name, c.bytes, e.Path, strings.TrimSuffix(" fallback "+e.Fallback, " fallback "), e.BytesRead,
			float64(e.BytesRead)/float64(c.bytes), e.BytesNew, float64(e.BytesNew)/float64(c.bytes), e.BytesStored, e.Seconds)
		if m := showBackup(t, repo, e.ID); m.Parent != prev {
			t.Errorf("incremental %d: parent %q, want %q", i, m.Parent, prev)
		}
		prev = e.ID
		if diffByID() {
			if e.Path != "diff-by-id" || e.Fallback != "" {
				t.Errorf("incremental %d: path %q fallback %q, want diff-by-id", i, e.Path, e.Fallback)
			}
			if e.BytesRead > c.bytes*12/10 || e.BytesRead < c.bytes {
				t.Errorf("incremental %d: read %d bytes from Ceph for %d changed: want between 1× and 1.2×", i, e.BytesRead, c.bytes)
			}
		} else if e.Path != "hash" || e.Fallback != "diff-by-id-unsupported" {
			t.Errorf("incremental %d on Pacific: path %q fallback %q, want hash, diff-by-id-unsupported", i, e.Path, e.Fallback)
		}
		if c.aligned && (e.BytesNew > c.bytes*3/2 || e.BytesNew < c.bytes) {
			t.Errorf("incremental %d: uploaded %d bytes for %d changed: want between 1× and 1.5×", i, e.BytesNew, c.bytes)
		}
		if !c.aligned && e.BytesNew > c.chunks*chunk {
			t.Errorf("incremental %d: uploaded %d bytes, more than the %d chunks written to", i, e.BytesNew, c.chunks)
		}
	}
	w.checkExact(t, repo, backups)
}

// TestDiffFallbacks exercises every reason an incremental cannot diff, on
// one volume's lineage, and checks each backup is still exact.
func TestDiffFallbacks(t *testing.T) {
	s3Creds(t)
	ctx := context.Background()
	w := newWorld(t)
	const size, chunk = 32 * MiB, 64 * KiB
	repo := newRepo(t, "64KiB", "")
	v := w.volumeWith("fb", size, 5, sim.Region{Off: 0, Len: 16 * MiB, Kind: sim.Random})
	backups := map[string]*sim.Snapshot{}
	step := func(name string, prepare func(*sim.Snapshot), wantPath, wantFallback string) *sim.Snapshot {
		t.Helper()
		writeChange(t, v, size, chunk, uint64(len(backups)+1), true)
		s := w.snapshot(v, name)
		if prepare != nil {
			prepare(s)
		}
		e := w.export(repo, s.ContentName)
		backups[e.ID] = s
		t.Logf("%s: path %s, fallback %q, read %d bytes", name, e.Path, e.Fallback, e.BytesRead)
		if e.Path != wantPath || e.Fallback != wantFallback {
			t.Errorf("%s: path %q fallback %q, want %q %q", name, e.Path, e.Fallback, wantPath, wantFallback)
		}
		return s
	}
	diffPath, diffFallback := "diff-by-id", ""
	if !diffByID() {
		diffPath, diffFallback = "hash", "diff-by-id-unsupported"
	}
	flatten := func(s *sim.Snapshot) {
		if err := w.sim.Flatten(ctx, s); err != nil {
			t.Fatal(err)
		}
	}

	step("a", nil, "full", "")
	step("b", flatten, "hash", "flattened")  // this clone has no parent
	c := step("c", nil, "hash", "flattened") // the previous one had none
	d := step("d", nil, diffPath, diffFallback)
	// Deleting d's snapshot removes its clone and the volume's trash
	// snapshot it hung from: the next export has nothing to diff from.
	if _, err := w.sim.DeleteSnapshot(ctx, d); err != nil {
		t.Fatal(err)
	}
	for id, s := range backups {
		if s == d {
			delete(backups, id) // its snapshot is gone, nothing to compare with
		}
	}
	e := step("e", nil, "hash", "previous-parent-snapshot-gone")

	// Exporting c again: the latest backup (e) is of a later snapshot.
	again := w.export(repo, c.ContentName)
	backups[again.ID] = c
	if again.Path != "hash" || again.Fallback != "previous-backup-is-newer" {
		t.Errorf("re-export of c: path %q fallback %q, want hash, previous-backup-is-newer", again.Path, again.Fallback)
	}

	// The volume restored in place from backup e: same name, so the same
	// lineage, but a new image: the clones' parents differ.
	img := v.Name
	restored := img + "-restored"
	var eID string
	for id, s := range backups {
		if s == e {
			eID = id
		}
	}
	if r := w.run(append([]string{"restore", eID, "--to", w.spec(restored), "--cluster", w.id}, repo.flags()...)...); r.code != 0 {
		t.Fatalf("restore: exit %d: %s", r.code, r.stderr)
	}
	w.ceph("rbd", "mv", w.spec(img), w.spec(img+"-old"))
	w.ceph("rbd", "mv", w.spec(restored), w.spec(img))
	step("f", nil, "hash", "parents-differ")
	step("g", nil, diffPath, diffFallback) // and the lineage diffs again from there

	w.checkExact(t, repo, backups)
}

// TestDiffByName: `lifeboat export --image POOL/IMAGE@SNAP` diffs from the
// previous exported snapshot of the same image by name, on every Ceph
// release, and falls back when that snapshot is gone or was re-created.
func TestDiffByName(t *testing.T) {
	s3Creds(t)
	w := newWorld(t)
	const size = 64 * MiB
	repo := newRepo(t, "64KiB", "")
	v := w.volumeWith("plain", size, 9, sim.Region{Off: 0, Len: size, Kind: sim.Text})
	spec := w.spec(v.Name)
	export := func(snap string) exportOut {
		t.Helper()
		return w.export(repo, "--image", spec+"@"+snap, "--cluster", w.id)
	}
	sums := map[string]string{} // backup id → sha256 of the snapshot
	snap := func(name string) {
		t.Helper()
		w.ceph("rbd", "snap", "create", spec+"@"+name)
	}
	record := func(e exportOut, name string) {
		t.Helper()
		sums[e.ID] = rbdSHA256(t, env.Get("CEPH_CONF"), spec+"@"+name)
	}

	snap("a")
	e := export("a")
	record(e, "a")
	if e.Path != "full" {
		t.Errorf("first export: path %q", e.Path)
	}
	c := writeChange(t, v, size, 4*KiB, 11, false)
	snap("b")
	e = export("b")
	record(e, "b")
	t.Logf("diff by name: %d bytes changed, read %d from Ceph, uploaded %d, path %s", c.bytes, e.BytesRead, e.BytesNew, e.Path)
	if e.Path != "diff-by-name" || e.BytesRead > c.bytes*12/10 || e.BytesRead < c.bytes {
		t.Errorf("second export: path %q, read %d bytes for %d changed: want diff-by-name, ≤1.2×", e.Path, e.BytesRead, c.bytes)
	}

	// b removed and re-created under the same name: not the snapshot the
	// previous backup read.
	writeChange(t, v, size, 64*KiB, 12, true)
	w.ceph("rbd", "snap", "rm", spec+"@b")
	snap("b")
	e = export("b")
	record(e, "b")
	if e.Path != "hash" || e.Fallback != "previous-snapshot-gone" {
		t.Errorf("re-created snapshot: path %q fallback %q, want hash, previous-snapshot-gone", e.Path, e.Fallback)
	}
	writeChange(t, v, size, 64*KiB, 13, true)
	snap("c")
	e = export("c")
	record(e, "c")
	if e.Path != "diff-by-name" {
		t.Errorf("after the fallback: path %q fallback %q, want diff-by-name", e.Path, e.Fallback)
	}
	for id, want := range sums {
		if got := catSHA256(t, repo, id); got != want {
			t.Errorf("backup %s streams to %s, want %s", id, got, want)
		}
	}
}
