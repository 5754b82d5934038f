//go:build e2e

package e2e

// Acceptance tests of export, restore and cat: backups that survive the
// loss of their Ceph cluster, incremental exports, crash safety, clear
// errors on bad input, and encryption at rest.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/lifeboat-backup/lifeboat/test/sim"
)

const KiB = 1 << 10

// TestExportRestoreAcrossClusters is the headline: snapshots exported from
// a cluster A restore bit-exactly into a brand-new cluster B after A and
// all its data are destroyed, with lifeboat restore and with Ceph's own
// rbd import / import-diff fed by lifeboat cat.
func TestExportRestoreAcrossClusters(t *testing.T) {
	s3Creds(t)
	ctx := context.Background()
	// B is a separate, fresh cluster whenever it starts: starting both now
	// saves B's ~15 s. Nothing touches B before A is gone.
	a, b := newCluster(t, 23300, 26789), newCluster(t, 24300, 27789)
	a.startAsync()
	b.startAsync()
	a.wait(t)

	w, secret := newWorldOn(t, a)
	repo := newRepo(t, "4MiB", "")

	type kase struct {
		name   string
		export []string // target and flags
		spec   string   // the snapshot in A
		size   int64
		id     string // backup id
		sha    string // rbd export of the snapshot in A
	}
	var cases []*kase

	// 1. A volume with random (incompressible), text (compressible),
	// never-written and zero-filled regions, and a small unaligned write.
	regions1 := []sim.Region{
		{Off: 0, Len: 8 * MiB, Kind: sim.Random},
		{Off: 16 * MiB, Len: 10 * MiB, Kind: sim.Text},
		{Off: 26 * MiB, Len: 4 * MiB, Kind: sim.Zero},
		{Off: 30*MiB + 12345, Len: 100000, Kind: sim.Random},
		{Off: 44 * MiB, Len: 4 * MiB, Kind: sim.Text},
	}
	v1 := w.volumeWith("data", 48*MiB, 1, regions1...)
	s1 := w.snapshot(v1, "nightly-1")
	cases = append(cases, &kase{name: "volume", export: []string{s1.ContentName}, spec: w.snapSpec(s1), size: 48 * MiB})

	// 2. A snapshot of a clone of a clone: the volume restored from s1
	// (csi-vol clone of the csi-snap clone of v1), written to, snapshotted.
	v2, err := w.sim.CreateVolumeFromSnapshot(ctx, s1, w.id, "restored")
	if err != nil {
		t.Fatal(err)
	}
	if err := v2.Fill(ctx, []sim.Region{{Off: 5 * MiB, Len: 2 * MiB, Kind: sim.Random}, {Off: 36 * MiB, Len: 3 * MiB, Kind: sim.Text}}, 2); err != nil {
		t.Fatal(err)
	}
	s2 := w.snapshot(v2, "nightly-2")
	cases = append(cases, &kase{name: "clone of a clone", export: []string{s2.VSNamespace + "/" + s2.VSName},
		spec: w.snapSpec(s2), size: 48 * MiB})

	// 3. A volume whose size is not a multiple of the 4 MiB chunk size,
	// with data in its short last chunk.
	v3 := w.volumeWith("odd", 37*MiB, 3,
		sim.Region{Off: 0, Len: 3 * MiB, Kind: sim.Random},
		sim.Region{Off: 20 * MiB, Len: 2 * MiB, Kind: sim.Text},
		sim.Region{Off: 35*MiB + 512*KiB, Len: 1*MiB + 512*KiB, Kind: sim.Random})
	s3 := w.snapshot(v3, "nightly-3")
	cases = append(cases, &kase{name: "37 MiB volume", export: []string{s3.Handle}, spec: w.snapSpec(s3), size: 37 * MiB})

	// 4. A plain RBD image of an odd byte size (not even a multiple of
	// 512), data up to its last byte, exported with --image.
	const size4 = 37*MiB + 4*KiB + 123
	regions4 := []sim.Region{{Off: 0, Len: 2 * MiB, Kind: sim.Random}, {Off: 33 * MiB, Len: size4 - 33*MiB, Kind: sim.Text}}
	raw := filepath.Join(t.TempDir(), "plain.raw")
	f, err := os.Create(raw)
	if err == nil {
		_, err = f.ReadFrom(sim.Content(size4, regions4, 4))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	cephTool(t, a.conf(), "rbd", "import", "--no-progress", raw, w.spec("plain"))
	cephTool(t, a.conf(), "rbd", "snap", "create", w.spec("plain")+"@base")
	cases = append(cases, &kase{name: "odd-sized plain image", spec: w.spec("plain") + "@base", size: size4,
		export: []string{"--image", w.spec("plain") + "@base", "--cluster", w.id}})

	// Export everything from A; the reference checksums are Ceph's own.
	for _, c := range cases {
		e := w.export(repo, append(c.export, "--ceph-secret", secret, "--sha256")...)
		c.id = e.ID
		c.sha = rbdSHA256(t, a.conf(), c.spec)
		m := showBackup(t, repo, c.id)
		if m.SHA256 != c.sha || m.Size != c.size {
			t.Errorf("%s: manifest says %d bytes sha256 %s; rbd export of %s in A: %d bytes sha256 %s",
				c.name, m.Size, m.SHA256, c.spec, c.size, c.sha)
		}
	}
	// The references themselves are right (Ceph holds what the sim wrote)
	// and tell the cases apart.
	if want := sim.ContentSHA256(48*MiB, regions1, 1); cases[0].sha != want {
		t.Fatalf("rbd export of %s = %s, the sim wrote %s", cases[0].spec, cases[0].sha, want)
	}
	if want := sim.ContentSHA256(size4, regions4, 4); cases[3].sha != want {
		t.Fatalf("rbd export of %s = %s, the file imported was %s", cases[3].spec, cases[3].sha, want)
	}
	seen := map[string]string{}
	for _, c := range cases {
		if other, dup := seen[c.sha]; dup {
			t.Fatalf("cases %q and %q have the same content", other, c.name)
		}
		seen[c.sha] = c.name
	}

	// Destroy A: daemons killed, memstore data and directory gone.
	w.sim.Close()
	a.stop(t)
	if conn, err := net.DialTimeout("tcp", a.env.Get("CEPH_MON_HOST_V2"), time.Second); err == nil {
		conn.Close()
		t.Fatalf("cluster A's monitor %s still answers", a.env.Get("CEPH_MON_HOST_V2"))
	}
	if _, err := os.Stat(a.dir); !os.IsNotExist(err) {
		t.Fatalf("cluster A's directory %s still exists (%v)", a.dir, err)
	}
	b.wait(t)
	if b.env.Get("CEPH_FSID") == a.env.Get("CEPH_FSID") {
		t.Fatal("A and B have the same fsid")
	}

	// Restore into B three ways; no Kubernetes needed.
	for i, c := range cases {
		x, y, z := fmt.Sprintf("replicapool/x%d", i), fmt.Sprintf("replicapool/y%d", i), fmt.Sprintf("replicapool/z%d", i)
		r := runLifeboat(t, append([]string{"restore", c.id, "--to", x, "--ceph-conf", b.conf(), "--verify"}, repo.flags()...)...)
		if r.code != 0 || !strings.Contains(r.stdout, c.sha) {
			t.Errorf("%s: restore into B: exit %d: %s", c.name, r.code, r.stderr)
		}
		catArgs := shellQuote(append([]string{c.id}, repo.flags()...)...)
		if _, err := pipefail(t, fmt.Sprintf(`"$LB" cat %s --format raw | rbd -c %s import --no-progress - %s`,
			catArgs, shellQuote(b.conf()), y)); err != nil {
			t.Errorf("%s: cat --format raw | rbd import: %v", c.name, err)
		}
		if _, err := pipefail(t, fmt.Sprintf(`rbd -c %[1]s create --size %[2]dB %[3]s && "$LB" cat %[4]s --format rbd-diff | rbd -c %[1]s import-diff --no-progress - %[3]s`,
			shellQuote(b.conf()), c.size, z, catArgs)); err != nil {
			t.Errorf("%s: cat --format rbd-diff | rbd import-diff: %v", c.name, err)
		}
		for _, img := range []string{x, y, z} {
			if got := rbdSHA256(t, b.conf(), img); got != c.sha {
				t.Errorf("%s: %s in B has sha256 %s, the snapshot in A had %s", c.name, img, got, c.sha)
			}
		}
	}
}

// TestIncrementalExport: after 1% of a volume changes, the next export
// uploads about the changed bytes only, and both backups restore exactly.
//
// Chunks are the unit of deduplication, so the bound holds for changes
// that cover whole chunks: here random writes of one 64 KiB chunk each at
// random chunk-aligned offsets, in a repository of 64 KiB chunks.
func TestIncrementalExport(t *testing.T) {
	s3Creds(t)
	ctx := context.Background()
	w := newWorld(t)
	const chunk = 64 * KiB
	repo := newRepo(t, "64KiB", "")
	const size = 128 * MiB
	v := w.volumeWith("db", size, 1,
		sim.Region{Off: 0, Len: 64 * MiB, Kind: sim.Random},
		sim.Region{Off: 64 * MiB, Len: 32 * MiB, Kind: sim.Text},
		sim.Region{Off: 112 * MiB, Len: 16 * MiB, Kind: sim.Random})
	s1 := w.snapshot(v, "b1")
	e1 := w.export(repo, s1.ContentName)
	if e1.ChunksNew != e1.Chunks || e1.BytesRead != 112*MiB {
		t.Errorf("first export: %+v, want all %d allocated chunks new", e1, 112*MiB/chunk)
	}

	// 1% of the volume, in whole chunks at distinct random offsets (some
	// land in the never-written hole).
	n := (size/100 + chunk - 1) / chunk
	rng := rand.New(rand.NewPCG(42, 1))
	picked := map[uint64]bool{}
	var writes []sim.Region
	for len(writes) < n {
		i := rng.Uint64N(size / chunk)
		if !picked[i] {
			picked[i] = true
			writes = append(writes, sim.Region{Off: i * chunk, Len: chunk, Kind: sim.Random})
		}
	}
	if err := v.Fill(ctx, writes, 2); err != nil {
		t.Fatal(err)
	}
	changed := int64(n * chunk)
	s2 := w.snapshot(v, "b2")
	e2 := w.export(repo, s2.ContentName)
	t.Logf("incremental export: %d bytes changed (%.2f%% of %d), bytesNew %d = %.3f× the change, %d of %d chunks new, %d bytes stored, %.2fs",
		changed, 100*float64(changed)/size, size, e2.BytesNew, float64(e2.BytesNew)/float64(changed), e2.ChunksNew, e2.Chunks,
		e2.BytesStored, e2.Seconds)
	if e2.BytesNew > changed*3/2 {
		t.Errorf("second export uploaded %d bytes for %d changed bytes: more than 1.5×", e2.BytesNew, changed)
	}
	if e2.BytesNew < changed {
		t.Errorf("second export uploaded %d bytes, less than the %d bytes that changed: changes were missed", e2.BytesNew, changed)
	}
	if m := showBackup(t, repo, e2.ID); m.Parent != e1.ID {
		t.Errorf("second backup's parent = %q, want %q", m.Parent, e1.ID)
	}

	for i, c := range []struct {
		id   string
		snap *sim.Snapshot
	}{{e1.ID, s1}, {e2.ID, s2}} {
		img := fmt.Sprintf("r%d", i+1)
		r := w.run(append([]string{"restore", c.id, "--to", w.spec(img), "--cluster", w.id}, repo.flags()...)...)
		if r.code != 0 {
			t.Fatalf("restore %s: exit %d: %s", c.id, r.code, r.stderr)
		}
		got, err := w.sim.ImageSHA256(ctx, img, "")
		if err != nil {
			t.Fatal(err)
		}
		want, err := w.sim.ReadSnapshotSHA256(ctx, c.snap)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("backup %s restored to sha256 %s, snapshot %s has %s", c.id, got, c.snap.ImageName, want)
		}
	}
}

