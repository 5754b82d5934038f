package objectstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests need the MinIO of the test stack, which writes its address
// and credentials to $LIFEBOAT_STACK_DIR/env (default /tmp/lifeboat-stack).

func stackEnv(t *testing.T) map[string]string {
	t.Helper()
	dir := os.Getenv("LIFEBOAT_STACK_DIR")
	if dir == "" {
		dir = "/tmp/lifeboat-stack"
	}
	data, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no test stack (%v): CI must run it", err)
		}
		t.Skipf("no test stack (%v): run make stack-up", err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "export ")
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = strings.Trim(v, `"'`)
		}
	}
	return env
}

// s3Config returns a config for a fresh, uniquely named bucket that the
// test removes afterwards.
func s3Config(t *testing.T) S3Config {
	env := stackEnv(t)
	endpoint := env["S3_ENDPOINT"]
	if !strings.Contains(endpoint, "://") {
		endpoint = "http://" + endpoint
	}
	cfg := S3Config{
		Endpoint: endpoint, Region: env["AWS_REGION"], PathStyle: true,
		AccessKey: env["AWS_ACCESS_KEY_ID"], SecretKey: env["AWS_SECRET_ACCESS_KEY"],
		Bucket: fmt.Sprintf("lifeboat-test-%s-%s", strings.ToLower(t.Name()[4:min(len(t.Name()), 20)]), randomHex(4)),
	}
	t.Cleanup(func() { removeBucket(t, cfg) })
	return cfg
}

func removeBucket(t *testing.T, cfg S3Config) {
	ctx := context.Background()
	cfg.CreateBucket = false
	s, err := NewS3(ctx, cfg)
	if err != nil {
		return // never created
	}
	s.prefix = ""
	s.List(ctx, "", func(name string, _ int64) error { return s.Delete(ctx, name) })
	if err := s.client.RemoveBucket(ctx, cfg.Bucket); err != nil {
		t.Logf("removing bucket %s: %v", cfg.Bucket, err)
	}
}

func TestS3RoundTrip(t *testing.T) {
	ctx := context.Background()
	cfg := s3Config(t)
	cfg.CreateBucket, cfg.Prefix = true, "/cluster-a/lifeboat/"
	be, err := NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("s3 test key")
	r := newRepo(t, be, key)
	img := image(11, "rtzzrab", 1234)
	m1 := backup(t, r, img, BackupOptions{Source: map[string]string{"image": "csi-vol-1"}})
	changed := bytes.Clone(img)
	copy(changed[testChunk:], image(12, "t", 0))
	m2 := backup(t, r, changed, BackupOptions{Source: map[string]string{"image": "csi-vol-1"}, Parent: m1})
	if m2.Stats.ChunksNew != 1 {
		t.Errorf("incremental uploaded %d chunks, want 1", m2.Stats.ChunksNew)
	}

	// Everything lives under the prefix.
	cfg.Prefix = ""
	root, err := NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range objects(t, root, "") {
		if !strings.HasPrefix(name, "cluster-a/lifeboat/") {
			t.Errorf("object %s outside the prefix", name)
		}
	}

	// A fresh connection reads both backups back.
	cfg.Prefix = "cluster-a/lifeboat"
	be2, err := NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Open(ctx, be2, key)
	if err != nil {
		t.Fatal(err)
	}
	latest, err := r2.FindLatest(ctx, func(s *Summary) bool { return s.Source["image"] == "csi-vol-1" })
	if err != nil || latest.ID != m2.ID {
		t.Fatalf("FindLatest: %v %v", err, latest)
	}
	for _, c := range []struct {
		m   *Manifest
		img []byte
	}{{m1, img}, {latest, changed}} {
		got, err := restore(r2, c.m)
		if err != nil || !bytes.Equal(got, c.img) {
			t.Fatalf("restore %s: %v", c.m.ID, err)
		}
	}
	// A conditional create never replaces an object (two `repo init`s).
	if err := be2.Create(ctx, configName, []byte("x")); !errors.Is(err, ErrExists) {
		t.Errorf("Create over the config: %v, want ErrExists", err)
	}
	if err := be2.Create(ctx, "created-once", []byte("1")); err != nil {
		t.Errorf("Create: %v", err)
	}
	if got, err := be2.Get(ctx, "created-once"); err != nil || string(got) != "1" {
		t.Errorf("created object: %q, %v", got, err)
	}
	// An object over the reader's limit is refused before it is read.
	if _, err := be2.GetInto(ctx, "created-once", nil, 0); !errors.Is(err, ErrCorrupt) {
		t.Errorf("GetInto over the limit: %v, want ErrCorrupt", err)
	}
	if _, err := be2.Get(ctx, "data/00/nothing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing object: %v", err)
	}
	if _, err := Open(ctx, be2, []byte("wrong")); !errors.Is(err, ErrWrongKey) {
		t.Errorf("wrong key: %v", err)
	}
}

