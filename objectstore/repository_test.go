package objectstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestInitOpen(t *testing.T) {
	ctx := context.Background()
	for _, key := range [][]byte{nil, []byte("correct horse battery staple\n")} {
		be := NewMemory()
		r := newRepo(t, be, key)
		r2, err := Open(ctx, be, key)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if r2.Config().ID != r.Config().ID || r2.Config().ChunkSize != testChunk {
			t.Fatalf("reopened config %+v, want %+v", r2.Config(), r.Config())
		}
		// The reopened repository reads what the first one wrote.
		img := image(1, "rtzr", 100)
		m := backup(t, r, img, BackupOptions{})
		m2, err := r2.LoadBackup(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := restore(r2, m2); err != nil || sha(got) != sha(img) {
			t.Fatalf("restore through reopened repository: %v", err)
		}
	}
}

func TestInitRefusesExisting(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	newRepo(t, be, nil)
	if _, err := Init(ctx, be, InitOptions{}); !errors.Is(err, ErrRepositoryExists) {
		t.Fatalf("second Init: %v, want ErrRepositoryExists", err)
	}
	// Leftover data without a config is refused too: a new master key
	// would orphan it.
	be2 := NewMemory()
	be2.Put(ctx, "data/00/00ff", []byte("x"))
	if _, err := Init(ctx, be2, InitOptions{}); !errors.Is(err, ErrRepositoryExists) {
		t.Fatalf("Init over leftover data: %v, want ErrRepositoryExists", err)
	}
}

func TestInitChunkSize(t *testing.T) {
	ctx := context.Background()
	for _, size := range []int{1000, 32 << 10, 3 << 20, 128 << 20} {
		if _, err := Init(ctx, NewMemory(), InitOptions{ChunkSize: size}); err == nil {
			t.Errorf("chunk size %d accepted", size)
		}
	}
	r, err := Init(ctx, NewMemory(), InitOptions{})
	if err != nil || r.Config().ChunkSize != DefaultChunkSize {
		t.Fatalf("default chunk size: %v %+v", err, r.Config())
	}
	if _, err := Init(ctx, NewMemory(), InitOptions{Key: []byte{}}); err == nil {
		t.Error("empty key accepted")
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	plain, enc := NewMemory(), NewMemory()
	newRepo(t, plain, nil)
	newRepo(t, enc, []byte("right"))

	cases := []struct {
		name string
		be   Backend
		key  []byte
		want error
	}{
		{"no repository", NewMemory(), nil, ErrNoRepository},
		{"wrong key", enc, []byte("wrong"), ErrWrongKey},
		{"missing key", enc, nil, ErrKeyRequired},
		{"key for unencrypted", plain, []byte("right"), ErrNotEncrypted},
	}
	for _, c := range cases {
		_, err := Open(ctx, c.be, c.key)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		} else if !strings.Contains(err.Error(), "memory") {
			t.Errorf("%s: error %q does not say where", c.name, err)
		}
	}
}

func TestOpenIncompatible(t *testing.T) {
	ctx := context.Background()
	edit := func(f func(map[string]any)) Backend {
		be := NewMemory()
		newRepo(t, be, nil)
		data, _ := be.Get(ctx, "config")
		var cfg map[string]any
		json.Unmarshal(data, &cfg)
		f(cfg)
		data, _ = json.Marshal(cfg)
		be.Put(ctx, "config", data)
		return be
	}
	cases := map[string]Backend{
		"newer version":  edit(func(c map[string]any) { c["version"] = FormatVersion + 1 }),
		"other format":   edit(func(c map[string]any) { c["format"] = "restic" }),
		"unknown hash":   edit(func(c map[string]any) { c["hash"] = "blake3" }),
		"bad chunk size": edit(func(c map[string]any) { c["chunk_size"] = 12345 }),
	}
	garbage := NewMemory()
	garbage.Put(ctx, "config", []byte{0x9e, 0x00, 0x42}) // e.g. restic's encrypted config
	cases["not json"] = garbage
	for name, be := range cases {
		_, err := Open(ctx, be, nil)
		if !errors.Is(err, ErrIncompatible) {
			t.Errorf("%s: got %v, want ErrIncompatible", name, err)
		}
	}
	_, err := Open(ctx, cases["newer version"], nil)
	if !strings.Contains(err.Error(), "upgrade lifeboat") {
		t.Errorf("newer version error %q does not say what to do", err)
	}
}

func TestConfigHidesNothingSecret(t *testing.T) {
	be := NewMemory()
	key := []byte("user-key-marker")
	newRepo(t, be, key)
	data, _ := be.Get(context.Background(), "config")
	if strings.Contains(string(data), string(key)) {
		t.Fatal("config contains the user key")
	}
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil || cfg.Key == nil || len(cfg.Key.Wrapped) != nonceSize+masterKeySize+16 {
		t.Fatalf("config key section: %v %+v", err, cfg.Key)
	}
}

// lateConfig is a Memory where another `repo init` writes its config
// right after this one checked the location was empty.
type lateConfig struct {
	*Memory
	listed bool
}

func (l *lateConfig) List(ctx context.Context, prefix string, fn func(string, int64) error) error {
	if prefix == configName && !l.listed {
		l.listed = true
		defer l.Memory.Put(ctx, configName, []byte("the other init's config"))
	}
	return l.Memory.List(ctx, prefix, fn)
}

func TestInitRace(t *testing.T) {
	ctx := context.Background()
	be := &lateConfig{Memory: NewMemory()}
	if _, err := Init(ctx, be, InitOptions{Key: []byte("k")}); !errors.Is(err, ErrRepositoryExists) {
		t.Fatalf("Init that lost the race: %v, want ErrRepositoryExists", err)
	}
	if got, _ := be.Get(ctx, configName); string(got) != "the other init's config" {
		t.Fatalf("the winner's config was overwritten: %q", got)
	}
}

func TestMemoryCreate(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	if err := be.Create(ctx, "x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := be.Create(ctx, "x", []byte("2")); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create: %v, want ErrExists", err)
	}
	if got, _ := be.Get(ctx, "x"); string(got) != "1" {
		t.Fatalf("Create replaced the object: %q", got)
	}
}

