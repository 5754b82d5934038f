//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/lifeboat-backup/lifeboat/test/sim"
)

// The Prometheus Operator release whose CRDs (ServiceMonitor,
// PrometheusRule) the test installs, from the Go module proxy into the Go
// module cache (downloaded once, then read from the cache). An explicit
// version: the proxy refuses @latest for this module.
const promOperatorModule = "github.com/prometheus-operator/prometheus-operator@v0.85.0"

const (
	deployNS  = "rook-ceph"
	deploySA  = "lifeboat"
	deployWho = "system:serviceaccount:" + deployNS + ":" + deploySA
)

// TestDeploy applies deploy/ and deploy/examples/ to the stack's real API
// server and checks what the API server validates and authorizes (no
// controllers run: the Deployment gets no pods):
//   - the Deployment's pod template as stored, and the restricted Pod
//     Security Standard (PodSecurity admission, dry-run pod);
//   - the Service, ServiceMonitor and PrometheusRule fit together;
//   - RBAC, with the ServiceAccount's own token: everything the agent needs
//     succeeds, everything else is Forbidden;
//   - `lifeboat run` with that token and the example config exports a
//     Velero-style snapshot without a single Forbidden, and exposes every
//     metric the alerts and the Grafana dashboard use.
//
// What it applies or creates is deleted at the end, except the
// ServiceAccount and RBAC objects when they existed before (the agent tests
// use them too: see depSharedKinds); the monitoring CRDs stay installed
// (like the snapshot CRDs, they are cluster furniture). Runs of it and of
// other tests using the deployed ServiceAccount in other processes on the
// same stack are serialized by lockDeployedRBAC.
func TestDeploy(t *testing.T) {
	start := time.Now()
	defer func() { t.Logf("TestDeploy took %s", time.Since(start).Round(time.Millisecond)) }()
	ctx := context.Background()
	deployDir, err := filepath.Abs("../../deploy")
	if err != nil {
		t.Fatal(err)
	}

	lockDeployedRBAC(t)
	depInstallMonitoringCRDs(t)

	// Fixtures: a Velero-style snapshot of a PVC in the world's own
	// namespace (newWorld also installs Rook's ConfigMap and Secret in
	// rook-ceph), and decoys the agent must not read.
	w := newWorld(t)
	vol := w.volume("data", 32*MiB)
	snap := w.snapshot(vol, "nightly")
	admin := w.sim.Kube
	depFixtures(t, admin, w.id)

	// Apply, and delete what was applied at the end.
	depApply(t, deployDir)

	dep, err := admin.AppsV1().Deployments(deployNS).Get(ctx, "lifeboat", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the applied Deployment: %v", err)
	}
	cj, err := admin.BatchV1().CronJobs(deployNS).Get(ctx, "lifeboat-prune", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the applied prune CronJob: %v", err)
	}
	t.Run("pod template", func(t *testing.T) { depCheckPodTemplate(t, dep) })
	t.Run("restricted pod security", func(t *testing.T) { depCheckPodSecurity(t, admin, w.id, dep.Spec.Template) })
	t.Run("prune cronjob", func(t *testing.T) { depCheckPruneCronJob(t, admin, w.id, dep, cj) })
	t.Run("service and monitoring", func(t *testing.T) { depCheckMonitoring(t, admin, dep) })
	t.Run("overlay without the operator", func(t *testing.T) { depCheckNoOperatorOverlay(t, deployDir) })

	// The ServiceAccount's own token, as a pod would have it.
	cfg := depServiceAccountConfig(t, admin)
	saKube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	saSnap, err := snapclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("rbac allows what the agent needs", func(t *testing.T) {
		depCheckAllowed(t, admin, saKube, saSnap, w.id, vol.PVC, snap.ContentName, snap.VSName)
	})
	t.Run("rbac forbids everything else", func(t *testing.T) {
		depCheckForbidden(t, saKube, saSnap, w.id, vol.PVC, snap.ContentName, snap.VSName)
	})
	t.Run("kubectl auth can-i agrees", func(t *testing.T) { depCheckCanI(t, w.id) })
	t.Run("agent runs with the deployed rbac and example config", func(t *testing.T) {
		depRunAgent(t, w, cfg, dep, cj, deployDir, snap.ContentName, vol.PVC)
	})
}

