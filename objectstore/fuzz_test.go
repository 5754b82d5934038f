package objectstore

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Fuzz targets for every decoder of what comes from S3: the config, a
// manifest (versions 1 to 3), an extents page, a lock and a chunk (raw,
// zstd, encrypted). Anyone who can write to the bucket can plant any of
// these; each must come back as an error, never a panic or an allocation
// beyond the object's bounds. `make fuzz` runs each for a bounded time.
//
// The seeds under testdata/fuzz/<target> are real objects, written by
// TestWriteFuzzCorpus from two fixed repositories (testdata/fuzzrepo: one
// plain, one encrypted with key fuzzKey), so that a seed decodes as far
// as a real object does.

const fuzzKey = "fuzz"

// fuzzRepos are the fixed repositories, opened once: unwrapping the
// encrypted one's key (a deliberately slow KDF) per input would make
// fuzzing crawl.
var fuzzRepos = map[bool]*Repository{}

// fuzzRepo is the fixed plain or encrypted repository on a fresh
// in-memory backend holding only its config.
func fuzzRepo(t testing.TB, encrypted bool) (*Repository, *Memory) {
	t.Helper()
	open, ok := fuzzRepos[encrypted]
	if !ok {
		name, key := "plain", []byte(nil)
		if encrypted {
			name, key = "encrypted", []byte(fuzzKey)
		}
		cfg, err := os.ReadFile(filepath.Join("testdata", "fuzzrepo", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		be := NewMemory()
		be.Put(context.Background(), configName, cfg)
		if open, err = Open(context.Background(), be, key); err != nil {
			t.Fatal(err)
		}
		fuzzRepos[encrypted] = open
	}
	be := NewMemory()
	cfg, _ := open.be.Get(context.Background(), configName)
	be.Put(context.Background(), configName, cfg)
	// Memory never has outages; a short window keeps a stray retry short.
	return &Repository{be: be, cfg: open.cfg, keys: open.keys, retryFor: time.Millisecond}, be
}

func FuzzConfig(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, withKey bool) {
		be := NewMemory()
		be.Put(context.Background(), configName, data)
		var key []byte
		if withKey {
			key = []byte(fuzzKey)
		}
		_, _ = Open(context.Background(), be, key)
	})
}

func FuzzManifest(f *testing.F) {
	f.Fuzz(func(t *testing.T, id string, obj []byte, encrypted bool) {
		r, be := fuzzRepo(t, encrypted)
		ctx := context.Background()
		if id == "" || strings.ContainsAny(id, "/\\") || strings.Contains(id, "..") {
			id = "x"
		}
		be.Put(ctx, manifestName(id), obj)
		if m, err := r.LoadBackup(ctx, id); err == nil {
			_ = r.checkExtents(ctx, m) // its pages are missing: an error, not a panic
		}
		_, _ = r.Backups(ctx, true)
	})
}

func FuzzPage(f *testing.F) {
	f.Fuzz(func(t *testing.T, id []byte, obj []byte, encrypted bool, count int, off, end int64) {
		r, be := fuzzRepo(t, encrypted)
		ctx := context.Background()
		var p Page
		copy(p.ID[:], id)
		p.Offset, p.End, p.Count = off, end, count
		be.Put(ctx, pageName(p.ID), obj)
		m := &Manifest{Summary: Summary{Version: 3, ID: "x", Size: end, ChunkSize: r.cfg.ChunkSize,
			Stats: Stats{Chunks: int64(count)}}, Pages: []Page{p}}
		if m.check(r.cfg.ChunkSize) != nil {
			_, _ = r.loadPage(ctx, p)
			return
		}
		_ = r.checkExtents(ctx, m)
	})
}

func FuzzLock(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		r, be := fuzzRepo(t, false)
		be.Put(context.Background(), locksPrefix+"x", data)
		locks, err := r.Locks(context.Background())
		if err == nil {
			_ = staleLocks(locks)
		}
	})
}