// ChangeKey: afterwards the new key opens the repository and the old one
// does not; the backups read as before, and a writer that opened it with
// the old key goes on working.
func TestChangeKey(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	r := newRepo(t, be, []byte("old"))
	m := backup(t, r, image(1, "rt", 0), BackupOptions{})
	before := objects(t, be, "data/")
	if err := r.ChangeKey(ctx, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, be, []byte("old")); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("open with the old key: %v", err)
	}
	r2, err := Open(ctx, be, []byte("new"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Verify(ctx, m, 0); err != nil {
		t.Fatalf("the backup under the new key: %v", err)
	}
	backup(t, r, image(2, "r", 0), BackupOptions{}) // the old handle still writes
	if after := objects(t, be, "data/"); len(after) != len(before)+1 {
		t.Fatalf("%d chunks after the change, want the %d before and one more", len(after), len(before))
	}
	if err := r2.ChangeKey(ctx, nil); err == nil {
		t.Fatal("an empty new key was accepted")
	}
	plain := newRepo(t, NewMemory(), nil)
	if err := plain.ChangeKey(ctx, []byte("k")); !errors.Is(err, ErrNotEncrypted) {
		t.Fatalf("key change of an unencrypted repository: %v", err)
	}
}

// configPut fails the PUTs of the config, after storing it if landed:
// a request that timed out on its way back.
type configPut struct {
	Backend
	landed bool
}

func (b *configPut) Put(ctx context.Context, name string, data []byte) error {
	if name != configName {
		return b.Backend.Put(ctx, name, data)
	}
	if b.landed {
		_ = b.Backend.Put(ctx, name, data)
	}
	return fmt.Errorf("%w: timed out", ErrCorrupt) // not retried
}

// A key change whose PUT failed says which key opens the repository.
func TestChangeKeyFailureSaysWhichKey(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		landed bool
		says   string
		opens  string
	}{{false, "still opens with the old key", "old"}, {true, "opens with the new key now", "new"}} {
		mem := NewMemory()
		newRepo(t, mem, []byte("old"))
		be := &configPut{Backend: mem, landed: c.landed}
		r, err := Open(ctx, be, []byte("old"))
		if err != nil {
			t.Fatal(err)
		}
		err = r.ChangeKey(ctx, []byte("new"))
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("landed=%v: %v, want it to say %q", c.landed, err, c.says)
		}
		if _, err := Open(ctx, be, []byte(c.opens)); err != nil {
			t.Errorf("landed=%v: the %s key: %v", c.landed, c.opens, err)
		}
	}
}
