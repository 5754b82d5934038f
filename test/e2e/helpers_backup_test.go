//go:build e2e

package e2e

// Helpers of backup_test.go: S3 buckets and repositories, lifeboat runs
// with S3 credentials, extra Ceph clusters, a world on such a cluster and
// MinIO users through MinIO's admin API.

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/signer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lifeboat-backup/lifeboat/test/sim"
)

// ---------------------------------------------------------------------------
// S3

// s3Creds puts the stack's S3 credentials into the environment lifeboat
// inherits (it reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY only).
func s3Creds(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", env.Get("AWS_ACCESS_KEY_ID"))
	t.Setenv("AWS_SECRET_ACCESS_KEY", env.Get("AWS_SECRET_ACCESS_KEY"))
}

func s3Host(t testing.TB) string {
	u, err := url.Parse(env.Get("S3_ENDPOINT"))
	if err != nil || u.Host == "" {
		t.Fatalf("stack env S3_ENDPOINT %q: %v", env.Get("S3_ENDPOINT"), err)
	}
	return u.Host
}

func minioClient(t testing.TB, accessKey, secretKey string) *minio.Client {
	c, err := minio.New(s3Host(t), &minio.Options{Creds: credentials.NewStaticV4(accessKey, secretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// bucket is a test's own S3 bucket (and the repository in it), emptied and
// removed when the test ends.
type bucket struct {
	t       *testing.T
	name    string
	s3      *minio.Client // admin (root) client
	keyFile string        // encryption key file, "" when unencrypted
}

// newBucket names a fresh bucket and arranges its removal; it does not
// create it.
func newBucket(t *testing.T) *bucket {
	t.Helper()
	return removedAtEnd(t, "lb-e2e-"+strings.ReplaceAll(uuid.NewString(), "-", "")[:16])
}

// removedAtEnd is bucket name, removed with its objects when the test ends;
// also for buckets the code under test creates itself.
func removedAtEnd(t *testing.T, name string) *bucket {
	t.Helper()
	b := &bucket{t: t, name: name, s3: minioClient(t, env.Get("AWS_ACCESS_KEY_ID"), env.Get("AWS_SECRET_ACCESS_KEY"))}
	t.Cleanup(b.remove)
	return b
}

// newRepo creates a bucket and a repository in it (repo init
// --s3-create-bucket), encrypted when key is not "".
func newRepo(t *testing.T, chunkSize, key string) *bucket {
	t.Helper()
	b := newBucket(t)
	if key != "" {
		b.keyFile = filepath.Join(t.TempDir(), "repo.key")
		writeFile(t, b.keyFile, key+"\n")
	}
	args := append([]string{"repo", "init", "--s3-create-bucket", "--chunk-size", chunkSize}, b.flags()...)
	if r := runLifeboat(t, args...); r.code != 0 || !strings.Contains(r.stdout, "created repository") {
		t.Fatalf("repo init: exit %d: %s", r.code, r.stderr)
	}
	return b
}

// flags are the repository flags of every lifeboat command on this bucket.
func (b *bucket) flags() []string {
	f := []string{"--s3-endpoint", env.Get("S3_ENDPOINT"), "--s3-bucket", b.name}
	if b.keyFile != "" {
		f = append(f, "--encryption-key-file", b.keyFile)
	}
	return f
}

// objects lists the bucket's objects under prefix: name → size.
func (b *bucket) objects(prefix string) map[string]int64 {
	b.t.Helper()
	out := map[string]int64{}
	for o := range b.s3.ListObjects(context.Background(), b.name, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			b.t.Fatalf("listing %s/%s: %v", b.name, prefix, o.Err)
		}
		out[o.Key] = o.Size
	}
	return out
}

func (b *bucket) get(name string) []byte {
	b.t.Helper()
	obj, err := b.s3.GetObject(context.Background(), b.name, name, minio.GetObjectOptions{})
	if err != nil {
		b.t.Fatalf("get %s: %v", name, err)
	}
	defer obj.Close()
	data, err := io.ReadAll(obj)
	if err != nil {
		b.t.Fatalf("get %s: %v", name, err)
	}
	return data
}

func (b *bucket) put(name string, data []byte) {
	b.t.Helper()
	_, err := b.s3.PutObject(context.Background(), b.name, name, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
	if err != nil {
		b.t.Fatalf("put %s: %v", name, err)
	}
}

func (b *bucket) exists() bool {
	b.t.Helper()
	ok, err := b.s3.BucketExists(context.Background(), b.name)
	if err != nil {
		b.t.Fatalf("bucket %s: %v", b.name, err)
	}
	return ok
}

func (b *bucket) remove() {
	ctx := context.Background()
	if ok, err := b.s3.BucketExists(ctx, b.name); err != nil || !ok {
		return
	}
	objs := make(chan minio.ObjectInfo)
	go func() {
		defer close(objs)
		for o := range b.s3.ListObjects(ctx, b.name, minio.ListObjectsOptions{Recursive: true}) {
			if o.Err == nil {
				objs <- o
			}
		}
	}()
	for e := range b.s3.RemoveObjects(ctx, b.name, objs, minio.RemoveObjectsOptions{}) {
		b.t.Logf("removing %s/%s: %v", b.name, e.ObjectName, e.Err)
	}
	if err := b.s3.RemoveBucket(ctx, b.name); err != nil {
		b.t.Logf("removing bucket %s: %v", b.name, err)
	}
}

// ---------------------------------------------------------------------------
// lifeboat

// exportOut is `lifeboat export -o json`.
type exportOut struct {
	ID          string  `json:"id"`
	BytesRead   int64   `json:"bytesRead"`
	BytesNew    int64   `json:"bytesNew"`
	BytesStored int64   `json:"bytesStored"`
	Chunks      int64   `json:"chunks"`
	ChunksNew   int64   `json:"chunksNew"`
	Seconds     float64 `json:"seconds"`
	Path        string  `json:"path"`
	Fallback    string  `json:"fallback"`
}

// summary is `lifeboat backups show -o json` (and an item of backups list).
type summary struct {
	ID        string            `json:"id"`
	Parent    string            `json:"parent"`
	Size      int64             `json:"size"`
	ChunkSize int               `json:"chunk_size"`
	SHA256    string            `json:"sha256"`
	Source    map[string]string `json:"source"`
	Stats     struct {
		BytesRead int64 `json:"bytes_read"`
		BytesNew  int64 `json:"bytes_new"`
		Chunks    int64 `json:"chunks"`
		ChunksNew int64 `json:"chunks_new"`
	} `json:"stats"`
}

// export runs lifeboat export (in world w) and decodes its JSON.
func (w *world) export(b *bucket, args ...string) exportOut {
	w.t.Helper()
	r := w.run(append(append([]string{"export", "-o", "json"}, args...), b.flags()...)...)
	if r.code != 0 {
		w.t.Fatalf("export %v: exit %d: %s", args, r.code, r.stderr)
	}
	var out exportOut
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.ID == "" {
		w.t.Fatalf("export %v: output %q: %v", args, r.stdout, err)
	}
	return out
}

func showBackup(t *testing.T, b *bucket, id string) summary {
	t.Helper()
	r := runLifeboat(t, append([]string{"backups", "show", id, "-o", "json"}, b.flags()...)...)
	if r.code != 0 {
		t.Fatalf("backups show %s: exit %d: %s", id, r.code, r.stderr)
	}
	var s summary
	mustJSON(t, r.stdout, &s)
	return s
}

func listBackups(t *testing.T, b *bucket) []summary {
	t.Helper()
	r := runLifeboat(t, append([]string{"backups", "list", "-o", "json"}, b.flags()...)...)
	if r.code != 0 {
		t.Fatalf("backups list: exit %d: %s", r.code, r.stderr)
	}
	var s []summary
	mustJSON(t, r.stdout, &s)
	return s
}

// runEnv is runLifeboat with extra KEY=value environment entries (later
// entries win).
func runEnv(t testing.TB, extra []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, lifeboat, args...)
	cmd.Env = append(os.Environ(), extra...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running lifeboat %v: %v", args, err)
	}
	t.Logf("%slifeboat %s → exit %d in %s\n%s%s", prefix(extra), strings.Join(args, " "), r.code,
		r.took.Round(time.Millisecond), r.stdout, r.stderr)
	return r
}

// pipefail runs a bash script with pipefail; $LB is the lifeboat binary.
func pipefail(t *testing.T, script string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", script)
	cmd.Env = append(os.Environ(), "LB="+lifeboat)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("bash -o pipefail -c %q → %v in %s\n%s", script, err, time.Since(start).Round(time.Millisecond), out)
	return string(out), err
}

// shellQuote shell-quotes args.
func shellQuote(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// ---------------------------------------------------------------------------
// Ceph

// rbdSHA256 is `rbd export SPEC - | sha256sum` on the cluster of conf.
func rbdSHA256(t testing.TB, conf, spec string) string {
	t.Helper()
	cmd := exec.Command("rbd", "-c", conf, "export", "--no-progress", spec, "-")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	_, cerr := io.Copy(h, stdout)
	if err := cmd.Wait(); err != nil || cerr != nil {
		t.Fatalf("rbd export %s: %v %v\n%s", spec, err, cerr, errb.String())
	}
	return hex.EncodeToString(h.Sum(nil))
}

func cephTool(t testing.TB, conf, tool string, args ...string) string {
	t.Helper()
	out, err := exec.Command(tool, append([]string{"-c", conf}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s -c %s %v: %v\n%s", tool, conf, args, err, out)
	}
	return string(out)
}

// rbdImages lists the images of pool[/namespace].
func rbdImages(t testing.TB, conf, poolNS string) []string {
	t.Helper()
	return strings.Fields(cephTool(t, conf, "rbd", "ls", poolNS))
}

// cluster is a disposable Ceph cluster started by test/stack/ceph-cluster.sh.
type cluster struct {
	dir, v2, v1 string
	env         sim.Env
	started     chan error // the start's result, then closed
	stopped     bool
}

const clusterScript = "../stack/ceph-cluster.sh"

// newCluster reserves a directory and the first free pair of ports from
// (v2, v1) upwards for a cluster, and arranges for it to be stopped and
// wiped when the test ends. startAsync starts it.
func newCluster(t testing.TB, v2, v1 int) *cluster {
	t.Helper()
	for !portFree(v2) || !portFree(v1) {
		v2, v1 = v2+1, v1+1
	}
	dir, err := os.MkdirTemp("", "lb-e2e-ceph-")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{dir: dir, v2: strconv.Itoa(v2), v1: strconv.Itoa(v1)}
	t.Cleanup(func() {
		if c.started != nil {
			<-c.started // never stop a cluster halfway through its start
		}
		c.stop(t)
	})
	return c
}

// startAsync starts the cluster in the background; wait waits for it.
func (c *cluster) startAsync() {
	c.started = make(chan error, 1)
	go func() {
		defer close(c.started)
		out, err := exec.Command(clusterScript, "start", c.dir, c.v2, c.v1).CombinedOutput()
		if err != nil {
			c.started <- fmt.Errorf("%s start %s %s %s: %v\n%s", clusterScript, c.dir, c.v2, c.v1, err, out)
			return
		}
		c.env, err = sim.LoadEnvFile(filepath.Join(c.dir, "cluster.env"))
		c.started <- err
	}()
}

func (c *cluster) wait(t testing.TB) {
	t.Helper()
	start := time.Now()
	if err := <-c.started; err != nil {
		t.Fatal(err)
	}
	t.Logf("Ceph cluster %s in %s (mon %s) ready after %s more", c.env.Get("CEPH_FSID"), c.dir,
		c.env.Get("CEPH_MON_HOST_V2"), time.Since(start).Round(100*time.Millisecond))
}

func portFree(p int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func (c *cluster) conf() string { return c.env.Get("CEPH_CONF") }

// stop kills the cluster's daemons and deletes its directory (its data
// lives in memstore: it is gone for good).
func (c *cluster) stop(t testing.TB) {
	if c.stopped {
		return
	}
	c.stopped = true
	if out, err := exec.Command(clusterScript, "stop", c.dir, "--wipe").CombinedOutput(); err != nil {
		t.Errorf("%s stop %s --wipe: %v\n%s", clusterScript, c.dir, err, out)
	}
}

// newWorldOn is newWorld on another Ceph cluster: the simulator writes to
// c, ceph-csi's config (shared API server) lists c's monitors for the
// world's clusterID, and a Secret of its own holds c's CSI user key (the
// shared Secret other worlds use is left alone). lifeboat commands on c
// need --ceph-secret with the returned name.
func newWorldOn(t *testing.T, c *cluster) (*world, string) {
	t.Helper()
	w := newWorldWith(t, c.conf(), c.env.Monitors(), env.Get("CEPH_CSI_KEY"))
	s, id, opts, ctx := w.sim, w.id, w.sim.Options(), context.Background()
	secret := "csi-" + id
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: opts.RookNamespace, Name: secret},
		Data: map[string][]byte{"userID": []byte(c.env.Get("CEPH_CSI_USER")), "userKey": []byte(c.env.Get("CEPH_CSI_KEY"))}}
	if _, err := s.Kube.CoreV1().Secrets(opts.RookNamespace).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Kube.CoreV1().Secrets(opts.RookNamespace).Delete(context.Background(), secret, metav1.DeleteOptions{})
	})
	return w, secret
}

// volumeWith provisions a volume and fills regions with seed.
func (w *world) volumeWith(name string, size uint64, seed int64, regions ...sim.Region) *sim.Volume {
	w.t.Helper()
	ctx := context.Background()
	v, err := w.sim.CreateVolume(ctx, w.id, name, size)
	if err != nil {
		w.t.Fatalf("CreateVolume: %v", err)
	}
	if err := v.Fill(ctx, regions, seed); err != nil {
		w.t.Fatalf("Fill: %v", err)
	}
	return v
}

// snapSpec is pool/namespace/image@snap of a CSI snapshot.
func (w *world) snapSpec(s *sim.Snapshot) string {
	return w.spec(s.ImageName) + "@" + s.SnapName
}

// ---------------------------------------------------------------------------
// MinIO admin API (no madmin-go, no mc): just enough to make a user with a
// policy.

// minioUser creates a MinIO user with an IAM policy (JSON) attached and
// removes both when the test ends. It returns the user's keys.
func minioUser(t *testing.T, policy string) (string, string) {
	t.Helper()
	suffix := strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	user, secret, policyName := "lbe2e"+suffix, "s"+strings.ReplaceAll(uuid.NewString(), "-", ""), "lb-e2e-"+suffix
	minioAdmin(t, http.MethodPut, "add-canned-policy", url.Values{"name": {policyName}}, []byte(policy))
	t.Cleanup(func() {
		minioAdmin(t, http.MethodDelete, "remove-canned-policy", url.Values{"name": {policyName}}, nil)
	})
	body := fmt.Sprintf(`{"secretKey":%q,"status":"enabled"}`, secret)
	minioAdmin(t, http.MethodPut, "add-user", url.Values{"accessKey": {user}},
		madminEncrypt(env.Get("AWS_SECRET_ACCESS_KEY"), []byte(body)))
	t.Cleanup(func() { minioAdmin(t, http.MethodDelete, "remove-user", url.Values{"accessKey": {user}}, nil) })
	minioAdmin(t, http.MethodPut, "set-user-or-group-policy",
		url.Values{"policyName": {policyName}, "userOrGroup": {user}, "isGroup": {"false"}}, nil)
	return user, secret
}

// minioAdmin calls /minio/admin/v3/<path> as the stack's root user.
func minioAdmin(t testing.TB, method, path string, query url.Values, body []byte) {
	t.Helper()
	u := env.Get("S3_ENDPOINT") + "/minio/admin/v3/" + path + "?" + query.Encode()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	sum := sha256.Sum256(body)
	req.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:]))
	req = signer.SignV4(*req, env.Get("AWS_ACCESS_KEY_ID"), env.Get("AWS_SECRET_ACCESS_KEY"), "", "")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("MinIO admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("MinIO admin %s %s: %s: %s", method, path, resp.Status, msg)
	}
}