// depSharedKinds are the kinds of deploy/ that other e2e tests apply too
// (the agent tests run `lifeboat run` with the deployed ServiceAccount):
// TestDeploy deletes them only if they did not exist before it applied
// them, so that it never deletes a ServiceAccount, and with it the token,
// of an agent another test runs.
var depSharedKinds = []string{"serviceaccount/", "role.rbac.authorization.k8s.io/", "rolebinding.rbac.authorization.k8s.io/",
	"clusterrole.rbac.authorization.k8s.io/", "clusterrolebinding.rbac.authorization.k8s.io/"}

// depApply applies deploy/ and deploy/examples/, and deletes at the end
// what it applied (see depSharedKinds).
func depApply(t *testing.T, deployDir string) {
	t.Helper()
	examples := filepath.Join(deployDir, "examples")
	names := func(src ...string) []string {
		out, err := depKubectl(append([]string{"get", "-o", "name", "--ignore-not-found"}, src...)...)
		if err != nil {
			t.Errorf("kubectl get %v: %v\n%s", src, err, out)
		}
		return strings.Fields(out)
	}
	before := names("-k", deployDir)
	t.Cleanup(func() {
		if out, err := depKubectl("delete", "--ignore-not-found", "--wait=false", "-f", examples); err != nil {
			t.Errorf("kubectl delete -f %s: %v\n%s", examples, err, out)
		}
		var del []string
		for _, n := range names("-k", deployDir) {
			shared := slices.ContainsFunc(depSharedKinds, func(k string) bool { return strings.HasPrefix(n, k) })
			if !shared || !slices.Contains(before, n) {
				del = append(del, n)
			}
		}
		if len(del) == 0 {
			return
		}
		if out, err := depKubectl(append([]string{"delete", "-n", deployNS, "--ignore-not-found", "--wait=false"}, del...)...); err != nil {
			t.Errorf("kubectl delete %v: %v\n%s", del, err, out)
		}
	})
	for _, args := range [][]string{{"apply", "-k", deployDir}, {"apply", "-f", examples}} {
		out, err := depKubectl(args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
	}
}

// lockDeployedRBAC serializes, across test processes sharing the stack,
// the tests that use the deployed ServiceAccount and its one leader Lease
// (rook-ceph/lifeboat: the Role allows no other name). Held until the test
// ends.
func lockDeployedRBAC(t *testing.T) {
	t.Helper()
	dir := filepath.Join(sim.StackDir(), "locks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "deployed-rbac.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		if time.Now().After(deadline) {
			f.Close()
			t.Fatalf("another test process has held %s for 10 minutes", f.Name())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock
}

// depKubectl runs kubectl as admin with a fresh discovery cache (CRDs this
// test installs must be seen at once).
func depKubectl(args ...string) (string, error) {
	kubectl := env.Get("LB_KUBECTL")
	if kubectl == "" {
		kubectl = "kubectl"
	}
	cache, err := os.MkdirTemp("", "lifeboat-kubectl-cache-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(cache)
	cmd := exec.Command(kubectl, append([]string{"--kubeconfig", env.Get("KUBECONFIG"), "--cache-dir", cache}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// depInstallMonitoringCRDs installs the ServiceMonitor and PrometheusRule
// CRDs from the prometheus-operator Go module (go mod download caches it in
// the module cache; it runs outside this module so go.mod is untouched).
func depInstallMonitoringCRDs(t *testing.T) {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", promOperatorModule)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GOWORK=off", "GO111MODULE=on")
	out, err := cmd.Output()
	var mod struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &mod); jerr != nil || mod.Error != "" || err != nil {
		t.Fatalf("go mod download %s (for the ServiceMonitor and PrometheusRule CRDs): %v %s %s", promOperatorModule, err, mod.Error, out)
	}
	crdDir := filepath.Join(mod.Dir, "example", "prometheus-operator-crd")
	out2, err := depKubectl("apply", "--server-side", "--force-conflicts", "--field-manager", "lifeboat-e2e",
		"-f", filepath.Join(crdDir, "monitoring.coreos.com_servicemonitors.yaml"),
		"-f", filepath.Join(crdDir, "monitoring.coreos.com_prometheusrules.yaml"))
	if err != nil {
		t.Fatalf("installing the monitoring CRDs: %v\n%s", err, out2)
	}
	if out, err := depKubectl("wait", "--for=condition=Established", "--timeout=60s",
		"crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com"); err != nil {
		t.Fatalf("monitoring CRDs not established: %v\n%s", err, out)
	}
}

// Names of the objects depFixtures makes, which the ServiceAccount must
// not be able to read although they exist.
func depDecoy(id string) string { return "lifeboat-e2e-decoy-" + id }

// depFixtures makes Secrets and ConfigMaps the agent must not read: an
// unrelated Secret in rook-ceph, and Secrets and a ConfigMap with the very
// names it may read in rook-ceph, but in the world's namespace.
func depFixtures(t *testing.T, admin kubernetes.Interface, ns string) {
	t.Helper()
	ctx := context.Background()
	mk := func(namespace, name string) {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
			StringData: map[string]string{"secret": "must not be readable by lifeboat"}}
		if _, err := admin.CoreV1().Secrets(namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("decoy Secret %s/%s: %v", namespace, name, err)
		}
		t.Cleanup(func() {
			_ = admin.CoreV1().Secrets(namespace).Delete(context.Background(), name, metav1.DeleteOptions{})
		})
	}
	mk(deployNS, depDecoy(ns))
	mk(ns, "rook-csi-rbd-provisioner")
	mk(ns, "lifeboat-s3")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "rook-ceph-csi-config", Namespace: ns}}
	if _, err := admin.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("decoy ConfigMap: %v", err)
	}
	t.Cleanup(func() {
		_ = admin.CoreV1().ConfigMaps(ns).Delete(context.Background(), cm.Name, metav1.DeleteOptions{})
	})
}

func depGetJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out, err := depKubectl(append(args, "-o", "json")...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
}

// depCheckNoOperatorOverlay renders the overlay deploy/README.md gives for
// clusters without the Prometheus Operator: everything but its objects.
func depCheckNoOperatorOverlay(t *testing.T, deployDir string) {
	dir := t.TempDir()
	rel, err := filepath.Rel(dir, deployDir)
	if err != nil {
		t.Fatal(err)
	}
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
images:
  - name: ghcr.io/lifeboat-backup/lifeboat
    newTag: v0.0.0-e2e
patches:
  - patch: |-
      $patch: delete
      apiVersion: monitoring.coreos.com/v1
      kind: ServiceMonitor
      metadata: {name: lifeboat, namespace: rook-ceph}
  - patch: |-
      $patch: delete
      apiVersion: monitoring.coreos.com/v1
      kind: PrometheusRule
      metadata: {name: lifeboat, namespace: rook-ceph}
`, rel)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := depKubectl("kustomize", dir)
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	var kinds []string
	for _, l := range strings.Split(out, "\n") {
		if k, ok := strings.CutPrefix(l, "kind: "); ok {
			kinds = append(kinds, k)
		}
	}
	sort.Strings(kinds)
	want := []string{"ClusterRole", "ClusterRoleBinding", "CronJob", "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"}
	if !slices.Equal(kinds, want) || !strings.Contains(out, "image: ghcr.io/lifeboat-backup/lifeboat:v0.0.0-e2e") {
		t.Errorf("overlay renders kinds %v, want %v, with the overlay's image tag:\n%s", kinds, want, out)
	}
}