func TestS3WrongCredentials(t *testing.T) {
	cfg := s3Config(t)
	cfg.SecretKey = "not-the-secret-" + randomHex(4)
	_, err := NewS3(context.Background(), cfg)
	if !errors.Is(err, ErrCredentials) {
		t.Fatalf("got %v, want ErrCredentials", err)
	}
	msg := err.Error()
	for _, want := range []string{cfg.Bucket, cfg.Endpoint, "AWS_ACCESS_KEY_ID"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, cfg.SecretKey) || strings.Contains(cfg.String(), cfg.SecretKey) ||
		strings.Contains(fmt.Sprintf("%+v %#v", cfg, cfg), cfg.SecretKey) {
		t.Error("the secret key shows up in a message")
	}
}

func TestS3Unreachable(t *testing.T) {
	cfg := S3Config{Endpoint: "http://127.0.0.1:1", Bucket: "lifeboat-unreachable", AccessKey: "a", SecretKey: "b"}
	start := time.Now()
	_, err := NewS3(context.Background(), cfg)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("got %v, want ErrUnreachable naming the endpoint", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestS3Hanging(t *testing.T) {
	// A server that takes connections and never answers is bounded by
	// the timeout (the kernel accepts into the backlog without Accept).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := S3Config{Endpoint: "http://" + l.Addr().String(), Bucket: "lifeboat-hang", Timeout: 500 * time.Millisecond}
	start := time.Now()
	_, err = NewS3(context.Background(), cfg)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("got %v, want ErrUnreachable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestS3BadEndpoint(t *testing.T) {
	for _, ep := range []string{"127.0.0.1:9000", "ftp://host", "http://host/bucket", ""} {
		if _, err := NewS3(context.Background(), S3Config{Endpoint: ep, Bucket: "b"}); err == nil {
			t.Errorf("endpoint %q accepted", ep)
		}
	}
}

func TestS3MissingBucket(t *testing.T) {
	ctx := context.Background()
	cfg := s3Config(t)
	_, err := NewS3(ctx, cfg)
	if !errors.Is(err, ErrNoBucket) || !strings.Contains(err.Error(), cfg.Bucket) {
		t.Fatalf("got %v, want ErrNoBucket naming the bucket", err)
	}
	cfg.CreateBucket = true
	s, err := NewS3(ctx, cfg)
	if err != nil {
		t.Fatalf("with CreateBucket: %v", err)
	}
	if ok, err := s.client.BucketExists(ctx, cfg.Bucket); !ok || err != nil {
		t.Fatalf("bucket not created: %v", err)
	}
	// Creating an existing bucket is fine.
	if _, err := NewS3(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// TestS3Prune forgets and prunes on MinIO, under a prefix: deletes run
// while the listing pages on (more than one page of 1000 chunks), a
// second repository in the same bucket is untouched, and an export in
// progress keeps the prune out.
func TestS3Prune(t *testing.T) {
	ctx := context.Background()
	cfg := s3Config(t)
	cfg.CreateBucket = true
	open := func(prefix string) *Repository {
		c := cfg
		c.Prefix = prefix
		be, err := NewS3(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		return newRepo(t, be, nil)
	}
	r, neighbour := open("a"), open("b")
	spec := strings.Repeat("r", 1100)
	gone := backup(t, r, image(21, spec, 0), BackupOptions{Parallel: 16})
	kept := image(22, "rtr", 0)
	m := backup(t, r, kept, BackupOptions{})
	theirs := backup(t, neighbour, image(21, "rr", 0), BackupOptions{})

	w, err := r.NewBackup(ctx, BackupOptions{Size: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(ctx, PruneOptions{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("prune during an export: %v", err)
	}
	w.Abort()

	if err := r.Forget(ctx, gone.ID, false); err != nil {
		t.Fatal(err)
	}
	st, err := r.Prune(ctx, PruneOptions{Parallel: 16})
	if err != nil || st.ChunksDeleted != 1100 || st.ChunksKept != 3 || st.Backups != 1 {
		t.Fatalf("prune: %+v, %v", st, err)
	}
	if got, err := restore(r, m); err != nil || !bytes.Equal(got, kept) {
		t.Fatalf("restore after prune: %v", err)
	}
	if got, err := restore(neighbour, theirs); err != nil || !bytes.Equal(got, image(21, "rr", 0)) {
		t.Fatalf("the other repository's backup after prune: %v", err)
	}
	if names := objects(t, r.be, "data/"); len(names) != 3 {
		t.Fatalf("%d chunks left, want 3", len(names))
	}
}
