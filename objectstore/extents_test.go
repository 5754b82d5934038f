package objectstore

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

// smallPages makes pages of n extents for one test.
func smallPages(t *testing.T, n int) {
	old := ExtentsPerPage
	ExtentsPerPage = n
	t.Cleanup(func() { ExtentsPerPage = old })
}

// TestPages: a backup spread over many pages restores exactly, has the
// digest of the same backup in one page, and an incremental beside it
// (reusing and rewriting chunks across page boundaries) does too.
func TestPages(t *testing.T) {
	ctx := context.Background()
	smallPages(t, 3)
	for _, key := range [][]byte{nil, []byte("k")} {
		r := newRepo(t, NewMemory(), key)
		img := image(5, "rrzrtrrzzrtrrrr", 77)
		ExtentsPerPage = 100
		one := backup(t, r, img, BackupOptions{})
		ExtentsPerPage = 3
		m := backup(t, r, img, BackupOptions{})
		if len(one.Pages) != 1 || len(m.Pages) != 4 || m.Stats.Chunks != 12 {
			t.Fatalf("%d and %d pages, %d chunks; want 1, 4 and 12", len(one.Pages), len(m.Pages), m.Stats.Chunks)
		}
		if m.Digest != one.Digest {
			t.Errorf("digest over 4 pages %s, over 1 page %s", m.Digest, one.Digest)
		}
		if got, err := restore(r, m); err != nil || !bytes.Equal(got, img) {
			t.Fatalf("restore: %v, equal %v", err, bytes.Equal(got, img))
		}

		// Rewrite chunks 4 and 10, reuse the rest unread.
		next := bytes.Clone(img)
		copy(next[4*testChunk:], image(6, "r", 0))
		copy(next[10*testChunk:], image(7, "t", 0))
		w, err := r.NewBackup(ctx, BackupOptions{Size: int64(len(next)), Parent: m})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range extentsOf(t, r, m) {
			if i := e.Offset / testChunk; i == 4 || i == 10 {
				err = w.Write(ctx, e.Offset, next[e.Offset:e.Offset+e.Length])
			} else {
				err = w.Reuse(e)
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(w.page) >= ExtentsPerPage {
				t.Fatalf("the writer holds %d extents, pages have %d", len(w.page), ExtentsPerPage)
			}
		}
		m2, err := w.Commit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := restore(r, m2); err != nil || !bytes.Equal(got, next) {
			t.Fatalf("restore of the incremental: %v, equal %v", err, bytes.Equal(got, next))
		}
		if m2.Stats.ChunksNew != 2 || m2.Stats.BytesReused != m.Stats.BytesRead-2*testChunk {
			t.Errorf("incremental stats %+v", m2.Stats)
		}
	}
}

// TestParentChunksAreNotUploaded: rewriting the parent's chunks at the
// same offsets, as a hashing incremental does, uploads none of them.
func TestParentChunksAreNotUploaded(t *testing.T) {
	smallPages(t, 2)
	be := &counting{Backend: NewMemory()}
	r := newRepo(t, be, nil)
	img := image(8, "rrtrzr", 0)
	m := backup(t, r, img, BackupOptions{})
	copy(img[2*testChunk:], image(9, "t", 0))
	be.reset()
	m2 := backup(t, r, img, BackupOptions{Parent: m})
	if m2.Stats.ChunksNew != 1 || m2.Stats.Chunks != 5 {
		t.Fatalf("stats %+v: want 1 of 5 chunks new", m2.Stats)
	}
	if got, err := restore(r, m2); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("restore: %v", err)
	}
}

// TestDamagedPage: a damaged, missing or misplaced page fails the stream
// before its first byte, naming the page.
func TestDamagedPage(t *testing.T) {
	ctx := context.Background()
	smallPages(t, 2)
	for _, key := range [][]byte{nil, []byte("k")} {
		be := NewMemory()
		r := newRepo(t, be, key)
		m := backup(t, r, image(3, "rrrrrr", 0), BackupOptions{})
		victim := m.Pages[2]
		obj, _ := be.Get(ctx, pageName(victim.ID))

		calls := 0
		count := func(int64, []byte) error { calls++; return nil }
		var pe *PageError
		flipped := bytes.Clone(obj)
		flipped[len(flipped)/2] ^= 1
		be.Put(ctx, pageName(victim.ID), flipped)
		err := r.Stream(ctx, m, 2, count)
		if !errors.As(err, &pe) || pe.Page.ID != victim.ID || !errors.Is(err, ErrCorrupt) || calls != 0 {
			t.Fatalf("key %q, damaged page: %v after %d calls", key, err, calls)
		}
		if !strings.Contains(err.Error(), victim.ID.String()) {
			t.Errorf("%q does not name the page", err)
		}
		be.Delete(ctx, pageName(victim.ID))
		if err := r.Stream(ctx, m, 2, count); !errors.As(err, &pe) || !errors.Is(err, ErrNotFound) || calls != 0 {
			t.Fatalf("key %q, missing page: %v after %d calls", key, err, calls)
		}
		be.Put(ctx, pageName(victim.ID), obj)

		// Pages listed out of order, or a page listed where another was.
		swapped := *m
		swapped.Pages = []Page{m.Pages[1], m.Pages[0], m.Pages[2]}
		if err := r.Verify(ctx, &swapped, 2); !errors.Is(err, ErrCorrupt) {
			t.Errorf("swapped pages: %v", err)
		}
		moved := *m
		moved.Pages = []Page{m.Pages[0], m.Pages[1], m.Pages[1]}
		moved.Pages[2].Offset, moved.Pages[2].End = m.Pages[2].Offset, m.Pages[2].End
		if err := r.Verify(ctx, &moved, 2); !errors.Is(err, ErrCorrupt) {
			t.Errorf("a page listed twice: %v", err)
		}
		if err := r.Verify(ctx, m, 2); err != nil {
			t.Fatalf("restored page: %v", err)
		}
	}
}

