package objectstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCorruptChunkIsNamed(t *testing.T) {
	ctx := context.Background()
	for _, key := range [][]byte{nil, []byte("k")} {
		be := NewMemory()
		r := newRepo(t, be, key)
		m := backup(t, r, image(1, "rztr", 0), BackupOptions{})
		victim := extentsOf(t, r, m)[1] // the 't' chunk at offset 2 chunks
		name := chunkName(victim.ID)
		obj, _ := be.Get(ctx, name)
		obj[len(obj)/2] ^= 1
		be.Put(ctx, name, obj)

		err := r.Verify(ctx, m, 2)
		var ce *ChunkError
		if !errors.As(err, &ce) || ce.ID != victim.ID || ce.Offset != 2*testChunk || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("key %q: got %v, want a corrupt-chunk error for %s at %d", key, err, victim.ID, victim.Offset)
		}
		if !strings.Contains(err.Error(), victim.ID.String()) || !strings.Contains(err.Error(), "offset 131072") {
			t.Errorf("message %q does not name the chunk and offset", err)
		}
	}
}

func TestSwappedChunkIsCaught(t *testing.T) {
	// An intact object stored under another chunk's name: the content
	// check catches it even when it decodes fine (unencrypted repository).
	ctx := context.Background()
	be := NewMemory()
	r := newRepo(t, be, nil)
	m := backup(t, r, image(1, "rr", 0), BackupOptions{})
	ex := extentsOf(t, r, m)
	other, _ := be.Get(ctx, chunkName(ex[0].ID))
	be.Put(ctx, chunkName(ex[1].ID), other)
	var ce *ChunkError
	if err := r.Verify(ctx, m, 2); !errors.As(err, &ce) || ce.Offset != testChunk || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v", err)
	}
}

func TestOversizeObjectIsNotRead(t *testing.T) {
	// A chunk object larger than any encoding of its chunk (a damaged or
	// planted object) fails before it is read into memory, named; and so
	// does an oversize manifest.
	ctx := context.Background()
	for _, key := range [][]byte{nil, []byte("k")} {
		be := NewMemory()
		r := newRepo(t, be, key)
		m := backup(t, r, image(1, "rr", 0), BackupOptions{})
		ex := extentsOf(t, r, m)
		name := chunkName(ex[1].ID)
		obj, _ := be.Get(ctx, name)
		limit := r.maxEncoded(ex[1].Length)
		if int64(len(obj)) != limit {
			t.Errorf("key %q: a random chunk is stored in %d bytes, maxEncoded says %d", key, len(obj), limit)
		}
		be.Put(ctx, name, append(obj, 0))
		var ce *ChunkError
		err := r.Verify(ctx, m, 2)
		if !errors.As(err, &ce) || ce.ID != ex[1].ID || !errors.Is(err, ErrCorrupt) ||
			!strings.Contains(err.Error(), fmt.Sprintf("is %d bytes, larger than the %d", limit+1, limit)) {
			t.Fatalf("key %q: got %v, want the oversize chunk named", key, err)
		}
	}
	be := NewMemory()
	r := newRepo(t, be, nil)
	m := backup(t, r, image(1, "r", 0), BackupOptions{})
	be.Put(ctx, "backups/"+m.ID, make([]byte, maxObject+1))
	if _, err := r.LoadBackup(ctx, m.ID); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("oversize manifest: %v, want ErrCorrupt", err)
	}
}

func TestMissingChunk(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	r := newRepo(t, be, nil)
	m := backup(t, r, image(1, "rrr", 0), BackupOptions{})
	ex := extentsOf(t, r, m)
	be.Delete(ctx, chunkName(ex[2].ID))
	var ce *ChunkError
	err := r.Verify(ctx, m, 2)
	if !errors.As(err, &ce) || ce.ID != ex[2].ID || !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v", err)
	}
}