// TestExportCrashSafety kills exports with SIGKILL at several points: no
// backup ever appears until one completes, and the run that completes
// uploads only the chunks still missing and restores exactly.
func TestExportCrashSafety(t *testing.T) {
	s3Creds(t)
	ctx := context.Background()
	w := newWorld(t)
	repo := newRepo(t, "4MiB", "")
	const size = 256 * MiB
	const total = size / (4 * MiB)
	v := w.volumeWith("big", size, 7, sim.Region{Off: 0, Len: size, Kind: sim.Random})
	s := w.snapshot(v, "b")
	// The killed runs upload 2 chunks at a time: a longer upload phase
	// keeps the kill points well inside it.
	args := append([]string{"--kubeconfig", env.Get("KUBECONFIG"), "--driver-suffix", w.driver,
		"export", s.ContentName, "-o", "json", "--parallel", "2"}, repo.flags()...)

	// Kill points: a fixed delay (around the first uploads), then when the
	// bucket holds at least this many chunks (and this run has added at
	// least one).
	points := []struct {
		after  time.Duration
		chunks int
	}{{after: 150 * time.Millisecond}, {chunks: 4}, {chunks: 20}, {chunks: 40}}
	have := 0
	for _, p := range points {
		cmd := exec.Command(lifeboat, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill() // should the test fail first
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		var err error
		target := max(p.chunks, have+1)
	poll:
		for {
			select {
			case err = <-exited:
				t.Fatalf("export finished (%v) in %s before the kill point %+v: %s", err, time.Since(start), p, stderr.String())
			case <-time.After(15 * time.Millisecond):
			}
			if p.after > 0 && time.Since(start) >= p.after || p.chunks > 0 && len(repo.objects("data/")) >= target {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				err = <-exited
				break poll
			}
		}
		killedAt := time.Since(start)
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("export was not killed but ended with %v: %s", err, stderr.String())
		}
		time.Sleep(300 * time.Millisecond) // let MinIO finish what it received
		now := len(repo.objects("data/"))
		t.Logf("kill point %+v: SIGKILL after %s; the bucket holds %d of %d chunks", p, killedAt.Round(time.Millisecond), now, total)
		if m := repo.objects("backups/"); len(m) != 0 {
			t.Fatalf("after SIGKILL at %+v: manifests in the bucket: %v", p, m)
		}
		if l := listBackups(t, repo); len(l) != 0 {
			t.Fatalf("after SIGKILL at %+v: backups list shows %+v", p, l)
		}
		if now < have {
			t.Fatalf("chunks disappeared: %d, then %d", have, now)
		}
		have = now
	}
	if have == 0 || have >= total {
		t.Fatalf("the kills left %d of %d chunks: not mid-upload", have, total)
	}

	e := w.export(repo, s.ContentName)
	t.Logf("re-run: %d of %d chunks new (%d were stored by the killed runs), %d of %d bytes new", e.ChunksNew, e.Chunks, have, e.BytesNew, e.BytesRead)
	if e.Chunks != total || e.ChunksNew >= e.Chunks || e.BytesNew >= e.BytesRead {
		t.Errorf("re-run after the kills: %+v; want %d chunks, fewer of them new", e, total)
	}
	if e.ChunksNew > int64(total-have) {
		t.Errorf("re-run uploaded %d chunks, but only %d were missing", e.ChunksNew, total-have)
	}
	if n := len(repo.objects("data/")); n != total {
		t.Errorf("bucket holds %d chunks, want %d", n, total)
	}
	if l := listBackups(t, repo); len(l) != 1 || l[0].ID != e.ID {
		t.Errorf("backups list = %+v, want only %s", l, e.ID)
	}
	r := w.run(append([]string{"restore", e.ID, "--to", w.spec("restored"), "--cluster", w.id}, repo.flags()...)...)
	if r.code != 0 {
		t.Fatalf("restore: exit %d: %s", r.code, r.stderr)
	}
	got, err := w.sim.ImageSHA256(ctx, "restored", "")
	if err != nil {
		t.Fatal(err)
	}
	if want, err := w.sim.ReadSnapshotSHA256(ctx, s); err != nil || got != want {
		t.Errorf("restored sha256 %s, snapshot %s (%v)", got, want, err)
	}
}

