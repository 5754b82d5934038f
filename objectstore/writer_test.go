package objectstore

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	specs := []struct {
		spec string
		tail int
	}{
		{"", 0},                  // empty image
		{"r", 0},                 // one chunk
		{"r", 1},                 // one byte
		{"rtzzrtz", 0},           // holes inside and at the end
		{"zzrt", 4096},           // hole at the start, short last chunk
		{"zzzz", 10},             // all zeros: no extents at all
		{"aabaa", testChunk - 1}, // duplicates
	}
	for _, key := range [][]byte{nil, []byte("k")} {
		for _, s := range specs {
			r := newRepo(t, NewMemory(), key)
			img := image(7, s.spec, s.tail)
			m := backup(t, r, img, BackupOptions{Source: map[string]string{"image": "csi-vol-1"}})
			if m.SHA256 != sha(img) {
				t.Errorf("%q: manifest sha256 %s, want sha256 of the image %s", s.spec, m.SHA256, sha(img))
			}
			if m.Size != int64(len(img)) || m.ChunkSize != testChunk {
				t.Errorf("%q: size %d chunk %d", s.spec, m.Size, m.ChunkSize)
			}
			got, err := restore(r, m)
			if err != nil || !bytes.Equal(got, img) {
				t.Fatalf("%q (key %q): restore: %v, equal %v", s.spec, key, err, bytes.Equal(got, img))
			}
			// Stream skips holes: exactly the non-zero chunks come back.
			var n int64
			err = r.Stream(context.Background(), m, 2, func(off int64, data []byte) error {
				if allZero(data) || !bytes.Equal(data, img[off:off+int64(len(data))]) {
					t.Errorf("%q: bad data at %d", s.spec, off)
				}
				n++
				return nil
			})
			if ex := extentsOf(t, r, m); err != nil || n != int64(len(ex)) || n != m.Stats.Chunks {
				t.Errorf("%q: Stream: %v, %d calls, %d extents", s.spec, err, n, len(ex))
			}
		}
	}
}

func TestZeroDataIsAHole(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, NewMemory(), nil)
	img := image(1, "rzr", 0)
	w, _ := r.NewBackup(ctx, BackupOptions{Size: int64(len(img)), StreamSHA256: true})
	for off := 0; off < len(img); off += testChunk {
		if err := w.Write(ctx, int64(off), img[off:off+testChunk]); err != nil {
			t.Fatal(err)
		}
	}
	m, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ex := extentsOf(t, r, m); len(ex) != 2 || ex[1].Offset != 2*testChunk || m.Stats.BytesRead != int64(len(img)) {
		t.Fatalf("extents %+v stats %+v", ex, m.Stats)
	}
	if m.SHA256 != sha(img) {
		t.Fatal("checksum differs")
	}
}

func TestWriteRejectsBadCalls(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, NewMemory(), nil)
	chunk := make([]byte, testChunk)
	chunk[0] = 1
	w, _ := r.NewBackup(ctx, BackupOptions{Size: 3*testChunk + 10})
	defer w.Abort()
	bad := []struct {
		off  int64
		data []byte
	}{
		{1, chunk},                 // unaligned
		{0, chunk[:10]},            // short, not the last chunk
		{3 * testChunk, chunk},     // past the end
		{0, append(chunk, 1)},      // longer than a chunk
		{0, nil},                   // empty
		{4 * testChunk, chunk[:1]}, // beyond the image
	}
	for _, b := range bad {
		if err := w.Write(ctx, b.off, b.data); err == nil {
			t.Errorf("Write(%d, %d bytes) accepted", b.off, len(b.data))
		}
	}
	if err := w.Write(ctx, testChunk, chunk); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, 0, chunk); err == nil {
		t.Error("descending offset accepted")
	}
	if err := w.Write(ctx, 3*testChunk, chunk[:10]); err != nil {
		t.Errorf("short last chunk: %v", err)
	}
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, 3*testChunk, chunk[:10]); err == nil {
		t.Error("Write after Commit accepted")
	}
}