func TestStreamChecksumMismatch(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, NewMemory(), nil)
	m := asV2(t, r, backup(t, r, image(1, "rtr", 0), BackupOptions{}))

	// Every chunk is intact but the manifest maps them wrongly.
	swapped := *m
	swapped.Extents = []Extent{m.Extents[0], m.Extents[2], m.Extents[1]}
	for i := range swapped.Extents {
		swapped.Extents[i].Offset = m.Extents[i].Offset
	}
	if err := r.Verify(ctx, &swapped, 2); !errors.Is(err, ErrChecksumMismatch) {
		t.Fatalf("swapped extents: %v", err)
	}
	// A hole where data was.
	holed := *m
	holed.Extents = m.Extents[:2]
	if err := r.Verify(ctx, &holed, 2); !errors.Is(err, ErrChecksumMismatch) {
		t.Fatalf("dropped extent: %v", err)
	}
	// A stale or wrong digest.
	bad := *m
	bad.Digest = sha([]byte("something else"))
	err := r.Verify(ctx, &bad, 2)
	if !errors.Is(err, ErrChecksumMismatch) || !strings.Contains(err.Error(), bad.Digest) {
		t.Fatalf("wrong digest: %v", err)
	}
	// A version 1 manifest has only the whole-stream SHA-256.
	v1 := *m
	v1.Version, v1.Digest = 1, ""
	if err := r.Verify(ctx, &v1, 2); err != nil {
		t.Fatalf("version 1 manifest: %v", err)
	}
	v1.SHA256 = sha([]byte("something else"))
	err = r.Verify(ctx, &v1, 2)
	if !errors.Is(err, ErrChecksumMismatch) || !strings.Contains(err.Error(), v1.SHA256) {
		t.Fatalf("version 1, wrong checksum: %v", err)
	}
	// A version 2 manifest must have a digest.
	v2 := *m
	v2.Digest = ""
	if err := r.Verify(ctx, &v2, 2); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("version 2 without digest: %v", err)
	}
}

func TestStreamRejectsBadManifests(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, NewMemory(), nil)
	m := asV2(t, r, backup(t, r, image(1, "rr", 0), BackupOptions{}))
	overlap := *m
	overlap.Extents = []Extent{m.Extents[1], m.Extents[0]}
	if err := r.Verify(ctx, &overlap, 2); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("unsorted extents: %v", err)
	}
	foreign := *m
	foreign.Repository = "elsewhere"
	if err := r.Verify(ctx, &foreign, 2); err == nil {
		t.Fatal("manifest from another repository accepted")
	}
}

func TestStreamStopsOnCallbackError(t *testing.T) {
	r := newRepo(t, NewMemory(), nil)
	m := backup(t, r, image(1, "rrrrrrrr", 0), BackupOptions{})
	stop := errors.New("disk full")
	calls := 0
	err := r.Stream(context.Background(), m, 2, func(int64, []byte) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 3 {
		t.Fatalf("got %v after %d calls", err, calls)
	}
}

func TestStreamBoundsPrefetch(t *testing.T) {
	be := &counting{Backend: NewMemory()}
	r := newRepo(t, be, nil)
	m := backup(t, r, image(1, strings.Repeat("r", 20), 0), BackupOptions{})
	be.delay = 2 * time.Millisecond
	be.reset()
	slow := func(int64, []byte) error { time.Sleep(time.Millisecond); return nil }
	if err := r.Stream(context.Background(), m, 3, slow); err != nil {
		t.Fatal(err)
	}
	// parallel chunks at once, and maybe a page of extents; each page is
	// read twice (checked whole before the first byte, then streamed).
	if be.maxFlight > 4 || be.gets.Load() != 20+2*int64(len(m.Pages)) {
		t.Fatalf("%d fetches in flight (want ≤ 4), %d gets", be.maxFlight, be.gets.Load())
	}
}

func TestBackupsAndFindLatest(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, NewMemory(), []byte("k"))
	src := func(img string) map[string]string { return map[string]string{"pool": "rbd", "image": img} }
	a1 := backup(t, r, image(1, "r", 0), BackupOptions{Source: src("a")})
	time.Sleep(2 * time.Millisecond) // ids and times are to the millisecond
	b1 := backup(t, r, image(2, "r", 0), BackupOptions{Source: src("b")})
	time.Sleep(2 * time.Millisecond)
	a2 := backup(t, r, image(3, "rr", 0), BackupOptions{Source: src("a"), Parent: a1, Meta: map[string]string{"order": "22"}})

	// Objects of another tool sharing the bucket root are not backups.
	r.be.Put(ctx, "backups/velero-daily/velero-backup.json", []byte("{}"))
	list, err := summaries(ctx, r)
	if err != nil || len(list) != 3 || list[0].ID != a1.ID || list[1].ID != b1.ID || list[2].ID != a2.ID {
		t.Fatalf("Backups: %v %+v", err, list)
	}
	if list[2].Parent != a1.ID || list[2].Meta["order"] != "22" || list[2].SHA256 != a2.SHA256 {
		t.Fatalf("summary %+v", list[2])
	}
	latest, err := r.FindLatest(ctx, func(s *Summary) bool { return s.Source["image"] == "a" })
	if err != nil || latest == nil || latest.ID != a2.ID || len(extentsOf(t, r, latest)) != 2 {
		t.Fatalf("FindLatest a: %v %+v", err, latest)
	}
	none, err := r.FindLatest(ctx, func(s *Summary) bool { return s.Source["image"] == "c" })
	if err != nil || none != nil {
		t.Fatalf("FindLatest c: %v %+v", err, none)
	}
	for _, id := range []string{"20990101T000000.000Z-00000000", "../config", ""} {
		if _, err := r.LoadBackup(ctx, id); !errors.Is(err, ErrBackupNotFound) {
			t.Errorf("LoadBackup(%q): %v", id, err)
		}
	}
}