// TestWriterMemoryIsBounded: the writer's heap does not grow with the
// number of chunks. 40,000 chunks (2.5 GiB at 64 KiB) held as a list would
// take over 2 MB; the writer holds one page.
func TestWriterMemoryIsBounded(t *testing.T) {
	smallPages(t, 256)
	ctx := context.Background()
	r := newRepo(t, discard{}, nil) // stores nothing, holds nothing
	const n = 40000
	data := image(1, "r", 0) // the same chunk everywhere: one upload
	w, err := r.NewBackup(ctx, BackupOptions{Size: n * testChunk})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	heap := func() uint64 {
		runtime.GC()
		var s runtime.MemStats
		runtime.ReadMemStats(&s)
		return s.HeapAlloc
	}
	var base, peak uint64
	for i := range n {
		if err := w.Write(ctx, int64(i)*testChunk, data); err != nil {
			t.Fatal(err)
		}
		switch {
		case i == 1000:
			base = heap()
		case i > 1000 && i%5000 == 0:
			peak = max(peak, heap())
		}
	}
	m, err := w.Commit(ctx)
	if err != nil || m.Stats.Chunks != n || len(m.Pages) != (n+255)/256 {
		t.Fatalf("Commit: %v, %d chunks in %d pages", err, m.Stats.Chunks, len(m.Pages))
	}
	if peak > base+512<<10 {
		t.Errorf("heap grew from %d to %d bytes over %d chunks", base, peak, n)
	}
}

// TestStreamMemoryIsBounded: loading and reading a backup of 40,000
// chunks holds one page of extents at a time, never the list (which,
// loaded whole, would take about 2 MB).
func TestStreamMemoryIsBounded(t *testing.T) {
	smallPages(t, 256)
	ctx := context.Background()
	r := newRepo(t, NewMemory(), nil)
	const n = 40000
	data := image(1, "r", 0)
	w, err := r.NewBackup(ctx, BackupOptions{Size: n * testChunk})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := w.Write(ctx, int64(i)*testChunk, data); err != nil {
			t.Fatal(err)
		}
	}
	committed, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := committed.ID
	committed, w = nil, nil
	heap := func() uint64 {
		runtime.GC()
		var s runtime.MemStats
		runtime.ReadMemStats(&s)
		return s.HeapAlloc
	}
	base := heap()
	m, err := r.LoadBackup(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	peak, calls := heap(), 0
	err = r.Stream(ctx, m, 4, func(int64, []byte) error {
		if calls++; calls%5000 == 0 {
			peak = max(peak, heap())
		}
		return nil
	})
	if err != nil || calls != n {
		t.Fatalf("Stream: %v after %d of %d chunks", err, calls, n)
	}
	// Bounded whatever n: a page of extents, and the prefetch window's
	// parallel+2 pairs of buffers (a chunk object and a plaintext).
	if bufs := uint64(6 * (r.maxEncoded(testChunk) + testChunk)); peak > base+1<<20+bufs {
		t.Errorf("heap grew from %d to %d bytes reading %d chunks", base, peak, n)
	}
}

// TestReadsVersion2: a stored version 2 manifest, its extents inline, still
// loads, streams and serves as the parent of a version 3 incremental.
func TestReadsVersion2(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, NewMemory(), []byte("k"))
	img := image(4, "rtzr", 9)
	v2 := asV2(t, r, backup(t, r, img, BackupOptions{}))
	v2.ID = newBackupID(v2.Created.Add(-time.Second))
	if err := r.saveManifest(ctx, v2); err != nil {
		t.Fatal(err)
	}
	m, err := r.LoadBackup(ctx, v2.ID)
	if err != nil || m.Version != 2 || len(m.Pages) != 0 || len(m.Extents) != 3 {
		t.Fatalf("LoadBackup: %v, %+v", err, m)
	}
	if got, err := restore(r, m); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("restore of a version 2 backup: %v", err)
	}
	next := bytes.Clone(img)
	copy(next[testChunk:], image(5, "t", 0))
	m3 := backup(t, r, next, BackupOptions{Parent: m})
	if m3.Version != ManifestVersion || m3.Stats.ChunksNew != 1 {
		t.Errorf("incremental on a version 2 parent: version %d, %d chunks new", m3.Version, m3.Stats.ChunksNew)
	}
	if got, err := restore(r, m3); err != nil || !bytes.Equal(got, next) {
		t.Fatalf("restore of the incremental: %v", err)
	}
}
