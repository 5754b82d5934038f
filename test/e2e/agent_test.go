//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lifeboat-backup/lifeboat/test/sim"
)

// agent is one `lifeboat run` process, running as the deployed
// ServiceAccount.
type agent struct {
	id      string
	exited  atomic.Bool
	cmd     *exec.Cmd
	metrics string // host:port
	mu      sync.Mutex
	out     bytes.Buffer
	done    chan error
}

func (a *agent) Write(p []byte) (int, error) { a.mu.Lock(); defer a.mu.Unlock(); return a.out.Write(p) }

func (a *agent) log() string { a.mu.Lock(); defer a.mu.Unlock(); return a.out.String() }

// saKubeconfig applies the deployed ServiceAccount and RBAC and returns a
// kubeconfig holding that ServiceAccount's own token (TokenRequest): the
// agent runs with exactly the deployed rights, not admin's.
func saKubeconfig(t *testing.T, w *world) string {
	t.Helper()
	lockDeployedRBAC(t) // TestDeploy applies and removes the same objects
	out, err := exec.Command("kubectl", "--kubeconfig", env.Get("KUBECONFIG"), "-n", "rook-ceph", "apply",
		"-f", "../../deploy/serviceaccount.yaml", "-f", "../../deploy/rbac-cluster.yaml", "-f", "../../deploy/rbac-namespace.yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("applying deploy/ RBAC: %v\n%s", err, out)
	}
	exp := int64(3600)
	tr, err := w.sim.Kube.CoreV1().ServiceAccounts("rook-ceph").CreateToken(context.Background(), "lifeboat",
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for rook-ceph/lifeboat: %v", err)
	}
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: stack, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: lifeboat, user: {token: %q}}]
contexts: [{name: lifeboat, context: {cluster: stack, user: lifeboat}}]
current-context: lifeboat
`, env.Get("KUBE_APISERVER"), env.Get("KUBE_CA_FILE"), tr.Status.Token)
	p := filepath.Join(t.TempDir(), "kubeconfig")
	writeFile(t, p, kc)
	return p
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// agentWorld is a world for agent tests: S3 credentials in the
// environment, the deployed ServiceAccount's kubeconfig, and a bucket
// removed at the end.
func agentWorld(t *testing.T) (*world, string, string) {
	w := newWorld(t)
	t.Setenv("AWS_ACCESS_KEY_ID", env.Get("AWS_ACCESS_KEY_ID"))
	t.Setenv("AWS_SECRET_ACCESS_KEY", env.Get("AWS_SECRET_ACCESS_KEY"))
	return w, saKubeconfig(t, w), removedAtEnd(t, "agent-"+w.id).name
}

// agentConfig writes the agent's config file for a world and bucket.
func agentConfig(t *testing.T, bucket string, extra string) string {
	p := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, p, fmt.Sprintf(`s3: {endpoint: %q, bucket: %q, createBucket: true}
parallel: 4
agent:
  workers: 2
  verifyInterval: 2s