func TestManifestTampering(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	r := newRepo(t, be, []byte("k"))
	m1 := backup(t, r, image(1, "r", 0), BackupOptions{})
	m2 := backup(t, r, image(2, "r", 0), BackupOptions{})
	// A valid manifest copied under another backup's name fails
	// authentication (the name is bound into the ciphertext).
	obj, _ := be.Get(ctx, manifestName(m1.ID))
	be.Put(ctx, manifestName(m2.ID), obj)
	if _, err := r.LoadBackup(ctx, m2.ID); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("moved manifest: %v", err)
	}
	cat, err := r.Backups(ctx, false)
	if err != nil || len(cat.Backups) != 1 || cat.Backups[0].ID != m1.ID || len(cat.Damaged) != 1 || cat.Damaged[0].ID != m2.ID {
		t.Fatalf("Backups with a bad manifest: %v %+v", err, cat)
	}
}

// TestHostileZstdChunk: in a plain repository anyone with write access to
// the bucket can plant an object. A zstd chunk that is empty, truncated,
// or decodes to more (or fewer) bytes than its extent must fail as a
// corrupt chunk, never panic or allocate past the chunk size.
func TestHostileZstdChunk(t *testing.T) {
	ctx := context.Background()
	big := compress(nil, make([]byte, 4*testChunk)) // a valid frame, 4× too long
	short := compress(nil, []byte("short"))
	for name, payload := range map[string][]byte{
		"empty": {}, "garbage": []byte("not zstd"), "too long": big, "too short": short,
		"truncated": compress(nil, image(1, "t", 0))[:100],
	} {
		be := NewMemory()
		r := newRepo(t, be, nil)
		m := backup(t, r, image(1, "t", 0), BackupOptions{})
		victim := extentsOf(t, r, m)[0]
		be.Put(ctx, chunkName(victim.ID), append([]byte{headerZstd}, payload...))
		err := r.Verify(ctx, m, 1)
		var ce *ChunkError
		if !errors.As(err, &ce) || ce.ID != victim.ID || !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want a corrupt-chunk error for %s", name, err, victim.ID)
		}
	}
}

// TestStreamReusesBuffers: streaming recycles its chunk buffers, so the
// bytes allocated do not grow with the backup (each new buffer is memory
// the kernel must fault in, and garbage that raises the peak RSS).
func TestStreamReusesBuffers(t *testing.T) {
	ctx := context.Background()
	for _, key := range [][]byte{nil, []byte("k")} {
		r := newRepo(t, NewMemory(), key)
		m := backup(t, r, image(1, strings.Repeat("rt", 100), 0), BackupOptions{}) // 200 chunks, half compressed
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if err := r.Stream(ctx, m, 4, func(int64, []byte) error { return nil }); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		// At most the window's buffers (parallel+2 objects and plaintexts)
		// and some change; without reuse this is 300 chunks' worth.
		if got := after.TotalAlloc - before.TotalAlloc; got > 40*testChunk {
			t.Errorf("key %q: streaming 200 chunks allocated %d bytes (%d chunks' worth)", key, got, got/testChunk)
		}
	}
}

// slowMemory is a Memory whose chunk reads take a random while, and fail
// for the names in fail; it counts them and those running.
type slowMemory struct {
	*Memory
	fail map[string]bool

	mu                         sync.Mutex
	reads, running, maxRunning int
}

func (s *slowMemory) Get(ctx context.Context, name string) ([]byte, error) {
	return s.GetInto(ctx, name, nil, -1)
}

func (s *slowMemory) GetInto(ctx context.Context, name string, buf []byte, limit int64) ([]byte, error) {
	if !strings.HasPrefix(name, "data/") {
		return s.Memory.GetInto(ctx, name, buf, limit)
	}
	s.mu.Lock()
	s.reads++
	s.running++
	s.maxRunning = max(s.maxRunning, s.running)
	s.mu.Unlock()
	defer func() { s.mu.Lock(); s.running--; s.mu.Unlock() }()
	time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond) // finish out of order
	if s.fail[name] {
		return nil, fmt.Errorf("%s: %w (simulated)", name, ErrNotFound)
	}
	return s.Memory.GetInto(ctx, name, buf, limit)
}

func (s *slowMemory) counts() (reads, running int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads, s.running
}

// streamFixture is a backup of n random chunks on a slowMemory, and the
// image it holds.
func streamFixture(t *testing.T, n int) (*Repository, *slowMemory, *Manifest, []byte) {
	be := &slowMemory{Memory: NewMemory(), fail: map[string]bool{}}
	r := newRepo(t, be, nil)
	img := image(1, strings.Repeat("r", n), 0)
	return r, be, backup(t, r, img, BackupOptions{}), img
}

