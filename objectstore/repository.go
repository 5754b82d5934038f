package objectstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// FormatVersion is the repository format this package writes and the
// newest it reads. See docs/format.md.
const FormatVersion = 2

// formatLocked is the version of a repository with object lock; one
// without stays at version 1, readable by older builds.
const formatLocked = 2

// formatName marks the config object as ours, so a bucket holding some
// other tool's "config" is not mistaken for a repository.
const formatName = "lifeboat-repository"

// Chunk size limits. Sizes are powers of two so chunks line up with RBD
// objects (also powers of two) and with any chunk grid of another size.
const (
	DefaultChunkSize = 1 << 20
	MinChunkSize     = 64 << 10
	MaxChunkSize     = 64 << 20
)

// Config is the repository config object, stored as plain JSON at
// "config" so that Open can tell what it needs before it has a key.
type Config struct {
	Format      string     `json:"format"` // always "lifeboat-repository"
	Version     int        `json:"version"`
	ID          string     `json:"id"` // 64 hex digits, random
	Created     time.Time  `json:"created"`
	ChunkSize   int        `json:"chunk_size"`
	Hash        string     `json:"hash"`        // "sha256" or "hmac-sha256"
	Compression string     `json:"compression"` // "zstd"
	Encryption  string     `json:"encryption"`  // "none" or "aes-256-gcm"
	Key         *KeyConfig `json:"key,omitempty"`
	// ObjectLock (format version 2) locks every backup object: see
	// objectlock.go. Version 2 keeps a lifeboat that does not know it
	// from writing unlocked objects.
	ObjectLock *ObjectLock `json:"object_lock,omitempty"`
}

// Repository is an open repository. Its methods are safe for concurrent use.
type Repository struct {
	be       Backend
	cfg      Config
	keys     *keys         // nil when not encrypted
	retryFor time.Duration // see SetRetryFor
	health   health
}

// InitOptions configure a new repository.
type InitOptions struct {
	// ChunkSize is a power of two between MinChunkSize and MaxChunkSize;
	// 0 means DefaultChunkSize. It is fixed for the repository's life:
	// chunks of different sizes would never deduplicate.
	ChunkSize int
	// Key enables encryption when non-nil. Any bytes will do (a file's or
	// a Secret's content, used exactly as given); losing it loses every
	// backup in the repository.
	Key []byte
	// ObjectLock, when set, locks every backup object (S3 Object Lock);
	// the backend must be a Retainer on a bucket with object lock on.
	ObjectLock *ObjectLock
}

const configName = "config"