// TestBackupBadInput: every way the repository or the target can be
// wrong ends with exit 2 and a message that says what is wrong.
func TestBackupBadInput(t *testing.T) {
	s3Creds(t)
	ctx := context.Background()
	w := newWorld(t)
	repo := newRepo(t, "4MiB", "")
	regions := []sim.Region{
		{Off: 0, Len: 6 * MiB, Kind: sim.Random},
		{Off: 12 * MiB, Len: 4 * MiB, Kind: sim.Text},
		{Off: 20 * MiB, Len: 4 * MiB, Kind: sim.Random},
	}
	v := w.volumeWith("vol", 24*MiB, 1, regions...)
	s := w.snapshot(v, "b")
	e := w.export(repo, s.ContentName)
	want, err := w.sim.ReadSnapshotSHA256(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	restore := func(id, image string, extra ...string) result {
		t.Helper()
		args := append([]string{"restore", id, "--to", w.spec(image), "--cluster", w.id}, extra...)
		return w.run(append(args, repo.flags()...)...)
	}
	imageExists := func(name string) bool {
		t.Helper()
		return slices.Contains(rbdImages(t, env.Get("CEPH_CONF"), "replicapool/"+w.id), name)
	}

	t.Run("wrong S3 credentials", func(t *testing.T) {
		const badSecret = "not-the-secret-key-0123456789"
		for _, creds := range [][]string{
			{"AWS_SECRET_ACCESS_KEY=" + badSecret},
			{"AWS_ACCESS_KEY_ID=nosuchuser", "AWS_SECRET_ACCESS_KEY=" + badSecret},
		} {
			for _, args := range [][]string{{"backups", "list"}, {"restore", e.ID, "--to", w.spec("badcreds"), "--cluster", w.id}} {
				args = append([]string{"--kubeconfig", env.Get("KUBECONFIG")}, append(args, repo.flags()...)...)
				r := runEnv(t, creds, args...)
				expect2(t, r, "S3 rejected the credentials")
				expect2(t, r, repo.name)
				if strings.Contains(r.stdout+r.stderr, badSecret) {
					t.Errorf("the secret key appears in the output")
				}
			}
		}
		if imageExists("badcreds") {
			t.Errorf("a restore with bad credentials created its target")
		}
	})

	t.Run("unreachable endpoint", func(t *testing.T) {
		r := runLifeboat(t, "backups", "list", "--s3-endpoint", "http://127.0.0.1:1", "--s3-bucket", repo.name)
		expect2(t, r, "S3 endpoint unreachable")
		expect2(t, r, "127.0.0.1:1")
		if r.took > 15*time.Second {
			t.Errorf("took %s to give up on a refused connection", r.took)
		}
	})

	t.Run("missing bucket", func(t *testing.T) {
		missing := newBucket(t)
		for _, args := range [][]string{{"backups", "list"}, {"repo", "init"}} {
			r := runLifeboat(t, append(args, missing.flags()...)...)
			expect2(t, r, "S3 bucket does not exist")
			expect2(t, r, missing.name)
		}
		if missing.exists() {
			t.Errorf("bucket %s was created without --s3-create-bucket", missing.name)
		}
	})

	t.Run("no permission to create the bucket", func(t *testing.T) {
		// A user who may use objects in any bucket but not create one.
		user, secret := minioUser(t, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
			"Action":["s3:GetObject","s3:PutObject","s3:DeleteObject","s3:ListBucket","s3:GetBucketLocation"],
			"Resource":["arn:aws:s3:::*","arn:aws:s3:::*/*"]}]}`)
		creds := []string{"AWS_ACCESS_KEY_ID=" + user, "AWS_SECRET_ACCESS_KEY=" + secret}
		// The user is fine otherwise: it reads the existing repository.
		if r := runEnv(t, creds, append([]string{"backups", "list"}, repo.flags()...)...); r.code != 0 || !strings.Contains(r.stdout, e.ID) {
			t.Fatalf("backups list as %s: exit %d: %s", user, r.code, r.stderr)
		}
		missing := newBucket(t)
		r := runEnv(t, creds, append([]string{"repo", "init", "--s3-create-bucket"}, missing.flags()...)...)
		expect2(t, r, "may not create it (AccessDenied)")
		expect2(t, r, "s3:CreateBucket")
		expect2(t, r, missing.name)
		if strings.Contains(r.stderr, "check AWS_ACCESS_KEY_ID") {
			t.Errorf("valid credentials blamed for a missing permission: %s", r.stderr)
		}
		if missing.exists() {
			t.Errorf("bucket %s exists", missing.name)
		}
	})

	t.Run("unknown backup", func(t *testing.T) {
		const id = "20200101T000000.000Z-0badc0de"
		expect2(t, restore(id, "never"), "backup not found")
		expect2(t, restore(id, "never"), id)
		expect2(t, runLifeboat(t, append([]string{"cat", id}, repo.flags()...)...), "backup not found")
		expect2(t, runLifeboat(t, append([]string{"backups", "show", id}, repo.flags()...)...), id)
		if imageExists("never") {
			t.Errorf("restore of an unknown backup created its target")
		}
	})

	t.Run("wrong encryption key", func(t *testing.T) {
		enc := newRepo(t, "4MiB", "the right key")
		good := w.export(enc, s.ContentName)
		wrong := filepath.Join(t.TempDir(), "wrong.key")
		writeFile(t, wrong, "the wrong key\n")
		before := enc.objects("")
		encFlags := []string{"--s3-endpoint", env.Get("S3_ENDPOINT"), "--s3-bucket", enc.name}
		for _, args := range [][]string{
			{"backups", "list"},
			{"restore", good.ID, "--to", w.spec("wrongkey"), "--cluster", w.id},
			{"cat", good.ID},
			{"export", s.ContentName},
		} {
			r := w.run(append(append(args, encFlags...), "--encryption-key-file", wrong)...)
			expect2(t, r, "wrong repository key")
		}
		expect2(t, w.run(append([]string{"backups", "list"}, encFlags...)...), "a key is required")
		expect2(t, w.run(append([]string{"backups", "list", "--encryption-key-file", wrong}, repo.flags()...)...), "not encrypted")
		if after := enc.objects(""); len(after) != len(before) {
			t.Errorf("an export with the wrong key wrote to the repository: %d objects, then %d", len(before), len(after))
		}
		if imageExists("wrongkey") {
			t.Errorf("restore with the wrong key created its target")
		}
	})

	t.Run("existing image", func(t *testing.T) {
		// A bigger image full of other data: holes of the backup must
		// become zeros, and the size must shrink.
		other := filepath.Join(t.TempDir(), "other.raw")
		f, err := os.Create(other)
		if err == nil {
			_, err = f.ReadFrom(sim.Content(40*MiB, []sim.Region{{Off: 0, Len: 40 * MiB, Kind: sim.Random}}, 99))
			f.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		w.ceph("rbd", "import", "--no-progress", other, w.spec("existing"))
		before := rbdSHA256(t, env.Get("CEPH_CONF"), w.spec("existing"))
		r := restore(e.ID, "existing")
		expect2(t, r, "already exists")
		expect2(t, r, "--force")
		if got := rbdSHA256(t, env.Get("CEPH_CONF"), w.spec("existing")); got != before {
			t.Errorf("a refused restore changed the existing image")
		}
		if r := restore(e.ID, "existing", "--force", "--snapshot", "restored"); r.code != 0 {
			t.Fatalf("restore --force: exit %d: %s", r.code, r.stderr)
		}
		if got := rbdSHA256(t, env.Get("CEPH_CONF"), w.spec("existing")); got != want {
			t.Errorf("restore --force onto an existing image: sha256 %s, want %s", got, want)
		}
		// --snapshot is taken after the last write is flushed.
		if got := rbdSHA256(t, env.Get("CEPH_CONF"), w.spec("existing")+"@restored"); got != want {
			t.Errorf("restore --snapshot: snapshot sha256 %s, want %s", got, want)
		}
	})

	t.Run("corrupt chunk", func(t *testing.T) {
		// Replace the last chunk (so a restore has written the others
		// when it meets it) by a well-formed object - raw header, right
		// length - with other content: only the content check can tell.
		// Unencrypted, a chunk's id is the SHA-256 of its plaintext.
		last := make([]byte, 4*MiB)
		sim.Render(last, 20*MiB, regions, 1)
		sum := sha256.Sum256(last)
		id := hex.EncodeToString(sum[:])
		victim := "data/" + id[:2] + "/" + id
		if _, ok := repo.objects("data/")[victim]; !ok {
			t.Fatalf("no chunk %s in the repository: %v", victim, repo.objects("data/"))
		}
		check := func(id string) result {
			return runLifeboat(t, append([]string{"backups", "check", id}, repo.flags()...)...)
		}
		if r := check(e.ID); r.code != 0 || !strings.Contains(r.stdout, "OK") {
			t.Fatalf("backups check of an intact backup: exit %d: %s%s", r.code, r.stdout, r.stderr)
		}
		garbage := make([]byte, 1+4*MiB)
		rand.NewChaCha8([32]byte{1}).Read(garbage[1:])
		repo.put(victim, garbage)
		// backups check finds the damage without restoring: exit 1, the
		// chunk and its offset named.
		if r := check(e.ID); r.code != 1 || !strings.Contains(r.stdout, "Damaged") || !strings.Contains(r.stdout, id) ||
			!strings.Contains(r.stdout, "offset 20971520") {
			t.Errorf("backups check of a backup with a corrupt chunk: exit %d: %s%s", r.code, r.stdout, r.stderr)
		}
		if r := check("20990101T000000.000Z-00000000"); r.code != 2 || !strings.Contains(r.stderr, "no backup") {
			t.Errorf("backups check of an unknown id: exit %d: %s", r.code, r.stderr)
		}

		r := restore(e.ID, "corrupt")
		expect2(t, r, id)
		expect2(t, r, "at image offset 20971520")
		expect2(t, r, "removed the partial image")
		if imageExists("corrupt") {
			t.Errorf("a failed restore left its image behind")
		}
		for _, format := range []string{"raw", "rbd-diff"} {
			r, n := catDiscard(t, append([]string{"cat", e.ID, "--format", format}, repo.flags()...)...)
			expect2(t, r, id)
			expect2(t, r, "at image offset 20971520")
			if format == "raw" && n >= 20*MiB {
				t.Errorf("cat --format raw of a backup whose chunk at 20 MiB is corrupt wrote %d bytes", n)
			}
		}
		// Garbage that is not even a valid object is named too.
		repo.put(victim, []byte("garbage"))
		expect2(t, restore(e.ID, "corrupt"), id)
		if imageExists("corrupt") {
			t.Errorf("a failed restore left its image behind")
		}
	})
}

// catDiscard runs lifeboat with stdout counted and thrown away.
func catDiscard(t *testing.T, args ...string) (result, int64) {
	t.Helper()
	cmd := exec.Command(lifeboat, args...)
	var n countWriter
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &n, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stderr: stderr.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	t.Logf("lifeboat %s → exit %d in %s, %d bytes on stdout\n%s", strings.Join(args, " "), r.code, r.took.Round(time.Millisecond), n, r.stderr)
	return r, int64(n)
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// TestEncryptionHidesData: with an encryption key, no object in the bucket
// holds a marker written all over the volume, nor the snapshot's names;
// without one the same scan finds the marker (so the scan can fail).
func TestEncryptionHidesData(t *testing.T) {
	s3Creds(t)
	ctx := context.Background()
	w := newWorld(t)
	marker := []byte("LIFEBOAT-E2E-PLAINTEXT-MARKER-" + uuid.NewString())
	v := w.volumeWith("secret", 32*MiB, 1,
		sim.Region{Off: 0, Len: 8 * MiB, Kind: sim.Text},
		sim.Region{Off: 16 * MiB, Len: 8 * MiB, Kind: sim.Random})
	// [8 MiB, 16 MiB): random with the marker in every 4 KiB block, so
	// it stays incompressible and an unencrypted repository stores it raw;
	// the text region gets it too, every 64 KiB.
	buf := make([]byte, 8*MiB)
	rand.NewChaCha8([32]byte{3}).Read(buf)
	for off := 0; off < len(buf); off += 4 * KiB {
		copy(buf[off:], marker)
	}
	if _, err := v.WriteAt(buf, 8*MiB); err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < 8*MiB; off += 64 * KiB {
		if _, err := v.WriteAt(marker, off+1000); err != nil {
			t.Fatal(err)
		}
	}
	s := w.snapshot(v, "b")

	enc := newRepo(t, "4MiB", "correct horse battery staple")
	plain := newRepo(t, "4MiB", "")
	e := w.export(enc, s.ContentName)
	w.export(plain, s.ContentName)

	secrets := map[string][]byte{"marker": marker, "image name": []byte(s.ImageName), "VolumeSnapshotContent": []byte(s.ContentName),
		"PVC": []byte(w.id + "/" + v.PVC)}
	scan := func(b *bucket) map[string][]string {
		hits := map[string][]string{}
		for name := range b.objects("") {
			data := b.get(name)
			for what, s := range secrets {
				if bytes.Contains(data, s) {
					hits[what] = append(hits[what], name)
				}
			}
		}
		return hits
	}
	objs := enc.objects("")
	if len(enc.objects("data/")) < 4 || len(enc.objects("backups/")) != 1 {
		t.Fatalf("encrypted repository holds %v", objs)
	}
	if hits := scan(enc); len(hits) != 0 {
		t.Errorf("encrypted repository: plaintext found in objects: %v", hits)
	}
	if hits := scan(plain); len(hits["marker"]) == 0 {
		t.Errorf("control: the unencrypted repository shows no marker, so the scan proves nothing (hits %v)", hits)
	} else {
		t.Logf("control: marker found in %d of %d objects of the unencrypted repository", len(hits["marker"]), len(plain.objects("")))
	}

	r := w.run(append([]string{"restore", e.ID, "--to", w.spec("decrypted"), "--cluster", w.id}, enc.flags()...)...)
	if r.code != 0 {
		t.Fatalf("restore from the encrypted repository: exit %d: %s", r.code, r.stderr)
	}
	got, err := w.sim.ImageSHA256(ctx, "decrypted", "")
	if err != nil {
		t.Fatal(err)
	}
	if want, err := w.sim.ReadSnapshotSHA256(ctx, s); err != nil || got != want {
		t.Errorf("restored from the encrypted repository: sha256 %s, want %s (%v)", got, want, err)
	}
}
