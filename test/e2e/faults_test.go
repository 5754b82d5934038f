//go:build e2e

package e2e

// Outages ridden through: the test's own MinIO (never the stack's) killed
// and restarted under exports, restores and checks; the agent through an
// S3 outage; a Ceph monitor restarted and an OSD paused under an export
// on a cluster of the test's own.

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/lifeboat-backup/lifeboat/test/sim"
)

// ownMinIO is a MinIO server of the test's own: free ports on 127.0.0.1,
// its own data directory, credentials passed in the environment. It is
// stopped when the test ends, whatever happens.
type ownMinIO struct {
	t                       *testing.T
	dir, addr, console      string
	user, pass              string
	cmd                     *exec.Cmd
	done                    chan struct{}
	log                     *os.File
	startedAt, lastKilledAt time.Time
}

func startMinIO(t *testing.T) *ownMinIO {
	t.Helper()
	bin := env.Get("LB_MINIO_BIN")
	if bin == "" {
		t.Fatal("the stack env has no LB_MINIO_BIN: run make stack-up")
	}
	dir := t.TempDir()
	m := &ownMinIO{t: t, dir: dir, addr: freePort(t), console: freePort(t),
		user: "faults" + uuid.NewString()[:8], pass: strings.ReplaceAll(uuid.NewString(), "-", "")}
	var err error
	if m.log, err = os.Create(filepath.Join(dir, "minio.log")); err != nil {
		t.Fatal(err)
	}
	m.start()
	t.Cleanup(func() {
		m.kill()
		m.log.Close()
	})
	return m
}

// start runs the server (again) on the same ports and data, and waits
// until it is ready.
func (m *ownMinIO) start() {
	m.t.Helper()
	m.cmd = exec.Command(env.Get("LB_MINIO_BIN"), "server", filepath.Join(m.dir, "data"), "--quiet",
		"--address", m.addr, "--console-address", m.console)
	m.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+m.user, "MINIO_ROOT_PASSWORD="+m.pass, "MINIO_UPDATE=off")
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	done := make(chan struct{})
	m.done = done
	go func() { _ = m.cmd.Wait(); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + m.addr + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("own MinIO on %s not ready after 30 s (log %s)", m.addr, m.log.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
	m.startedAt = time.Now()
}

// kill stops the server at once (SIGKILL), if it runs.
func (m *ownMinIO) kill() {
	select {
	case <-m.done:
		return
	default:
	}
	_ = m.cmd.Process.Kill()
	<-m.done
	m.lastKilledAt = time.Now()
}

func (m *ownMinIO) endpoint() string { return "http://" + m.addr }

func (m *ownMinIO) env() []string { return s3Env(m.user, m.pass) }

func (m *ownMinIO) client() *minio.Client {
	c, err := minio.New(m.addr, &minio.Options{Creds: credentials.NewStaticV4(m.user, m.pass, "")})
	if err != nil {
		m.t.Fatal(err)
	}
	return c
}

// count is how many objects bucket holds under prefix (-1 if it cannot
// tell: the server is down).
func (m *ownMinIO) count(bucket, prefix string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n := 0
	for o := range m.client().ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			return -1
		}
		n++
	}
	return n
}

// repoFlags are the repository flags for bucket on this server.
func (m *ownMinIO) repoFlags(bucket string) []string {
	return []string{"--s3-endpoint", m.endpoint(), "--s3-bucket", bucket}
}

// initRepo creates bucket and a repository in it.
func (m *ownMinIO) initRepo(bucket string) {
	m.t.Helper()
	r := runEnv(m.t, m.env(), append([]string{"repo", "init", "--s3-create-bucket"}, m.repoFlags(bucket)...)...)
	if r.code != 0 {
		m.t.Fatalf("repo init on own MinIO: %s", r.stderr)
	}
}

// proc is a lifeboat process running in the background.
type proc struct {
	cmd       *exec.Cmd
	out, errb bytes.Buffer
	done      chan struct{}
	start     time.Time
	res       result
}