// intact checks that data is the image at off even after a while: no
// fetch wrote into its buffer while fn had it.
func intact(img []byte, off int64, data []byte) error {
	time.Sleep(50 * time.Microsecond)
	if !bytes.Equal(data, img[off:off+int64(len(data))]) {
		return fmt.Errorf("chunk at %d overwritten before fn was done with it", off)
	}
	return nil
}

// goroutinesLeft is how many goroutines more than before still run after a
// grace period (one that has signalled its end may still be exiting).
func goroutinesLeft(before int) int {
	for range 200 {
		if runtime.NumGoroutine() <= before {
			return 0
		}
		time.Sleep(time.Millisecond)
	}
	return runtime.NumGoroutine() - before
}

// TestStreamPrefetch: chunks come in order and intact, at most parallel
// fetched at once, and nothing is left running.
func TestStreamPrefetch(t *testing.T) {
	r, be, m, img := streamFixture(t, 200)
	before := runtime.NumGoroutine()
	next := int64(0)
	err := r.Stream(context.Background(), m, 4, func(off int64, data []byte) error {
		if off != next {
			return fmt.Errorf("chunk at %d, want %d", off, next)
		}
		next += int64(len(data))
		return intact(img, off, data)
	})
	if err != nil || next != int64(len(img)) {
		t.Fatalf("%v after %d bytes of %d", err, next, len(img))
	}
	if be.maxRunning > 4 {
		t.Errorf("%d fetches at once, want ≤ 4", be.maxRunning)
	}
	if n := goroutinesLeft(before); n > 0 {
		t.Errorf("%d goroutines left behind", n)
	}
}

// TestStreamFirstErrorStops: the first failed chunk's error is returned
// after fn saw every chunk before it and none after; fetches stop within
// the window, none runs after the return, and nothing is left running.
func TestStreamFirstErrorStops(t *testing.T) {
	r, be, m, img := streamFixture(t, 400)
	ex := extentsOf(t, r, m)
	be.fail[chunkName(ex[100].ID)], be.fail[chunkName(ex[150].ID)] = true, true
	before := runtime.NumGoroutine()
	calls := 0
	err := r.Stream(context.Background(), m, 4, func(off int64, data []byte) error {
		calls++
		return intact(img, off, data)
	})
	var ce *ChunkError
	if !errors.As(err, &ce) || ce.ID != ex[100].ID || calls != 100 {
		t.Fatalf("got %v after %d chunks, want chunk 100's error after 100", err, calls)
	}
	reads, running := be.counts()
	if reads > 101+4+2 || running != 0 {
		t.Errorf("%d chunks fetched for a failure at chunk 100 (want ≤ 107), %d still being fetched", reads, running)
	}
	if n := goroutinesLeft(before); n > 0 {
		t.Errorf("%d goroutines left behind", n)
	}
	time.Sleep(5 * time.Millisecond)
	if after, _ := be.counts(); after != reads {
		t.Errorf("%d fetches after Stream returned", after-reads)
	}
}

// TestStreamCancel: cancelling the context mid-way returns its error
// soon, fn is not called again, and nothing is left running.
func TestStreamCancel(t *testing.T) {
	r, be, m, img := streamFixture(t, 400)
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	err := r.Stream(ctx, m, 4, func(off int64, data []byte) error {
		if calls++; calls == 50 {
			cancel()
		}
		return intact(img, off, data)
	})
	if !errors.Is(err, context.Canceled) || calls > 50+4+2 {
		t.Errorf("got %v after %d chunks, want context.Canceled soon after 50", err, calls)
	}
	if reads, running := be.counts(); reads > 50+4+2 || running != 0 {
		t.Errorf("%d chunks fetched for a cancel at chunk 50, %d still being fetched", reads, running)
	}
	if n := goroutinesLeft(before); n > 0 {
		t.Errorf("%d goroutines left behind", n)
	}
}

// TestStreamPanic: a panic in fn panics the caller (conc re-raises it),
// and fn is not called again.
func TestStreamPanic(t *testing.T) {
	r, _, m, _ := streamFixture(t, 100)
	before := runtime.NumGoroutine()
	calls := 0
	var recovered any
	func() {
		defer func() { recovered = recover() }()
		r.Stream(context.Background(), m, 4, func(int64, []byte) error {
			if calls++; calls == 30 {
				panic("fn 30")
			}
			return nil
		})
	}()
	if recovered == nil || !strings.Contains(fmt.Sprint(recovered), "fn 30") || calls != 30 {
		t.Errorf("recovered %v after %d calls, want the panic of call 30 and no more", recovered, calls)
	}
	if n := goroutinesLeft(before); n > 0 {
		t.Errorf("%d goroutines left behind", n)
	}
}