func TestDedup(t *testing.T) {
	be := &counting{Backend: NewMemory()}
	r := newRepo(t, be, []byte("k"))

	// Within one backup: identical chunks are uploaded once.
	first := image(1, "aabrrtt", 0)
	m1 := backup(t, r, first, BackupOptions{})
	if m1.Stats.Chunks != 7 || m1.Stats.ChunksNew != 6 || be.dataPuts.Load() != 6 {
		t.Fatalf("first backup stats %+v, %d uploads", m1.Stats, be.dataPuts.Load())
	}

	// Incremental: one chunk changed. Known chunks come from the parent's
	// manifest, so only the changed one costs a HEAD and an upload.
	second := bytes.Clone(first)
	copy(second[3*testChunk:], image(9, "r", 0))
	be.reset()
	m2 := backup(t, r, second, BackupOptions{Parent: m1})
	if m2.Stats.ChunksNew != 1 || be.dataPuts.Load() != 1 || be.stats.Load() != 1 {
		t.Fatalf("incremental: stats %+v, %d uploads, %d HEADs", m2.Stats, be.dataPuts.Load(), be.stats.Load())
	}
	if m2.Parent != m1.ID || m2.Stats.BytesNew != testChunk {
		t.Fatalf("incremental: parent %q bytes new %d", m2.Parent, m2.Stats.BytesNew)
	}

	// Another volume sharing chunks, no parent: HEAD finds them.
	be.reset()
	other := image(2, "rab", 0) // another seed: a new 'r'
	m3 := backup(t, r, other, BackupOptions{})
	if m3.Stats.ChunksNew != 1 || be.dataPuts.Load() != 1 {
		t.Fatalf("cross-volume: stats %+v, %d uploads", m3.Stats, be.dataPuts.Load())
	}
	for _, m := range []*Manifest{m1, m2, m3} {
		if err := r.Verify(context.Background(), m, 3); err != nil {
			t.Fatal(err)
		}
	}
}

func TestInterruptedBackupRerun(t *testing.T) {
	ctx := context.Background()
	be := &counting{Backend: NewMemory()}
	r := newRepo(t, be, nil)
	img := image(3, "rrrrrrrrrrrrrtrt", 77)

	// First run: the store breaks after 5 chunk uploads.
	be.breakAfter.Store(5)
	w, _ := r.NewBackup(ctx, BackupOptions{Size: int64(len(img)), Parallel: 2})
	var err error
	for off := 0; off < len(img) && err == nil; off += testChunk {
		err = w.Write(ctx, int64(off), img[off:min(off+testChunk, len(img))])
	}
	if err == nil {
		_, err = w.Commit(ctx)
	}
	if !errors.Is(err, ErrCredentials) {
		t.Fatalf("interrupted backup: %v", err)
	}
	w.Abort()
	if got := objects(t, be, "backups/"); len(got) != 0 {
		t.Fatalf("failed backup left manifests %v", got)
	}
	stored := len(objects(t, be, "data/"))
	if stored != 5 {
		t.Fatalf("%d chunks stored, want 5", stored)
	}

	// Re-run: only the missing chunks are uploaded.
	be.breakAfter.Store(0)
	be.reset()
	m := backup(t, r, img, BackupOptions{})
	if got := be.dataPuts.Load(); got != 16-5 || m.Stats.ChunksNew != 16-5 {
		t.Fatalf("re-run uploaded %d chunks (stats %+v), want %d", got, m.Stats, 16-5)
	}
	if got, err := restore(r, m); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("restore after re-run: %v", err)
	}
}

func TestManifestInvisibleBeforeCommit(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, NewMemory(), nil)
	img := image(1, "rr", 0)
	w, _ := r.NewBackup(ctx, BackupOptions{Size: int64(len(img))})
	w.Write(ctx, 0, img[:testChunk])
	w.Write(ctx, testChunk, img[testChunk:])
	if list, err := summaries(ctx, r); err != nil || len(list) != 0 {
		t.Fatalf("before Commit: %d backups listed (%v)", len(list), err)
	}
	if _, err := r.LoadBackup(ctx, w.ID()); !errors.Is(err, ErrBackupNotFound) {
		t.Fatalf("LoadBackup before Commit: %v", err)
	}
	w.Abort()
	if _, err := w.Commit(ctx); err == nil {
		t.Fatal("Commit after Abort succeeded")
	}
	if list, _ := summaries(ctx, r); len(list) != 0 {
		t.Fatal("aborted backup is listed")
	}
	m := backup(t, r, img, BackupOptions{})
	if list, _ := summaries(ctx, r); len(list) != 1 || list[0].ID != m.ID {
		t.Fatalf("after Commit: %+v", list)
	}
}

func TestRetriesTransientErrors(t *testing.T) {
	be := &counting{Backend: NewMemory()}
	r := newRepo(t, be, nil)
	be.failPuts.Store(4) // fewer than retryAttempts per call
	img := image(5, "rrt", 0)
	m := backup(t, r, img, BackupOptions{Parallel: 1})
	if got, err := restore(r, m); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("restore: %v", err)
	}
	be.failPuts.Store(1000)
	w, _ := r.NewBackup(context.Background(), BackupOptions{Size: testChunk})
	w.Write(context.Background(), 0, image(6, "r", 0))
	if _, err := w.Commit(context.Background()); !errors.Is(err, errTransient) {
		t.Fatalf("persistent failure: %v", err)
	}
}