func FuzzChunk(f *testing.F) {
	f.Fuzz(func(t *testing.T, id []byte, length int64, obj []byte, encrypted bool) {
		r, be := fuzzRepo(t, encrypted)
		e := Extent{Length: length}
		copy(e.ID[:], id)
		if e.Length <= 0 || e.Length > int64(r.cfg.ChunkSize) {
			e.Length = int64(r.cfg.ChunkSize) // what an extent that passed its checks holds
		}
		be.Put(context.Background(), chunkName(e.ID), obj)
		_, _ = r.ReadChunk(context.Background(), e)
	})
}

// TestWriteFuzzCorpus writes the seed corpus from real objects (and the
// fixed repositories, if missing). It runs only with
// LIFEBOAT_WRITE_FUZZ_CORPUS=1; the result is checked in.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("LIFEBOAT_WRITE_FUZZ_CORPUS") != "1" {
		t.Skip("writes testdata/fuzz: set LIFEBOAT_WRITE_FUZZ_CORPUS=1 to rewrite the seed corpus")
	}
	ctx := context.Background()
	dir := filepath.Join("testdata", "fuzzrepo")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string][]byte{"plain": nil, "encrypted": []byte(fuzzKey)} {
		p := filepath.Join(dir, name+".json")
		if _, err := os.Stat(p); err == nil {
			continue
		}
		be := NewMemory()
		Init(ctx, be, InitOptions{ChunkSize: testChunk, Key: key})
		cfg, _ := be.Get(ctx, configName)
		if err := os.WriteFile(p, cfg, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	seed := func(target, name string, args ...any) {
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, a := range args {
			switch v := a.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(v)))
			case string:
				fmt.Fprintf(&b, "string(%s)\n", strconv.Quote(v))
			case bool:
				fmt.Fprintf(&b, "bool(%t)\n", v)
			case int:
				fmt.Fprintf(&b, "int(%d)\n", v)
			case int64:
				fmt.Fprintf(&b, "int64(%d)\n", v)
			}
		}
		d := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	defer func(n int) { ExtentsPerPage = n }(ExtentsPerPage)
	ExtentsPerPage = 2
	for _, encrypted := range []bool{false, true} {
		kind := map[bool]string{false: "plain", true: "encrypted"}[encrypted]
		r, be := fuzzRepo(t, encrypted)
		cfg, _ := be.Get(ctx, configName)
		seed("FuzzConfig", kind, cfg, encrypted)
		// Random (stored raw), text (zstd) and repeated chunks; a tail.
		m := backup(t, r, image(1, "rtatz", 1000), BackupOptions{Source: map[string]string{"image": "a"}})
		obj, _ := be.Get(ctx, manifestName(m.ID))
		seed("FuzzManifest", kind+"-v3", m.ID, obj, encrypted)
		for v := 1; v <= 2; v++ {
			old := asV2(t, r, m)
			old.Version, old.ID = v, fmt.Sprintf("%s-v%d", m.ID[:len(m.ID)-9], v)
			if v == 1 {
				old.Digest = ""
			}
			if err := r.saveManifest(ctx, old); err != nil {
				t.Fatal(err)
			}
			obj, _ := be.Get(ctx, manifestName(old.ID))
			seed("FuzzManifest", fmt.Sprintf("%s-v%d", kind, v), old.ID, obj, encrypted)
		}
		for i, p := range m.Pages {
			obj, _ := be.Get(ctx, pageName(p.ID))
			seed("FuzzPage", fmt.Sprintf("%s-%d", kind, i), p.ID[:], obj, encrypted, p.Count, p.Offset, p.End)
		}
		for i, e := range extentsOf(t, r, m) {
			obj, _ := be.Get(ctx, chunkName(e.ID))
			name := fmt.Sprintf("%s-%d", kind, i)
			if !encrypted {
				name += map[byte]string{headerRaw: "-raw", headerZstd: "-zstd"}[obj[0]]
			}
			seed("FuzzChunk", name, e.ID[:], e.Length, obj, encrypted)
		}
		if !encrypted {
			l := Lock{Name: locksPrefix + "x", Kind: LockExport, Host: "h", PID: 1, Backup: m.ID,
				Created: time.Unix(1e9, 0).UTC(), Refreshed: time.Unix(1e9, 0).UTC()}
			data, _ := json.Marshal(l)
			seed("FuzzLock", "export", data)
		}
	}
}