// madminEncrypt is madmin-go's EncryptData in its PBKDF2 + AES-256-GCM
// variant (id 0x02), which MinIO's admin API accepts for request bodies:
// salt(32) ‖ 0x02 ‖ nonce(8) ‖ one final sio-go DARE fragment. Only for
// bodies under sio's 16 KiB fragment size.
func madminEncrypt(password string, data []byte) []byte {
	if len(data) >= 1<<14 {
		panic("madminEncrypt: body too large for a single fragment")
	}
	salt := make([]byte, 32)
	rand.Read(salt)
	key, err := pbkdf2.Key(sha256.New, password, salt, 8192, 32)
	if err != nil {
		panic(err)
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		panic(err)
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce[:8])
	// sio-go: the associated data of every fragment is a flag byte and the
	// tag of an empty message sealed with sequence number 0; the final
	// fragment has flag 0x80 and (here, the only one) sequence number 1.
	ad := aead.Seal([]byte{0x00}, nonce, nil, nil)
	ad[0] = 0x80
	binary.LittleEndian.PutUint32(nonce[8:], 1)
	out := append(append(append([]byte{}, salt...), 0x02), nonce[:8]...)
	return aead.Seal(out, nonce, data, ad)
}

// prefix shows extra environment entries before a logged command line,
// names only: values may be secrets.
func prefix(extra []string) string {
	var names []string
	for _, e := range extra {
		k, _, _ := strings.Cut(e, "=")
		names = append(names, k+"=…")
	}
	if len(names) == 0 {
		return ""
	}
	return strings.Join(names, " ") + " "
}