func TestWriterBoundsParallelism(t *testing.T) {
	be := &counting{Backend: NewMemory(), delay: 2 * time.Millisecond}
	r := newRepo(t, be, nil)
	backup(t, r, image(2, strings.Repeat("r", 24), 0), BackupOptions{Parallel: 3})
	if be.maxFlight > 3 || be.maxFlight < 2 {
		t.Fatalf("%d uploads in flight, want 2..3", be.maxFlight)
	}
}

func TestCompression(t *testing.T) {
	be := NewMemory()
	r := newRepo(t, be, nil)
	m := backup(t, r, image(1, "tr", 0), BackupOptions{})
	ex := extentsOf(t, r, m)
	text, _ := be.Get(context.Background(), chunkName(ex[0].ID))
	random, _ := be.Get(context.Background(), chunkName(ex[1].ID))
	page, _ := be.Get(context.Background(), pageName(m.Pages[0].ID))
	if text[0] != headerZstd || len(text) > testChunk/2 {
		t.Errorf("text chunk: header %d, %d bytes", text[0], len(text))
	}
	if random[0] != headerRaw || len(random) != testChunk+1 {
		t.Errorf("random chunk: header %d, %d bytes", random[0], len(random))
	}
	if m.Stats.BytesStored != int64(len(text)+len(random)+len(page)) || m.Stats.BytesNew != 2*testChunk {
		t.Errorf("stats %+v", m.Stats)
	}
}

func TestEncryptionHidesPlaintext(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	r := newRepo(t, be, []byte("k"))
	marker := []byte("PLAINTEXT-MARKER-7f3a")
	img := image(1, "tr", 0)
	copy(img[100:], marker)           // in a compressed chunk
	copy(img[testChunk+100:], marker) // in a raw chunk
	m := backup(t, r, img, BackupOptions{Source: map[string]string{"pool": string(marker)}, Method: string(marker)})
	if n := len(extentsOf(t, r, m)); n != 2 {
		t.Fatalf("%d extents", n)
	}
	var all []string
	be.List(ctx, "", func(name string, _ int64) error { all = append(all, name); return nil })
	for _, name := range all {
		data, _ := be.Get(ctx, name)
		if bytes.Contains(data, marker) || bytes.Contains(data, []byte("ceph")) {
			t.Errorf("object %s contains plaintext", name)
		}
	}
	// Unencrypted, the marker is visible: the check above can see it.
	plain := NewMemory()
	backup(t, newRepo(t, plain, nil), img, BackupOptions{})
	data, _ := plain.Get(ctx, chunkName(sha256ID(img[testChunk:])))
	if !bytes.Contains(data, marker) {
		t.Error("control: marker not found in the unencrypted raw chunk")
	}
}

func sha256ID(b []byte) ChunkID { return (*keys)(nil).id(b) }

func TestProgress(t *testing.T) {
	r := newRepo(t, NewMemory(), nil)
	var calls int
	var last Stats
	img := image(1, "rrzr", 0)
	m := backup(t, r, img, BackupOptions{Progress: func(s Stats) { calls++; last = s }})
	if calls != 3 || last.BytesRead != 3*testChunk || m.Stats.ChunksNew != 3 {
		t.Fatalf("%d progress calls, last %+v, final %+v", calls, last, m.Stats)
	}
}

func TestParentFromOtherRepository(t *testing.T) {
	r1 := newRepo(t, NewMemory(), nil)
	r2 := newRepo(t, NewMemory(), nil)
	m := backup(t, r1, image(1, "r", 0), BackupOptions{})
	if _, err := r2.NewBackup(context.Background(), BackupOptions{Size: 1, Parent: m}); err == nil {
		t.Fatal("parent from another repository accepted")
	}
}

func TestFailedWriteChangesNothing(t *testing.T) {
	ctx := context.Background()
	be := &counting{Backend: NewMemory(), delay: 100 * time.Millisecond}
	r := newRepo(t, be, nil)
	img := image(1, "rr", 0)
	w, _ := r.NewBackup(ctx, BackupOptions{Size: int64(len(img)), Parallel: 1, StreamSHA256: true})
	if err := w.Write(ctx, 0, img[:testChunk]); err != nil {
		t.Fatal(err)
	}
	// The only buffer is busy with the slow upload: a cancelled Write
	// gives up without touching the writer...
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := w.Write(cancelled, testChunk, img[testChunk:]); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Write: %v", err)
	}
	// ...so the same Write can be retried.
	if err := w.Write(ctx, testChunk, img[testChunk:]); err != nil {
		t.Fatal(err)
	}
	m, err := w.Commit(ctx)
	if err != nil || m.SHA256 != sha(img) || len(extentsOf(t, r, m)) != 2 {
		t.Fatalf("Commit: %v, %+v", err, m)
	}
}