%s`, env.Get("S3_ENDPOINT"), bucket, extra))
	return p
}

// startAgent runs `lifeboat run` for a world with the stack's S3
// credentials; args are more flags (a later --log-level wins over debug).
func startAgent(t *testing.T, w *world, kubeconfig, config, identity string, args ...string) *agent {
	t.Helper()
	return startAgentWith(t, s3Env(env.Get("AWS_ACCESS_KEY_ID"), env.Get("AWS_SECRET_ACCESS_KEY")), w, kubeconfig, config, identity, args...)
}

// s3Env is the environment that gives lifeboat S3 credentials.
func s3Env(user, secret string) []string {
	return []string{"AWS_ACCESS_KEY_ID=" + user, "AWS_SECRET_ACCESS_KEY=" + secret}
}

// startAgentWith is startAgent with the S3 credentials in creds (s3Env).
func startAgentWith(t *testing.T, creds []string, w *world, kubeconfig, config, identity string, args ...string) *agent {
	t.Helper()
	a := &agent{id: identity, metrics: freePort(t), done: make(chan error, 1)}
	base := []string{"run", "--config", config, "--kubeconfig", kubeconfig, "--driver-suffix", w.driver,
		"--identity", identity, "--metrics-address", a.metrics, "--log-level", "debug"}
	a.cmd = exec.Command(lifeboat, append(base, args...)...)
	a.cmd.Env = append(os.Environ(), creds...)
	a.cmd.Stdout, a.cmd.Stderr = a, a
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { err := a.cmd.Wait(); a.exited.Store(true); a.done <- err }()
	t.Cleanup(func() {
		_ = a.cmd.Process.Kill()
		<-a.done
		if t.Failed() {
			t.Logf("agent %s log:\n%s", identity, a.log())
		}
	})
	return a
}

// scrape reads the agent's /metrics.
func (a *agent) scrape() (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get("http://" + a.metrics + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// value is the metric's value for the given label pairs, or -1.
func value(mf map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := mf[name]
	if f == nil {
		return -1
	}
	for _, m := range f.Metric {
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			ok = ok && found
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// waitFor polls cond until it holds or the timeout passes; it fails at
// once if one of the agents it watches has exited.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool, watch ...*agent) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		for _, a := range watch {
			if a.exited.Load() {
				t.Fatalf("agent %s exited while waiting for %s:\n%s", a.id, what, a.log())
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// initRepo creates the repository the agent works with.
func initRepo(t *testing.T, bucket string) {
	t.Helper()
	r := runLifeboat(t, "repo", "init", "--s3-endpoint", env.Get("S3_ENDPOINT"), "--s3-bucket", bucket, "--s3-create-bucket")
	if r.code != 0 {
		t.Fatalf("repo init: %s", r.stderr)
	}
}

func (w *world) annotations(name string) map[string]string {
	vsc, err := w.sim.Snap.SnapshotV1().VolumeSnapshotContents().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		w.t.Fatalf("reading VolumeSnapshotContent %s: %v", name, err)
	}
	return vsc.Annotations
}

func (w *world) leader(a *agent) bool {
	mf, err := a.scrape()
	return err == nil && value(mf, "lifeboat_leader") == 1
}

// backupsOf lists the backups of a snapshot handle in the stack's bucket.
func backupsOf(t *testing.T, bucket, h string) []string {
	t.Helper()
	return backupsIn(t, []string{"--s3-endpoint", env.Get("S3_ENDPOINT"), "--s3-bucket", bucket}, h)
}

// backupsIn lists the backups of a snapshot handle in the repository the
// flags name.
func backupsIn(t *testing.T, repo []string, h string) []string {
	t.Helper()
	r := runLifeboat(t, append([]string{"backups", "list", "-o", "json"}, repo...)...)
	if r.code != 0 {
		t.Fatalf("backups list: %s", r.stderr)
	}
	var list []struct {
		ID     string
		Source map[string]string
	}
	mustJSON(t, r.stdout, &list)
	var ids []string
	for _, b := range list {
		if b.Source["snapshotHandle"] == h {
			ids = append(ids, b.ID)
		}
	}
	return ids
}

// restoreAndCompare restores a backup from the stack's MinIO into the
// stack's cluster and checks it against the snapshot in Ceph; extra are more
// repository flags.
func restoreAndCompare(t *testing.T, w *world, bucket, id string, s *sim.Snapshot, extra ...string) {
	t.Helper()
	restoreAndCompareEnv(t, w, nil, id, s, append([]string{"--s3-endpoint", env.Get("S3_ENDPOINT"), "--s3-bucket", bucket}, extra...)...)
}

// restoreAndCompareEnv is restoreAndCompare with more environment (S3
// credentials) and the repository flags in full.
func restoreAndCompareEnv(t *testing.T, w *world, extraEnv []string, id string, s *sim.Snapshot, repoFlags ...string) {
	t.Helper()
	want, err := w.sim.ReadSnapshotSHA256(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	target := "restored-" + uuid.NewString()[:8]
	r := runEnv(t, extraEnv, append([]string{"restore", id, "--to", w.spec(target), "--ceph-conf", env.Get("CEPH_CONF")}, repoFlags...)...)
	if r.code != 0 {
		t.Fatalf("restore %s: %s", id, r.stderr)
	}
	got, err := w.sim.ImageSHA256(context.Background(), target, "")
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("backup %s restores to sha256 %s, the snapshot is %s", id, got, want)
	}
}

func TestAgentExportsVeleroSnapshots(t *testing.T) {
	w, kc, bucket := agentWorld(t)
	vol := w.volume("db", 32*MiB)
	labelled := w.snapshot(vol, "nightly")
	unlabelled := w.snapshot(vol, "")

	initRepo(t, bucket)
	a := startAgent(t, w, kc, agentConfig(t, bucket, ""), "replica-a")
	waitFor(t, "the labelled snapshot to be exported", 90*time.Second, func() bool {
		return w.annotations(labelled.ContentName)["lifeboat.io/phase"] == "Exported"
	}, a)
	ann := w.annotations(labelled.ContentName)
	if ann["lifeboat.io/verified"] != "OK" || ann["lifeboat.io/backup-id"] == "" || ann["lifeboat.io/exported-at"] == "" {
		t.Errorf("annotations %v", ann)
	}
	for k := range w.annotations(unlabelled.ContentName) {
		if strings.HasPrefix(k, "lifeboat.io/") {
			t.Errorf("the snapshot without velero.io/backup-name got %s", k)
		}
	}
	// Metrics, scraped and parsed: one export, both snapshots verified OK.
	waitFor(t, "verification metrics", 20*time.Second, func() bool {
		mf, err := a.scrape()
		return err == nil && value(mf, "lifeboat_snapshots", "status", "OK") == 2
	}, a)
	mf, err := a.scrape()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"lifeboat_exports_total", []string{"result", "success"}, 1},
		{"lifeboat_exports_total", []string{"result", "failure"}, 0},
		{"lifeboat_leader", nil, 1},
		{"lifeboat_objectstore_up", nil, 1},
		{"lifeboat_ceph_up", []string{"cluster", w.id}, 1},
		{"lifeboat_orphan_images", nil, 0},
		{"lifeboat_snapshots", []string{"status", "Problem"}, 0},
		{"lifeboat_export_duration_seconds", nil, 1},
		{"lifeboat_verify_problems", []string{"code", "ImageNotFound"}, 0},
	} {
		if got := value(mf, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if v := value(mf, "lifeboat_export_bytes_total", "kind", "read"); v < float64(8*MiB) {
		t.Errorf("lifeboat_export_bytes_total{kind=read} = %v", v)
	}
	if v := value(mf, "lifeboat_last_export_timestamp_seconds", "namespace", w.id, "pvc", "db"); v < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("lifeboat_last_export_timestamp_seconds = %v", v)
	}
	if value(mf, "workqueue_adds_total", "name", "volumesnapshotcontents") < 2 || mf["go_goroutines"] == nil || mf["process_resident_memory_bytes"] == nil {
		t.Error("workqueue, Go or process metrics missing")
	}
	// Events on the VolumeSnapshotContent.
	evs, err := w.sim.Kube.CoreV1().Events("").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + labelled.ContentName})
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]bool{}
	for _, e := range evs.Items {
		reasons[e.Reason] = true
	}
	if !reasons["Exported"] {
		t.Errorf("no Exported event on %s: %v", labelled.ContentName, reasons)
	}
	restoreAndCompare(t, w, bucket, ann["lifeboat.io/backup-id"], labelled)

	// SIGTERM: a clean stop, soon.
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-a.done:
		a.done <- err
		if err != nil {
			t.Errorf("agent exited with %v after SIGTERM", err)
		}
	case <-time.After(15 * time.Second):
		t.Error("agent did not stop within 15s of SIGTERM")
	}
	// Secrets never reach the log, even at debug level.
	log := a.log()
	for name, secret := range map[string]string{"S3 secret key": env.Get("AWS_SECRET_ACCESS_KEY"), "cephx key": env.Get("CEPH_CSI_KEY")} {
		if strings.Contains(log, secret) {
			t.Errorf("the %s appears in the agent's log", name)
		}
	}
}

// TestAgentLeaderKilledMidExport: two replicas, exactly one works; killing
// it in the middle of an export hands over to the other, and the snapshot
// ends up exported exactly once, restorable bit-exactly.
func TestAgentLeaderKilledMidExport(t *testing.T) {
	w, kc, bucket := agentWorld(t)
	ctx := context.Background()
	vol, err := w.sim.CreateVolume(ctx, w.id, "big", 512*MiB)
	if err != nil {
		t.Fatal(err)
	}
	if err := vol.Fill(ctx, []sim.Region{{Off: 0, Len: 384 * MiB, Kind: sim.Random}}, 3); err != nil {
		t.Fatal(err)
	}
	initRepo(t, bucket)
	cfg := agentConfig(t, bucket, "")
	a := startAgent(t, w, kc, cfg, "replica-a", "--parallel", "1")
	waitFor(t, "replica-a to lead", 40*time.Second, func() bool { return w.leader(a) }, a)
	b := startAgent(t, w, kc, cfg, "replica-b", "--parallel", "1")
	waitFor(t, "replica-b to serve metrics", 20*time.Second, func() bool { _, err := b.scrape(); return err == nil }, b)
	if w.leader(b) {
		t.Fatal("both replicas lead")
	}
	s := w.snapshot(vol, "nightly")
	waitFor(t, "replica-a to start exporting", 60*time.Second, func() bool {
		return w.annotations(s.ContentName)["lifeboat.io/phase"] == "Exporting"
	}, a, b)
	time.Sleep(500 * time.Millisecond)
	_ = a.cmd.Process.Kill()
	killed := time.Now()
	waitFor(t, "replica-b to take over", 30*time.Second, func() bool { return w.leader(b) }, b)
	t.Logf("replica-b leads %.1fs after replica-a was killed", time.Since(killed).Seconds())
	waitFor(t, "the snapshot to be exported", 120*time.Second, func() bool {
		return w.annotations(s.ContentName)["lifeboat.io/phase"] == "Exported"
	}, b)
	ids := backupsOf(t, bucket, s.Handle)
	if len(ids) != 1 {
		t.Fatalf("%d backups of the snapshot, want exactly 1: %v", len(ids), ids)
	}
	if id := w.annotations(s.ContentName)["lifeboat.io/backup-id"]; id != ids[0] {
		t.Errorf("annotation backup-id %s, repository has %s", id, ids[0])
	}
	mf, _ := b.scrape()
	if got := value(mf, "lifeboat_exports_total", "result", "success"); got != 1 {
		t.Errorf("replica-b exports_total{success} = %v, want 1", got)
	}
	restoreAndCompare(t, w, bucket, ids[0], s)
}

// TestAgentRetention: with agent.retention keeping one backup per volume,
// the second export of a PVC forgets the first backup; its snapshot is
// marked Forgotten and is not exported again, not even by a new agent that
// rebuilds its view from the repository.
func TestAgentRetention(t *testing.T) {
	w, kc, bucket := agentWorld(t)
	vol := w.volume("logs", 16*MiB)
	initRepo(t, bucket)
	cfg := agentConfig(t, bucket, "  retention: {keepLast: 1}\n")
	exported := func(s *sim.Snapshot) func() bool {
		return func() bool { return w.annotations(s.ContentName)["lifeboat.io/phase"] == "Exported" }
	}
	a := startAgent(t, w, kc, cfg, "replica-a")
	first := w.snapshot(vol, "monday")
	waitFor(t, "the first snapshot to be exported", 90*time.Second, exported(first), a)
	second := w.snapshot(vol, "tuesday")
	waitFor(t, "the second snapshot to be exported", 90*time.Second, exported(second), a)
	waitFor(t, "the first snapshot to be marked Forgotten", 30*time.Second, func() bool {
		return w.annotations(first.ContentName)["lifeboat.io/phase"] == "Forgotten"
	}, a)
	if ids := backupsOf(t, bucket, first.Handle); len(ids) != 0 {
		t.Fatalf("the first snapshot still has backups %v", ids)
	}
	ids := backupsOf(t, bucket, second.Handle)
	if len(ids) != 1 || w.annotations(second.ContentName)["lifeboat.io/backup-id"] != ids[0] {
		t.Fatalf("backups of the second snapshot: %v, annotations %v", ids, w.annotations(second.ContentName))
	}
	// Retention ranks by when Ceph took the snapshot, which the manifest records.
	r := runLifeboat(t, "backups", "show", ids[0], "-o", "json", "--s3-endpoint", env.Get("S3_ENDPOINT"), "--s3-bucket", bucket)
	var shown struct {
		Created time.Time
		Source  map[string]string
	}
	mustJSON(t, r.stdout, &shown)
	if taken, err := time.Parse(time.RFC3339Nano, shown.Source["snapshotTaken"]); err != nil || taken.After(shown.Created) ||
		shown.Created.Sub(taken) > time.Minute {
		t.Errorf("snapshotTaken %q (%v), backup created %s", shown.Source["snapshotTaken"], err, shown.Created)
	}
	mf, err := a.scrape()
	if err != nil {
		t.Fatal(err)
	}
	if got := value(mf, "lifeboat_retention_forgets_total", "result", "forgotten"); got != 1 {
		t.Errorf("lifeboat_retention_forgets_total{forgotten} = %v, want 1", got)
	}

	// A new agent learns what is exported from the repository alone: the
	// first snapshot's backup is not there, yet it must not export it again.
	_ = a.cmd.Process.Kill()
	b := startAgent(t, w, kc, cfg, "replica-b")
	waitFor(t, "replica-b to work through both snapshots and verify them", 60*time.Second, func() bool {
		mf, err := b.scrape()
		q := []string{"name", "volumesnapshotcontents"}
		return err == nil && value(mf, "lifeboat_snapshots", "status", "OK") == 2 && value(mf, "workqueue_adds_total", q...) >= 2 &&
			value(mf, "workqueue_depth", q...) == 0 && value(mf, "workqueue_unfinished_work_seconds", q...) == 0
	}, b)
	mf, err = b.scrape()
	if err != nil {
		t.Fatal(err)
	}
	if got := value(mf, "lifeboat_exports_total", "result", "success"); got != 0 {
		t.Errorf("replica-b exported %v snapshots, want none", got)
	}
	if ids := backupsOf(t, bucket, first.Handle); len(ids) != 0 || w.annotations(first.ContentName)["lifeboat.io/phase"] != "Forgotten" {
		t.Errorf("after a restart: backups %v of the forgotten snapshot, phase %q", ids, w.annotations(first.ContentName)["lifeboat.io/phase"])
	}
	restoreAndCompare(t, w, bucket, ids[0], second)
}

// TestAgentRetentionSeesForgets: a backup forgotten by hand while the
// agent runs does not count for its retention policy (keep the last two),
// so the policy does not forget one it should now keep.
func TestAgentRetentionSeesForgets(t *testing.T) {
	w, kc, bucket := agentWorld(t)
	vol := w.volume("web", 16*MiB)
	initRepo(t, bucket)
	a := startAgent(t, w, kc, agentConfig(t, bucket, "  retention: {keepLast: 2}\n"), "replica-a")
	backupOf := func(s *sim.Snapshot) string {
		waitFor(t, "an export of "+s.ContentName, 90*time.Second, func() bool {
			return w.annotations(s.ContentName)["lifeboat.io/phase"] == "Exported"
		}, a)
		return w.annotations(s.ContentName)["lifeboat.io/backup-id"]
	}
	first := backupOf(w.snapshot(vol, "one"))
	second := backupOf(w.snapshot(vol, "two"))
	s3 := []string{"--s3-endpoint", env.Get("S3_ENDPOINT"), "--s3-bucket", bucket}
	if r := runLifeboat(t, append([]string{"backups", "forget", second}, s3...)...); r.code != 0 {
		t.Fatalf("forget %s: %s", second, r.stderr)
	}
	third := backupOf(w.snapshot(vol, "three"))
	r := runLifeboat(t, append([]string{"backups", "list", "-o", "json"}, s3...)...)
	var list []struct{ ID string }
	mustJSON(t, r.stdout, &list)
	var ids []string
	for _, b := range list {
		ids = append(ids, b.ID)
	}
	if want := []string{first, third}; !slices.Equal(ids, want) {
		t.Fatalf("backups after the third export: %v, want %v (the last two that exist)", ids, want)
	}
}

// TestAgentRejectsBadSettings: every invalid setting is a clear error at
// start and a non-zero exit.
func TestAgentRejectsBadSettings(t *testing.T) {
	w := newWorld(t)
	t.Setenv("AWS_ACCESS_KEY_ID", env.Get("AWS_ACCESS_KEY_ID"))
	t.Setenv("AWS_SECRET_ACCESS_KEY", env.Get("AWS_SECRET_ACCESS_KEY"))
	bucket := removedAtEnd(t, "agent-"+w.id).name
	good := agentConfig(t, bucket, "")
	for name, c := range map[string]struct {
		config  string
		args    []string
		mention string
	}{
		"bad S3 endpoint": {config: writeTemp(t, `s3: {endpoint: "ftp://nowhere", bucket: b}`), mention: "endpoint"},
		"unknown key":     {config: writeTemp(t, "s3: {endpoint: \"http://127.0.0.1:1\", bucket: b}\nagent: {wrokers: 2}\n"), mention: "wrokers"},
		"bad selector":    {config: good, args: []string{"--selector", "a in (b"}, mention: "selector"},
		"missing Secret":  {config: good, args: []string{"--ceph-secret", "no-such-secret"}, mention: "no-such-secret"},
		"bad interval":    {config: writeTemp(t, fmt.Sprintf("s3: {endpoint: %q, bucket: %q}\nagent: {verifyInterval: soon}\n", env.Get("S3_ENDPOINT"), bucket)), mention: "verifyInterval"},
		"no workers":      {config: good, args: []string{"--workers", "0"}, mention: "workers"},
		"empty retention": {config: writeTemp(t, fmt.Sprintf("s3: {endpoint: %q, bucket: %q}\nagent: {retention: {keepLast: 0}}\n", env.Get("S3_ENDPOINT"), bucket)), mention: "keeps nothing"},
	} {
		args := append([]string{"run", "--config", c.config, "--metrics-address", freePort(t)}, c.args...)
		r := w.run(args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.mention) {
			t.Errorf("%s: exit %d, stderr %q (want 2 and a mention of %q)", name, r.code, r.stderr, c.mention)
		}
	}
}

func writeTemp(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), uuid.NewString()+".yaml")
	writeFile(t, p, s)
	return p
}