// Init creates a repository on be. It refuses to touch a location that
// already holds a repository or its data.
func Init(ctx context.Context, be Backend, opt InitOptions) (*Repository, error) {
	size := opt.ChunkSize
	if size == 0 {
		size = DefaultChunkSize
	}
	if !validChunkSize(size) {
		return nil, fmt.Errorf("chunk size %d: want a power of two between %d and %d", size, MinChunkSize, MaxChunkSize)
	}
	if opt.Key != nil && len(opt.Key) == 0 {
		return nil, errors.New("the encryption key is empty")
	}
	if err := checkObjectLock(ctx, be, opt.ObjectLock); err != nil {
		return nil, err
	}
	if err := checkEmpty(ctx, be); err != nil {
		return nil, err
	}
	r := &Repository{be: be, cfg: Config{
		Format: formatName, Version: 1, ID: randomHex(32),
		Created: time.Now().UTC(), ChunkSize: size,
		Hash: "sha256", Compression: "zstd", Encryption: "none",
		ObjectLock: opt.ObjectLock,
	}}
	if opt.ObjectLock != nil {
		r.cfg.Version = formatLocked
	}
	if opt.Key != nil {
		kc, k, err := newMasterKey(opt.Key, r.cfg.ID)
		if err != nil {
			return nil, err
		}
		r.cfg.Hash, r.cfg.Encryption, r.cfg.Key, r.keys = "hmac-sha256", "aes-256-gcm", kc, k
	}
	data, err := json.MarshalIndent(r.cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := r.create(ctx, configName, data); err != nil {
		if errors.Is(err, ErrExists) {
			return nil, fmt.Errorf("%w at %s: another `repo init` wrote its config just now; open it instead",
				ErrRepositoryExists, be)
		}
		return nil, fmt.Errorf("writing repository config to %s: %w", be, err)
	}
	// A conditional PUT cannot carry a lock: the config is locked after.
	if until := r.retainUntil(configName, r.cfg.Created); !until.IsZero() {
		rt := r.retainer()
		if err := r.retry(ctx, func() error { return rt.Retain(ctx, configName, r.cfg.ObjectLock.Mode, until) }); err != nil {
			return nil, fmt.Errorf("locking the repository config at %s: %w", be, err)
		}
	}
	return r, nil
}

// checkObjectLock refuses an object-lock policy on a backend or bucket
// that cannot keep it.
func checkObjectLock(ctx context.Context, be Backend, p *ObjectLock) error {
	if p == nil {
		return nil
	}
	if err := p.check(); err != nil {
		return err
	}
	rt, ok := be.(Retainer)
	if !ok {
		return fmt.Errorf("%s cannot lock objects: object lock needs an S3 bucket with Object Lock enabled", be)
	}
	on, err := rt.ObjectLockEnabled(ctx)
	if err != nil {
		return fmt.Errorf("checking Object Lock on %s: %w", be, err)
	}
	if !on {
		return fmt.Errorf("the bucket of %s does not have Object Lock enabled: S3 turns it on only when a bucket "+
			"is created (aws s3api create-bucket --object-lock-enabled-for-bucket, mc mb --with-lock); "+
			"create such a bucket, or init without --object-lock", be)
	}
	return nil
}

// checkEmpty refuses a location with a config, chunks or manifests: a new
// master key would make existing data unreadable.
func checkEmpty(ctx context.Context, be Backend) error {
	stop := errors.New("stop")
	for _, prefix := range []string{configName, "data/", "backups/"} {
		found := ""
		err := be.List(ctx, prefix, func(name string, _ int64) error {
			found = name
			return stop
		})
		if err != nil && err != stop {
			return fmt.Errorf("checking %s before init: %w", be, err)
		}
		if found != "" {
			return fmt.Errorf("%w at %s (found %q): open it instead, or choose another bucket or prefix",
				ErrRepositoryExists, be, found)
		}
	}
	return nil
}

// Open reads the repository config and checks that this build can use it
// with the given key (nil or empty for an unencrypted repository).
func Open(ctx context.Context, be Backend, key []byte) (*Repository, error) {
	if len(key) == 0 {
		key = nil
	}
	r := &Repository{be: be}
	data, err := r.get(ctx, configName)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w at %s: create one first (lifeboat repo init)", ErrNoRepository, be)
	}
	if err != nil {
		return nil, fmt.Errorf("reading repository config from %s: %w", be, err)
	}
	if err := json.Unmarshal(data, &r.cfg); err != nil || r.cfg.Format != formatName {
		return nil, fmt.Errorf("%w: the config object at %s is not a lifeboat repository config", ErrIncompatible, be)
	}
	if err := r.cfg.check(); err != nil {
		return nil, fmt.Errorf("%w: repository at %s: %v", ErrIncompatible, be, err)
	}
	if _, ok := be.(Retainer); r.cfg.ObjectLock != nil && !ok {
		return nil, fmt.Errorf("%w: repository at %s locks its objects (S3 Object Lock) and this backend cannot", ErrIncompatible, be)
	}
	switch {
	case r.cfg.Key == nil && key != nil:
		return nil, fmt.Errorf("%w (%s): drop the key, or use an encrypted repository", ErrNotEncrypted, be)
	case r.cfg.Key != nil && key == nil:
		return nil, fmt.Errorf("%w (%s): pass the key the repository was created with", ErrKeyRequired, be)
	case r.cfg.Key != nil:
		if r.keys, err = r.cfg.Key.unwrap(key, r.cfg.ID); err != nil {
			return nil, fmt.Errorf("%w for repository at %s: it opens with another key (the one it was created with, or last changed to)", err, be)
		}
	}
	return r, nil
}