// TestReuse: an incremental that reuses its parent's unchanged chunks
// unread restores exactly, has no whole-stream SHA-256 but a digest equal
// to that of a backup that read everything, and refuses foreign chunks.
func TestReuse(t *testing.T) {
	ctx := context.Background()
	for _, key := range [][]byte{nil, []byte("k")} {
		r := newRepo(t, NewMemory(), key)
		first := image(1, "rrzrt", 100)
		m1 := backup(t, r, first, BackupOptions{})
		ex1 := extentsOf(t, r, m1)
		second := bytes.Clone(first)
		copy(second[1*testChunk:], image(9, "r", 0))
		full := backup(t, r, second, BackupOptions{Parent: m1})

		w, err := r.NewBackup(ctx, BackupOptions{Size: int64(len(second)), Parent: m1, StreamSHA256: true})
		if err != nil {
			t.Fatal(err)
		}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(w.Reuse(ex1[0]))
		must(w.Write(ctx, testChunk, second[testChunk:2*testChunk]))
		must(w.Reuse(ex1[2])) // offset 3 chunks: the hole at 2 stays a hole
		if err := w.Reuse(ex1[0]); err == nil {
			t.Error("Reuse accepted a descending offset")
		}
		foreign := Extent{Offset: 4 * testChunk, Length: 100, ID: sha256ID([]byte("x"))}
		if err := w.Reuse(foreign); err == nil || !strings.Contains(err.Error(), "not the parent backup's chunk there") {
			t.Errorf("Reuse of a foreign chunk: %v", err)
		}
		must(w.Reuse(ex1[3]))
		m2, err := w.Commit(ctx)
		must(err)
		if m2.SHA256 != "" || m2.Digest != full.Digest || m2.Stats.BytesReused != 2*testChunk+100 {
			t.Errorf("sha256 %q, digest %s (full backup: %s), reused %d", m2.SHA256, m2.Digest, full.Digest, m2.Stats.BytesReused)
		}
		got, err := restore(r, m2)
		if err != nil || !bytes.Equal(got, second) {
			t.Fatalf("restore of the reusing backup: %v, equal %v", err, bytes.Equal(got, second))
		}
		loaded, err := r.LoadBackup(ctx, m2.ID)
		if err != nil || loaded.Digest != m2.Digest {
			t.Fatalf("LoadBackup: %v", err)
		}
	}
}

// TestStreamSHA256IsOptional: without StreamSHA256 the manifest has only
// the digest, which is the same as with it, and restores still check out.
func TestStreamSHA256IsOptional(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, NewMemory(), nil)
	img := image(3, "rtzr", 10)
	with := backup(t, r, img, BackupOptions{})
	w, _ := r.NewBackup(ctx, BackupOptions{Size: int64(len(img))})
	for off := 0; off < len(img); off += testChunk {
		if data := img[off:min(off+testChunk, len(img))]; !allZero(data) {
			if err := w.Write(ctx, int64(off), data); err != nil {
				t.Fatal(err)
			}
		}
	}
	without, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if with.SHA256 != sha(img) || without.SHA256 != "" || without.Digest != with.Digest {
		t.Fatalf("with: sha256 %q digest %s; without: sha256 %q digest %s", with.SHA256, with.Digest, without.SHA256, without.Digest)
	}
	if got, err := restore(r, without); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("restore: %v", err)
	}
}

// TestBlindUploads: a first backup stops asking S3 about every chunk after
// a run of misses, and a run of chunks already stored turns asking back on
// after at most probeEvery needless uploads.
func TestBlindUploads(t *testing.T) {
	be := &counting{Backend: NewMemory()}
	r := newRepo(t, be, nil)
	old := image(1, strings.Repeat("r", 100), 0)
	backup(t, r, old, BackupOptions{Parallel: 1})
	if heads := be.stats.Load(); heads > blindAfter+100/probeEvery+1 {
		t.Errorf("first backup of 100 new chunks asked %d times", heads)
	}
	// 100 new chunks, then the 100 old ones again, in another backup (no
	// parent, so only HEAD can find them).
	be.reset()
	img := append(image(2, strings.Repeat("r", 100), 0), old...)
	m := backup(t, r, img, BackupOptions{Parallel: 1})
	if m.Stats.ChunksNew < 100 || m.Stats.ChunksNew > 100+probeEvery {
		t.Errorf("uploaded %d chunks: want the 100 new ones and at most %d stored ones", m.Stats.ChunksNew, probeEvery)
	}
	if got, err := restore(r, m); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("restore: %v", err)
	}
}