func startLifeboat(t *testing.T, extraEnv []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(lifeboat, args...), done: make(chan struct{}), start: time.Now()}
	p.cmd.Env = append(os.Environ(), extraEnv...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.errb
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		p.res = result{stdout: p.out.String(), stderr: p.errb.String(), took: time.Since(p.start)}
		if ee, ok := err.(*exec.ExitError); ok {
			p.res.code = ee.ExitCode()
		} else if err != nil {
			p.res.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); <-p.done })
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// wait waits for the process to end, at most timeout.
func (p *proc) wait(t *testing.T, what string, timeout time.Duration) result {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s still running after %v:\n%s", what, timeout, p.errb.String())
	}
	t.Logf("%s → exit %d in %s\n%s%s", what, p.res.code, p.res.took.Round(time.Millisecond), p.res.stdout, p.res.stderr)
	return p.res
}

// until polls cond every 50 ms for at most timeout.
func until(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

// faultVolume is the volume the S3 outage tests export: 128 MiB of random
// data (128 chunks, each uploaded anew into a fresh repository). The
// issue's 512 MiB are not needed to span an outage: the test kills S3
// once the export has uploaded a few chunks and checks that the export is
// still running, so the outage always lands mid-export.
const faultVolumeSize = 128 * MiB

// exportThroughOutage exports s into a fresh repository on m, kills m
// once some chunks are up, restarts it after down, and checks that the
// export completes on its first run, restores bit-exactly, and took at
// least the outage.
func exportThroughOutage(t *testing.T, w *world, m *ownMinIO, s *sim.Snapshot, down time.Duration) string {
	bucket := "faults-" + strings.ToLower(down.String())
	m.initRepo(bucket)
	p := startLifeboat(t, m.env(), append([]string{"--kubeconfig", env.Get("KUBECONFIG"), "--driver-suffix", w.driver,
		"export", s.ContentName, "-o", "json", "--parallel", "2"}, m.repoFlags(bucket)...)...)
	if !until(60*time.Second, func() bool { return m.count(bucket, "data/") >= 8 || !p.running() }) || !p.running() {
		t.Fatalf("the export ended (or uploaded nothing) before S3 could be killed: %s", p.errb.String())
	}
	m.kill()
	t.Logf("killed own MinIO mid-export; restarting it in %v", down)
	time.Sleep(down)
	if !p.running() {
		t.Fatalf("the export ended during the S3 outage: %s", p.errb.String())
	}
	m.start()
	r := p.wait(t, "export through a "+down.String()+" S3 outage", down+3*time.Minute)
	if r.code != 0 {
		t.Fatalf("export through a %v S3 outage: exit %d", down, r.code)
	}
	if r.took < down {
		t.Errorf("the export took %v, less than the %v outage", r.took, down)
	}
	var out exportOut
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.ID == "" {
		t.Fatalf("export output %q: %v", r.stdout, err)
	}
	restoreAndCompareEnv(t, w, m.env(), out.ID, s, m.repoFlags(bucket)...)
	return bucket
}

// TestS3Outages: exports with MinIO killed mid-way and back after 5 s and
// after 60 s complete on their first run and restore bit-exactly; a
// restore and a backups check with MinIO killed and restarted mid-way
// complete; with S3 down longer than --s3-retry-for, an export exits 2
// within that time and one backoff, naming the endpoint.
func TestS3Outages(t *testing.T) {
	w := newWorld(t)
	m := startMinIO(t)
	v := w.volumeWith("outage", faultVolumeSize, 7, sim.Region{Off: 0, Len: faultVolumeSize, Kind: sim.Random})
	s := w.snapshot(v, "outage")

	bucket := exportThroughOutage(t, w, m, s, 5*time.Second)
	exportThroughOutage(t, w, m, s, 60*time.Second)

	// A restore and a check, each through a throttled proxy (16 MiB/s:
	// some 8 s for the volume), with S3 killed 2 s in and back 5 s later:
	// each must still be running at the kill and succeed.
	slow := throttle(t, m.addr, 16*MiB)
	id := onlyBackup(t, m, bucket)
	want, err := w.sim.ReadSnapshotSHA256(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	target := "restored-" + uuid.NewString()[:8]
	for _, c := range []struct {
		what string
		args []string
	}{
		{"restore", []string{"restore", id, "--to", w.spec(target), "--ceph-conf", env.Get("CEPH_CONF"), "--parallel", "1"}},
		{"backups check", []string{"backups", "check", id, "--parallel", "1"}},
	} {
		p := startLifeboat(t, m.env(), append(c.args, "--s3-endpoint", "http://"+slow, "--s3-bucket", bucket)...)
		time.Sleep(2 * time.Second)
		if !p.running() {
			t.Fatalf("%s ended before S3 could be killed: %s", c.what, p.errb.String())
		}
		m.kill()
		time.Sleep(5 * time.Second)
		m.start()
		r := p.wait(t, c.what+" through a 5s S3 outage", 3*time.Minute)
		if r.code != 0 || r.took < 5*time.Second {
			t.Errorf("%s through a 5 s S3 outage: exit %d after %v", c.what, r.code, r.took)
		}
	}
	if got, err := w.sim.ImageSHA256(context.Background(), target, ""); err != nil || got != want {
		t.Errorf("restored through an outage: sha256 %s (%v), the snapshot is %s", got, err, want)
	}

	// S3 gone for longer than --s3-retry-for: exit 2 in that time and one
	// backoff (10 s at most), naming the endpoint and how long it tried.
	m.initRepo("faults-gone")
	p := startLifeboat(t, m.env(), append([]string{"--kubeconfig", env.Get("KUBECONFIG"), "--driver-suffix", w.driver,
		"export", s.ContentName, "--parallel", "2", "--s3-retry-for", "15s"}, m.repoFlags("faults-gone")...)...)
	if !until(60*time.Second, func() bool { return m.count("faults-gone", "data/") >= 8 || !p.running() }) || !p.running() {
		t.Fatalf("the export ended before S3 could be killed: %s", p.errb.String())
	}
	m.kill()
	killed := time.Now()
	r := p.wait(t, "export with S3 gone", 2*time.Minute)
	after := time.Since(killed)
	if r.code != 2 || after > 15*time.Second+10*time.Second || after < 15*time.Second ||
		!strings.Contains(r.stderr, m.addr) || !strings.Contains(r.stderr, "gave up after retrying") {
		t.Errorf("export with S3 gone: exit %d %v after the kill; want 2 after 15-25 s naming %s and the time tried", r.code, after, m.addr)
	}
	m.start()
	if n := m.count("faults-gone", "backups/"); n != 0 {
		t.Errorf("an export that gave up left %d manifests", n)
	}
}

// onlyBackup is the id of the one backup in bucket.
func onlyBackup(t *testing.T, m *ownMinIO, bucket string) string {
	t.Helper()
	r := runEnv(t, m.env(), append([]string{"backups", "list", "-o", "json"}, m.repoFlags(bucket)...)...)
	var list []summary
	mustJSON(t, r.stdout, &list)
	if r.code != 0 || len(list) != 1 {
		t.Fatalf("backups list: exit %d, %d backups", r.code, len(list))
	}
	return list[0].ID
}

// throttle is a TCP proxy on 127.0.0.1 to addr that passes at most rate
// bytes a second each way on each connection: it makes a restore or a
// check (one connection at --parallel 1) slow enough that an outage
// lands in its middle. A connection whose other end fails is closed, as
// a server that went away would leave it.
func throttle(t *testing.T, addr string, rate int) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	pipe := func(dst, src net.Conn) {
		defer dst.Close()
		defer src.Close()
		buf := make([]byte, 16<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
				time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
			}
			if err != nil {
				return
			}
		}
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				c.Close()
				continue
			}
			go pipe(up, c)
			go pipe(c, up)
		}
	}()
	return l.Addr().String()
}