// ChangeKey makes newKey the repository's key: the master key is wrapped
// anew under it and the config rewritten, one PUT (atomic: the config
// holds the old key or the new one, never neither). Chunks, ids and
// manifests are under the master key and do not change, and processes
// that opened the repository with the old key go on working; the old key
// no longer opens it. Two changes at once: the last one wins.
func (r *Repository) ChangeKey(ctx context.Context, newKey []byte) error {
	if r.keys == nil {
		return fmt.Errorf("%w (%s): it has no key to change", ErrNotEncrypted, r.be)
	}
	if len(newKey) == 0 {
		return errors.New("the new encryption key is empty")
	}
	kc, err := wrap(r.keys.master, newKey, r.cfg.ID)
	if err != nil {
		return err
	}
	old, cfg := r.cfg.Key, r.cfg
	cfg.Key = kc
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := r.put(ctx, configName, data); err != nil {
		return fmt.Errorf("writing repository config to %s: %w; %s", r.be, err, r.whichKey(ctx, old, kc))
	}
	r.cfg = cfg
	// Read it back as the next process will: the new key must open it.
	if _, err := Open(ctx, r.be, newKey); err != nil {
		return fmt.Errorf("reading the repository at %s back with the new key: %w; %s", r.be, err, r.whichKey(ctx, old, kc))
	}
	return nil
}

// whichKey says, after a key change that failed, which key the config
// now holds: a request that timed out may still have landed.
func (r *Repository) whichKey(ctx context.Context, old, next *KeyConfig) string {
	data, err := r.get(ctx, configName)
	var cfg Config
	if err == nil {
		err = json.Unmarshal(data, &cfg)
	}
	switch {
	case err != nil:
		return "cannot tell which key opens it now (" + err.Error() + "): keep both keys"
	case cfg.Key != nil && bytes.Equal(cfg.Key.Wrapped, next.Wrapped):
		return "it opens with the new key now: keep that one"
	case cfg.Key != nil && bytes.Equal(cfg.Key.Wrapped, old.Wrapped):
		return "it still opens with the old key"
	}
	return "its config holds neither key (another key change at the same time?): keep both keys and try each"
}

// check refuses anything this build would misread.
func (c *Config) check() error {
	if c.Version > FormatVersion {
		return fmt.Errorf("format version %d, this lifeboat reads up to version %d: upgrade lifeboat", c.Version, FormatVersion)
	}
	if c.Version < 1 {
		return fmt.Errorf("bad format version %d", c.Version)
	}
	if !validChunkSize(c.ChunkSize) {
		return fmt.Errorf("bad chunk size %d", c.ChunkSize)
	}
	if c.ObjectLock != nil {
		if err := c.ObjectLock.check(); err != nil {
			return err
		}
	}
	encrypted := c.Key != nil
	want := [2]string{"sha256", "none"}
	if encrypted {
		want = [2]string{"hmac-sha256", "aes-256-gcm"}
	}
	if c.Hash != want[0] || c.Encryption != want[1] || c.Compression != "zstd" {
		return fmt.Errorf("unsupported algorithms hash=%q encryption=%q compression=%q", c.Hash, c.Encryption, c.Compression)
	}
	return nil
}

// Config returns the repository config (the wrapped key included, which
// is safe to show: it is useless without the user key).
func (r *Repository) Config() Config { return r.cfg }

func validChunkSize(s int) bool {
	return s >= MinChunkSize && s <= MaxChunkSize && s&(s-1) == 0
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
