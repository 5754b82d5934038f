package objectstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testChunk = MinChunkSize // small chunks keep the tests fast

func init() {
	// Tests exercise retries; waiting for real backoff would only slow them.
	retryBase, retryMax = time.Millisecond, 5*time.Millisecond
}

func newRepo(t testing.TB, be Backend, key []byte) *Repository {
	t.Helper()
	r, err := Init(context.Background(), be, InitOptions{ChunkSize: testChunk, Key: key})
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	return r
}

// image builds test images chunk by chunk from a spec string, one letter
// per chunk: 'r' random, 't' compressible text, 'z' zeros, 'a'/'b' two
// fixed random chunks (for duplicates). tail, if > 0, shortens the last
// chunk to that many bytes.
func image(seed uint64, spec string, tail int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	fixed := map[byte][]byte{'a': randBytes(rand.New(rand.NewPCG(100, 1)), testChunk),
		'b': randBytes(rand.New(rand.NewPCG(200, 1)), testChunk)}
	var img []byte
	for _, c := range []byte(spec) {
		switch c {
		case 'r':
			img = append(img, randBytes(rng, testChunk)...)
		case 't':
			img = append(img, text(rng, testChunk)...)
		case 'z':
			img = append(img, make([]byte, testChunk)...)
		default:
			img = append(img, fixed[c]...)
		}
	}
	if tail > 0 {
		img = img[:len(img)-testChunk+tail]
	}
	return img
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func text(rng *rand.Rand, n int) []byte {
	words := []string{"ceph ", "rbd ", "snapshot ", "volume ", "backup ", "lifeboat ", "\n"}
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(words[rng.IntN(len(words))])
	}
	return []byte(b.String()[:n])
}

// backup writes img chunk by chunk, leaving all-zero chunks as gaps.
func backup(t testing.TB, r *Repository, img []byte, opt BackupOptions) *Manifest {
	t.Helper()
	ctx := context.Background()
	opt.Size = int64(len(img))
	opt.StreamSHA256 = true // the tests compare it with the image
	w, err := r.NewBackup(ctx, opt)
	if err != nil {
		t.Fatalf("NewBackup: %v", err)
	}
	defer w.Abort()
	for off := 0; off < len(img); off += testChunk {
		data := img[off:min(off+testChunk, len(img))]
		if allZero(data) {
			continue
		}
		if err := w.Write(ctx, int64(off), data); err != nil {
			t.Fatalf("Write at %d: %v", off, err)
		}
	}
	m, err := w.Commit(ctx)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return m
}

// restore reads a backup back with StreamAll.
func restore(r *Repository, m *Manifest) ([]byte, error) {
	var out bytes.Buffer
	err := r.StreamAll(context.Background(), m, 4, func(off int64, data []byte) error {
		if off != int64(out.Len()) {
			return fmt.Errorf("StreamAll jumped from %d to %d", out.Len(), off)
		}
		out.Write(data)
		return nil
	})
	return out.Bytes(), err
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// counting wraps a backend to count calls, track concurrency and inject
// failures.
type counting struct {
	Backend
	puts, dataPuts, stats, gets atomic.Int64
	dataAttempts                atomic.Int64

	mu        sync.Mutex
	inFlight  int
	maxFlight int
	delay     time.Duration // slows Put and Get to expose concurrency

	failPuts   atomic.Int64 // fail this many Puts with a transient error
	breakAfter atomic.Int64 // when > 0, data Puts fail for good after this many
}

var errTransient = errors.New("transient: connection reset by peer")

func (c *counting) enter() func() {
	c.mu.Lock()
	c.inFlight++
	c.maxFlight = max(c.maxFlight, c.inFlight)
	c.mu.Unlock()
	time.Sleep(c.delay)
	return func() { c.mu.Lock(); c.inFlight--; c.mu.Unlock() }
}

func (c *counting) Put(ctx context.Context, name string, data []byte) error {
	if strings.HasPrefix(name, locksPrefix) {
		return c.Backend.Put(ctx, name, data) // locks are neither counted nor failed
	}
	defer c.enter()()
	if c.failPuts.Add(-1) >= 0 {
		return errTransient
	}
	if strings.HasPrefix(name, "data/") {
		if n := c.breakAfter.Load(); n > 0 && c.dataAttempts.Add(1) > n {
			return fmt.Errorf("%w: simulated crash", ErrCredentials) // permanent: no retry
		}
		c.dataPuts.Add(1)
	}
	c.puts.Add(1)
	return c.Backend.Put(ctx, name, data)
}

func (c *counting) Get(ctx context.Context, name string) ([]byte, error) {
	if strings.HasPrefix(name, locksPrefix) {
		return c.Backend.Get(ctx, name)
	}
	defer c.enter()()
	c.gets.Add(1)
	return c.Backend.Get(ctx, name)
}

func (c *counting) Stat(ctx context.Context, name string) (int64, error) {
	if strings.HasPrefix(name, "data/") { // HEADs of chunks: the dedup checks
		c.stats.Add(1)
	}
	return c.Backend.Stat(ctx, name)
}

func (c *counting) reset() {
	c.puts.Store(0)
	c.dataPuts.Store(0)
	c.stats.Store(0)
	c.gets.Store(0)
	c.mu.Lock()
	c.maxFlight = 0
	c.mu.Unlock()
}

// objects returns the names of the stored objects under prefix.
func objects(t testing.TB, be Backend, prefix string) []string {
	t.Helper()
	var names []string
	if err := be.List(context.Background(), prefix, func(name string, _ int64) error {
		names = append(names, name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return names
}

// extentsOf reads m's extents, from its pages.
func extentsOf(t testing.TB, r *Repository, m *Manifest) []Extent {
	t.Helper()
	var out []Extent
	x := r.Extents(context.Background(), m)
	for e, ok := x.Next(); ok; e, ok = x.Next() {
		out = append(out, e)
	}
	if err := x.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// asV2 is m as a version 2 manifest, the extents inline, so that tests can
// tamper with the list (version 2 manifests stay readable).
func asV2(t testing.TB, r *Repository, m *Manifest) *Manifest {
	t.Helper()
	v2 := *m
	v2.Version, v2.Pages, v2.Extents = 2, nil, extentsOf(t, r, m)
	return &v2
}

// summaries lists the readable backups.
func summaries(ctx context.Context, r *Repository) ([]Summary, error) {
	cat, err := r.Backups(ctx, false)
	return cat.Backups, err
}
