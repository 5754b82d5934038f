//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// TestDeploy running the agent as the deployed ServiceAccount: its log,
// its metrics and the dashboard's expressions.

// depLog is a goroutine-safe buffer for the agent's output.
type depLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *depLog) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *depLog) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// depRunAgent runs `lifeboat run` as the deployed ServiceAccount (its
// token, exactly the RBAC applied from deploy/) with the example config
// (only the S3 endpoint, bucket and key file changed), as the pod would.
func depRunAgent(t *testing.T, w *world, cfg *rest.Config, dep *appsv1.Deployment, cj *batchv1.CronJob, deployDir, content, pvc string) {
	ctx := context.Background()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	writeFile(t, kubeconfig, fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: stack, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: lifeboat, user: {token: %q}}]
contexts: [{name: lifeboat, context: {cluster: stack, user: lifeboat}}]
current-context: lifeboat
`, cfg.Host, cfg.TLSClientConfig.CAFile, cfg.BearerToken))

	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict([]byte(readFile(t, filepath.Join(deployDir, "examples", "config.yaml"))), &cm); err != nil {
		t.Fatalf("examples/config.yaml: %v", err)
	}
	var conf map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &conf); err != nil {
		t.Fatalf("examples/config.yaml config.yaml: %v", err)
	}
	s3, _ := conf["s3"].(map[string]any)
	agentConf, _ := conf["agent"].(map[string]any)
	if s3 == nil || agentConf == nil {
		t.Fatalf("examples/config.yaml lacks s3 or agent: %v", conf)
	}
	if conf["encryptionKeyFile"] != "/etc/lifeboat/key/key" || agentConf["leaseName"] != depLease {
		t.Errorf("example config: encryptionKeyFile %v (the Deployment mounts /etc/lifeboat/key/key), leaseName %v (the Role names %s)",
			conf["encryptionKeyFile"], agentConf["leaseName"], depLease)
	}
	if addr, _ := agentConf["metricsAddress"].(string); !strings.HasSuffix(addr, ":9090") {
		t.Errorf("example config metricsAddress %q, the Deployment's metrics port is 9090", addr)
	}
	s3["endpoint"], s3["bucket"], s3["createBucket"] = env.Get("S3_ENDPOINT"), removedAtEnd(t, "deploy-"+w.id).name, true
	keyFile := filepath.Join(dir, "key")
	writeFile(t, keyFile, "lifeboat-e2e-"+w.id+"-key\n")
	conf["encryptionKeyFile"] = keyFile
	raw, err := yaml.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.yaml")
	writeFile(t, config, string(raw))

	t.Setenv("AWS_ACCESS_KEY_ID", env.Get("AWS_ACCESS_KEY_ID"))
	t.Setenv("AWS_SECRET_ACCESS_KEY", env.Get("AWS_SECRET_ACCESS_KEY"))
	if r := runLifeboat(t, "repo", "init", "--config", config); r.code != 0 {
		t.Fatalf("lifeboat repo init with the example config: exit %d\n%s", r.code, r.stderr)
	}

	depFreeLease(t, w.sim.Kube)
	addr := depFreeAddr(t)
	identity := "lifeboat-e2e-" + w.id
	cmd := exec.Command(lifeboat, "run", "--config", config, "--kubeconfig", kubeconfig,
		"--driver-suffix", w.driver, "--metrics-address", addr)
	cmd.Env = append(os.Environ(), "POD_NAME="+identity)
	var log depLog
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("lifeboat run log:\n%s", log.String())
		}
		l, err := w.sim.Kube.CoordinationV1().Leases(deployNS).Get(context.Background(), depLease, metav1.GetOptions{})
		if err == nil && (l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || *l.Spec.HolderIdentity == identity) {
			_ = w.sim.Kube.CoordinationV1().Leases(deployNS).Delete(context.Background(), depLease, metav1.DeleteOptions{})
		}
	})

	// It leads, and exports the Velero snapshot.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		vsc, err := w.sim.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, content, metav1.GetOptions{})
		if err == nil && vsc.Annotations["lifeboat.io/phase"] == "Exported" {
			t.Logf("exported: backup %s", vsc.Annotations["lifeboat.io/backup-id"])
			break
		}
		select {
		case err := <-done:
			exited = true
			t.Fatalf("lifeboat run exited (%v) before exporting:\n%s", err, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no export of %s within 2 minutes (annotations %v)", content, vsc.GetAnnotations())
		}
		time.Sleep(250 * time.Millisecond)
	}
	if l, err := w.sim.Kube.CoordinationV1().Leases(deployNS).Get(ctx, depLease, metav1.GetOptions{}); err != nil ||
		l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != identity {
		t.Errorf("lease %s/%s: %v, holder %v, want %s", deployNS, depLease, err, l.Spec.HolderIdentity, identity)
	}

	// The prune CronJob's command works with the same config, beside the
	// idle agent.
	args := slices.Clone(cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Args)
	for i, a := range args {
		if a == "/etc/lifeboat/config.yaml" {
			args[i] = config
		}
	}
	if r := runLifeboat(t, args...); r.code != 0 || !strings.Contains(r.stdout, "1 backups: kept") {
		t.Errorf("the prune CronJob's command %v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
	}

	// The probes' paths, as the Deployment has them, answer 200.
	c := dep.Spec.Template.Spec.Containers[0]
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			continue
		}
		resp, err := http.Get("http://" + addr + p.HTTPGet.Path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %v %v", p.HTTPGet.Path, err, resp)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}

	// Every metric the alerts and the dashboard use is exposed, and every
	// label value they match on exists.
	samples := depScrape(t, addr)
	exprs := map[string]string{}
	for _, r := range depRules(t) {
		exprs["alert "+r.Alert] = r.Expr
	}
	for title, e := range depDashboardExprs(t, filepath.Join(deployDir, "grafana", "lifeboat.json")) {
		exprs["panel "+title] = e
	}
	names := regexp.MustCompile(`\b((?:lifeboat|workqueue|process|go)_[a-zA-Z0-9_]+)(\{[^}]*\})?`)
	matcher := regexp.MustCompile(`(\w+)\s*=\s*"([^"]*)"`)
	checked := map[string]bool{}
	for where, e := range exprs {
		for _, m := range names.FindAllStringSubmatch(e, -1) {
			name := m[1]
			lines := samples[name]
			if len(lines) == 0 {
				t.Errorf("%s uses %s, which lifeboat run does not expose", where, name)
				continue
			}
			checked[name] = true
			for _, lm := range matcher.FindAllStringSubmatch(m[2], -1) {
				if lm[1] == "job" {
					continue // a target label, added by Prometheus
				}
				want := lm[1] + `="` + lm[2] + `"`
				if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, want) }) {
					t.Errorf("%s matches %s{%s}, which no exposed sample has", where, name, want)
				}
			}
		}
	}
	t.Logf("%d metric names used by %d alerts and panels, all exposed", len(checked), len(exprs))
	// The PVC-namespace label the ServiceMonitor's honorLabels keeps.
	want := fmt.Sprintf(`namespace="%s",pvc="%s"`, w.id, pvc)
	if !slices.ContainsFunc(samples["lifeboat_last_export_timestamp_seconds"], func(l string) bool { return strings.Contains(l, want) }) {
		t.Errorf("no lifeboat_last_export_timestamp_seconds{%s}: %v", want, samples["lifeboat_last_export_timestamp_seconds"])
	}

	// A clean stop, and never a Forbidden on the way.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Errorf("lifeboat run exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("lifeboat run did not stop within 30s of SIGTERM")
	}
	if lower := strings.ToLower(log.String()); strings.Contains(lower, "forbidden") {
		t.Errorf("the agent was refused something by RBAC:\n%s", log.String())
	}
}

func depFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// depScrape reads /metrics: sample lines by metric name.
func depScrape(t *testing.T, addr string) map[string][]string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	samples := map[string][]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		samples[name] = append(samples[name], line)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return samples
}

// depDashboardExprs checks the Grafana dashboard's shape and returns its
// queries by panel title.
func depDashboardExprs(t *testing.T, path string) map[string]string {
	t.Helper()
	type panel struct {
		Title      string
		Type       string
		Datasource *struct{ Type, UID string }
		GridPos    *struct{ H, W, X, Y int } `json:"gridPos"`
		Targets    []struct{ Expr string }
		Panels     []json.RawMessage
	}
	var d struct {
		Title, UID string
		Templating struct {
			List []struct{ Name, Type string }
		}
		Panels []panel
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if d.Title == "" || d.UID == "" || vars["datasource"] != "datasource" {
		t.Errorf("%s: title %q, uid %q, variables %v: want a title, a uid and a datasource variable", path, d.Title, d.UID, vars)
	}
	exprs := map[string]string{}
	for i, p := range d.Panels {
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %d %q has no gridPos", i, p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %v, %d queries: want the ${datasource} variable and a query", p.Title, p.Datasource, len(p.Targets))
		}
		for j, q := range p.Targets {
			exprs[fmt.Sprintf("%q #%d", p.Title, j)] = q.Expr
		}
	}
	if len(exprs) < 10 {
		t.Errorf("the dashboard has only %d queries", len(exprs))
	}
	return exprs
}
