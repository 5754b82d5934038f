//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/lifeboat-backup/lifeboat/objectstore"
)

// lockedPruneOut is what `repo prune -o json` says about object lock.
type lockedPruneOut struct {
	pruneOut
	BackupsLocked []struct {
		ID    string    `json:"id"`
		Until time.Time `json:"until"`
	} `json:"backupsLocked"`
	ObjectsLocked int64     `json:"objectsLocked"`
	LockedUntil   time.Time `json:"lockedUntil"`
	StaleLocks    []struct {
		Kind     string `json:"kind"`
		Released bool   `json:"released"`
	} `json:"staleLocksRemoved"`
}

func lockedPrune(t *testing.T, b *bucket) lockedPruneOut {
	t.Helper()
	r := runLifeboat(t, append([]string{"repo", "prune", "-o", "json"}, b.flags()...)...)
	if r.code != 0 {
		t.Fatalf("repo prune: exit %d: %s", r.code, r.stderr)
	}
	var out lockedPruneOut
	mustJSON(t, r.stdout, &out)
	return out
}

// noDeletePolicy is an agent's S3 policy without s3:DeleteObject: it may
// read, write and lock objects, never delete one.
const noDeletePolicy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
	"Action":["s3:GetObject","s3:PutObject","s3:ListBucket","s3:ListBucketVersions","s3:GetBucketLocation",
		"s3:GetBucketObjectLockConfiguration","s3:GetObjectRetention","s3:PutObjectRetention"],
	"Resource":["arn:aws:s3:::*","arn:aws:s3:::*/*"]}]}`

// TestObjectLock: a repository with Object Lock (governance, 30 s). An
// incremental exported with credentials that cannot delete extends the
// locks of the chunks it reuses; every chunk and page of every backup is
// locked at least as long as the backup; a locked backup forgotten (by a
// retention policy without delete permission, and by hand with full
// credentials) survives prunes until its date, then goes, and its own
// chunks go at theirs. `repo init --object-lock` refuses a bucket without
// Object Lock.
func TestObjectLock(t *testing.T) {
	s3Creds(t)
	ctx := context.Background()
	w := newWorld(t)

	plain := newBucket(t)
	if err := plain.s3.MakeBucket(ctx, plain.name, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	r := runLifeboat(t, append([]string{"repo", "init", "--object-lock", "governance:30s"}, plain.flags()...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "does not have Object Lock enabled") {
		t.Fatalf("repo init --object-lock on a bucket without: exit %d: %s", r.code, r.stderr)
	}

	b := newBucket(t)
	t.Cleanup(func() { removeLocked(t, b) }) // before newBucket's removal
	b.keyFile = filepath.Join(t.TempDir(), "repo.key")
	writeFile(t, b.keyFile, "object lock key\n")
	r = runLifeboat(t, append([]string{"repo", "init", "--s3-create-bucket", "--chunk-size", "64KiB",
		"--object-lock", "governance:30s"}, b.flags()...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "object lock governance:30s") {
		t.Fatalf("repo init --object-lock: exit %d: %s", r.code, r.stderr)
	}
	repo := openRepo(t, b)

	// A plain RBD image (--image): 2 MiB of random data in a 4 MiB image.
	img := w.spec("ol")
	data := make([]byte, 2*MiB)
	rand.Read(data)
	file := filepath.Join(t.TempDir(), "ol.img")
	writeFile(t, file, string(data))
	w.ceph("rbd", "import", "--no-progress", file, img)
	w.ceph("rbd", "resize", "--no-progress", "--size", "4M", img)
	w.ceph("rbd", "snap", "create", img+"@o1")
	e1 := w.export(b, "--image", img+"@o1", "--cluster", w.id)
	m1 := load(t, repo, e1.ID)

	// The first chunk changes. The parent's data is locked for 45 s: past
	// 15 s an incremental (30 s from its own start) needs longer locks on
	// what it reuses.
	w.ceph("rbd", "bench", "--io-type", "write", "--io-size", "64K", "--io-total", "64K", "--io-pattern", "seq", img)
	w.ceph("rbd", "snap", "create", img+"@o2")
	time.Sleep(time.Until(m1.Created.Add(16 * time.Second)))

	user, secret := minioUser(t, noDeletePolicy)
	agent := []string{"AWS_ACCESS_KEY_ID=" + user, "AWS_SECRET_ACCESS_KEY=" + secret}
	r = runEnv(t, agent, append([]string{"--kubeconfig", env.Get("KUBECONFIG"), "--driver-suffix", w.driver,
		"export", "-o", "json", "--image", img + "@o2", "--cluster", w.id}, b.flags()...)...)
	if r.code != 0 {
		t.Fatalf("export without delete permission: exit %d: %s", r.code, r.stderr)
	}
	var e2 struct {
		ID           string `json:"id"`
		LockChecks   int64  `json:"lockChecks"`
		LockExtended int64  `json:"lockExtended"`
	}
	mustJSON(t, r.stdout, &e2)
	m2 := load(t, repo, e2.ID)
	if m2.Parent != e1.ID || e2.LockChecks < m1.Stats.Chunks-1 || e2.LockExtended < m1.Stats.Chunks-1 {
		t.Fatalf("incremental: parent %q, %d locks read, %d extended; want %s and at least %d each",
			m2.Parent, e2.LockChecks, e2.LockExtended, e1.ID, m1.Stats.Chunks-1)
	}
	t.Logf("incremental of %d chunks: %d locks read, %d extended", m2.Stats.Chunks, e2.LockChecks, e2.LockExtended)
	locks, err := repo.Locks(ctx)
	if err != nil || len(locks) != 1 || !locks[0].Released {
		t.Fatalf("the delete-less export's lock: %+v, %v; want one, released", locks, err)
	}
	for _, m := range []*objectstore.Manifest{m1, m2} {
		checkLockedS3(t, b, repo, m)
	}

	// The agent's retention, without delete permission, marks.
	r = runEnv(t, agent, append([]string{"backups", "forget", "--keep-last", "1"}, b.flags()...)...)
	if r.code != 0 || !strings.Contains(r.stderr, e1.ID+" is locked until") || !strings.Contains(r.stderr, "marked forgotten") {
		t.Fatalf("forget --keep-last 1 without delete permission: exit %d: %s", r.code, r.stderr)
	}
	// Full credentials cannot delete it before its date either.
	r = runLifeboat(t, append([]string{"backups", "forget", e1.ID}, b.flags()...)...)
	if r.code != 0 || !strings.Contains(r.stderr, "locked until "+m1.LockedUntil.UTC().Format(time.RFC3339)) {
		t.Fatalf("forget of a locked backup: exit %d: %s", r.code, r.stderr)
	}
	p := lockedPrune(t, b)
	if len(p.BackupsLocked) != 1 || p.BackupsLocked[0].ID != e1.ID || p.ChunksDeleted != 0 || p.Backups != 2 {
		t.Fatalf("prune while the backup is locked: %+v", p)
	}
	// Forgotten is forgotten: no longer listed, though S3 keeps its
	// manifest until its date.
	if got := listBackups(t, b); len(got) != 1 || got[0].ID != e2.ID {
		t.Fatalf("backups after forgetting a locked one: %+v, want only %s", got, e2.ID)
	}
	if b.objects("backups/")["backups/"+e1.ID] == 0 {
		t.Fatalf("the locked backup %s's manifest is gone before its date", e1.ID)
	}

	time.Sleep(time.Until(m1.LockedUntil.Add(time.Second)))
	p = lockedPrune(t, b)
	// Left: the overwritten chunk and e1's extents page, locked 15 s more.
	if len(p.BackupsLocked) != 0 || p.Backups != 1 || p.ChunksDeleted != 0 || p.ObjectsLocked != 2 ||
		p.LockedUntil.Before(*m1.DataLockedUntil) {
		t.Fatalf("prune past the backup's date: %+v", p)
	}
	if got := listBackups(t, b); len(got) != 1 || got[0].ID != e2.ID {
		t.Fatalf("backups after its date: %+v, want only %s", got, e2.ID)
	}

	time.Sleep(time.Until(p.LockedUntil.Add(time.Second)))
	p = lockedPrune(t, b)
	if p.ChunksDeleted != 1 || p.PagesDeleted != 1 || p.ObjectsLocked != 0 {
		t.Fatalf("prune past the data's date: %+v", p)
	}
	if len(b.objects("locks/")) != 0 || len(b.objects("forgotten/")) != 0 {
		t.Errorf("locks or marks left: %v %v", b.objects("locks/"), b.objects("forgotten/"))
	}
	checkLockedS3(t, b, repo, m2)
	target := w.spec("ol-restored")
	r = runLifeboat(t, append([]string{"restore", e2.ID, "--to", target, "--ceph-conf", env.Get("CEPH_CONF")}, b.flags()...)...)
	if r.code != 0 {
		t.Fatalf("restore %s: exit %d: %s", e2.ID, r.code, r.stderr)
	}
	if got, want := rbdSHA256(t, env.Get("CEPH_CONF"), target), rbdSHA256(t, env.Get("CEPH_CONF"), img+"@o2"); got != want {
		t.Errorf("backup %s restores to sha256 %s, the snapshot is %s", e2.ID, got, want)
	}
}

func openRepo(t *testing.T, b *bucket) *objectstore.Repository {
	t.Helper()
	ctx := context.Background()
	be, err := objectstore.NewS3(ctx, objectstore.S3Config{Endpoint: env.Get("S3_ENDPOINT"), Bucket: b.name,
		AccessKey: env.Get("AWS_ACCESS_KEY_ID"), SecretKey: env.Get("AWS_SECRET_ACCESS_KEY")})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := objectstore.Open(ctx, be, []byte("object lock key"))
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

func load(t *testing.T, repo *objectstore.Repository, id string) *objectstore.Manifest {
	t.Helper()
	m, err := repo.LoadBackup(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if m.LockedUntil == nil || m.DataLockedUntil == nil || m.DataLockedUntil.Before(*m.LockedUntil) {
		t.Fatalf("backup %s: locked until %v, its data until %v", id, m.LockedUntil, m.DataLockedUntil)
	}
	return m
}

// checkLockedS3 fails unless, as MinIO says, m's manifest is locked until
// its LockedUntil and every chunk and page it needs at least as long.
func checkLockedS3(t *testing.T, b *bucket, repo *objectstore.Repository, m *objectstore.Manifest) {
	t.Helper()
	ctx := context.Background()
	names := []string{"backups/" + m.ID}
	x := repo.Extents(ctx, m)
	for e, ok := x.Next(); ok; e, ok = x.Next() {
		names = append(names, "data/"+e.ID.String()[:2]+"/"+e.ID.String())
	}
	if err := x.Err(); err != nil {
		t.Fatal(err)
	}
	for _, p := range m.Pages {
		names = append(names, "pages/"+p.ID.String()[:2]+"/"+p.ID.String())
	}
	for _, name := range names {
		info, err := b.s3.StatObject(ctx, b.name, name, minio.StatObjectOptions{})
		if err != nil {
			t.Fatalf("%s of backup %s: %v", name, m.ID, err)
		}
		until, err := time.Parse(time.RFC3339, info.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date"))
		if err != nil || until.Before(*m.LockedUntil) || info.Metadata.Get("X-Amz-Object-Lock-Mode") != "GOVERNANCE" {
			t.Errorf("%s of backup %s (locked until %s): %s until %v (%v)", name, m.ID, m.LockedUntil,
				info.Metadata.Get("X-Amz-Object-Lock-Mode"), until, err)
		}
	}
	t.Logf("backup %s: %d objects locked until %s or later", m.ID, len(names), m.LockedUntil.Format(time.RFC3339))
}

// removeLocked empties a governance-locked bucket, every version, with the
// root user's bypass, so that newBucket's cleanup can remove it.
func removeLocked(t *testing.T, b *bucket) {
	ctx := context.Background()
	for o := range b.s3.ListObjects(ctx, b.name, minio.ListObjectsOptions{Recursive: true, WithVersions: true}) {
		if o.Err != nil {
			return
		}
		if err := b.s3.RemoveObject(ctx, b.name, o.Key, minio.RemoveObjectOptions{VersionID: o.VersionID, GovernanceBypass: true}); err != nil {
			t.Logf("removing %s version %s: %v", o.Key, o.VersionID, err)
		}
	}
}
