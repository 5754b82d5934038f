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
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

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

func depCheckPodTemplate(t *testing.T, dep *appsv1.Deployment) {
	errorf := t.Errorf
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		errorf("replicas = %v, want 2", dep.Spec.Replicas)
	}
	ps := dep.Spec.Template.Spec
	if ps.ServiceAccountName != deploySA {
		errorf("serviceAccountName = %q", ps.ServiceAccountName)
	}
	psc := ps.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		errorf("pod securityContext %+v: want runAsNonRoot, runAsUser 65532, seccomp RuntimeDefault", psc)
	}
	if len(ps.Containers) != 1 || len(ps.InitContainers) != 0 {
		t.Fatalf("%d containers, %d init containers: want exactly one container", len(ps.Containers), len(ps.InitContainers))
	}
	c := ps.Containers[0]
	if !strings.HasPrefix(c.Image, "ghcr.io/lifeboat-backup/lifeboat:") {
		errorf("image %q", c.Image)
	}
	if cmd := append(slices.Clone(c.Command), c.Args...); !slices.Equal(cmd, []string{"/usr/local/bin/lifeboat", "run", "--config", "/etc/lifeboat/config.yaml"}) {
		errorf("command %q", cmd)
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		errorf("no container securityContext")
	default:
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			errorf("allowPrivilegeEscalation is not false")
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			errorf("readOnlyRootFilesystem is not true")
		}
		if sc.Privileged != nil && *sc.Privileged {
			errorf("privileged")
		}
		if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
			errorf("capabilities %+v: want drop [ALL], add nothing", sc.Capabilities)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			errorf("container runs as root")
		}
	}
	lim, req := c.Resources.Limits, c.Resources.Requests
	if m := lim.Memory(); m.IsZero() || m.Cmp(resource.MustParse("256Mi")) > 0 || m.Cmp(resource.MustParse("128Mi")) < 0 {
		errorf("memory limit %v: want 128Mi..256Mi (peak RSS target 128 MiB)", m)
	}
	if req.Memory().IsZero() || req.Cpu().IsZero() || lim.Cpu().IsZero() {
		errorf("requests %v / limits %v: want cpu and memory requests and limits", req, lim)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["metrics"] != 9090 {
		errorf("ports %v: want metrics 9090", ports)
	}
	for _, p := range []struct {
		what  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path ||
			(p.probe.HTTPGet.Port.String() != "metrics" && p.probe.HTTPGet.Port.IntValue() != 9090) {
			errorf("%s probe %+v: want GET %s on the metrics port", p.what, p.probe, p.path)
		}
	}
	envFrom := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			envFrom[e.Name] = e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		}
		if strings.HasPrefix(e.Name, "AWS_") && e.Value != "" {
			errorf("env %s has a literal value: credentials belong in the Secret", e.Name)
		}
	}
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
		if envFrom[k] != "lifeboat-s3/"+k {
			errorf("env %s from %q, want Secret lifeboat-s3 key %s", k, envFrom[k], k)
		}
	}
	// Volumes: /tmp an emptyDir, /etc/lifeboat the config and optional key.
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	if m, ok := mounts["/tmp"]; !ok || vols[m.Name].EmptyDir == nil {
		errorf("/tmp is not an emptyDir: %+v", m)
	}
	m, ok := mounts["/etc/lifeboat"]
	if !ok || !m.ReadOnly || vols[m.Name].Projected == nil {
		t.Fatalf("/etc/lifeboat is not a read-only projected volume: %+v", m)
	}
	files := map[string]string{}
	for _, s := range vols[m.Name].Projected.Sources {
		switch {
		case s.ConfigMap != nil:
			for _, it := range s.ConfigMap.Items {
				files[it.Path] = "configmap " + s.ConfigMap.Name + "/" + it.Key
			}
		case s.Secret != nil:
			if s.Secret.Optional == nil || !*s.Secret.Optional {
				errorf("Secret %s is not optional: an unencrypted repository needs none", s.Secret.Name)
			}
			for _, it := range s.Secret.Items {
				files[it.Path] = "secret " + s.Secret.Name + "/" + it.Key
			}
		}
	}
	if files["config.yaml"] != "configmap lifeboat-config/config.yaml" || files["key/key"] != "secret lifeboat-encryption-key/key" {
		errorf("/etc/lifeboat holds %v", files)
	}
	for p := range mounts {
		if p != "/tmp" && p != "/etc/lifeboat" && !strings.HasPrefix(p, "/var/run/secrets/") {
			errorf("unexpected mount %s", p)
		}
	}
	for _, v := range ps.Volumes {
		if v.HostPath != nil {
			errorf("hostPath volume %s", v.Name)
		}
	}
	if ps.HostNetwork || ps.HostPID || ps.HostIPC {
		errorf("host namespaces shared")
	}
	// The replicas spread over nodes.
	aa := ps.Affinity
	if aa == nil || aa.PodAntiAffinity == nil {
		t.Fatal("no pod anti-affinity")
	}
	var terms []corev1.PodAffinityTerm
	terms = append(terms, aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution...)
	for _, wt := range aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
		terms = append(terms, wt.PodAffinityTerm)
	}
	spread := false
	for _, term := range terms {
		sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
		if err == nil && term.TopologyKey == "kubernetes.io/hostname" && sel.Matches(labels.Set(dep.Spec.Template.Labels)) {
			spread = true
		}
	}
	if !spread {
		errorf("no anti-affinity term on kubernetes.io/hostname selecting the pods themselves: %+v", terms)
	}
}

// depCheckPodSecurity creates, in dry-run, a pod from the Deployment's
// template in a namespace enforcing the restricted Pod Security Standard:
// the API server's PodSecurity admission accepts it. A negative control
// (the same pod allowed to escalate privileges) proves enforcement is on.
func depCheckPodSecurity(t *testing.T, admin kubernetes.Interface, ns string, tmpl corev1.PodTemplateSpec) {
	ctx := context.Background()
	patch := `{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":"restricted","pod-security.kubernetes.io/enforce-version":"latest"}}}`
	if _, err := admin.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// ServiceAccount admission wants the pod's ServiceAccount to exist there.
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: deploySA}},
		metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.CoreV1().ServiceAccounts(ns).Delete(context.Background(), deploySA, metav1.DeleteOptions{})
	})
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "lifeboat-psa-", Namespace: ns, Labels: tmpl.Labels},
		Spec:       *tmpl.Spec.DeepCopy(),
	}
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	if _, err := admin.CoreV1().Pods(ns).Create(ctx, pod, dry); err != nil {
		t.Errorf("the pod template is refused under the restricted Pod Security Standard: %v", err)
	}
	bad := pod.DeepCopy()
	yes := true
	bad.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = &yes
	_, err := admin.CoreV1().Pods(ns).Create(ctx, bad, dry)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "PodSecurity") {
		t.Errorf("negative control: a pod allowing privilege escalation got %v, want Forbidden by PodSecurity", err)
	}
}

// depCheckPruneCronJob: the prune CronJob never overlaps itself, runs
// under the restricted Pod Security Standard without a token, reads the
// same config and Secrets as the agent, and its pods are not the Service's.
func depCheckPruneCronJob(t *testing.T, admin kubernetes.Interface, ns string, dep *appsv1.Deployment, cj *batchv1.CronJob) {
	tmpl := cj.Spec.JobTemplate.Spec.Template
	if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent || tmpl.Spec.AutomountServiceAccountToken == nil || *tmpl.Spec.AutomountServiceAccountToken {
		t.Errorf("concurrencyPolicy %q, automountServiceAccountToken %v: want Forbid and false", cj.Spec.ConcurrencyPolicy, tmpl.Spec.AutomountServiceAccountToken)
	}
	c, agent := tmpl.Spec.Containers[0], dep.Spec.Template.Spec.Containers[0]
	if !slices.Equal(c.Args[:2], []string{"repo", "prune"}) || c.Image != agent.Image {
		t.Errorf("prune container: image %s, args %v", c.Image, c.Args)
	}
	volume := func(spec corev1.PodSpec) *corev1.Volume {
		for i := range spec.Volumes {
			if spec.Volumes[i].Name == "config" {
				return &spec.Volumes[i]
			}
		}
		return nil
	}
	if !reflect.DeepEqual(volume(tmpl.Spec), volume(dep.Spec.Template.Spec)) || !reflect.DeepEqual(c.Env[:2], agent.Env[1:3]) {
		t.Errorf("the prune job's config volume or S3 credentials differ from the agent's:\n%+v\n%+v", c.Env, agent.Env)
	}
	svc, err := admin.CoreV1().Services(deployNS).Get(context.Background(), "lifeboat", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(tmpl.Labels)) {
		t.Error("the metrics Service selects the prune job's pods")
	}
	depCheckPodSecurity(t, admin, ns, tmpl)
}

// depCheckMonitoring: the Service selects the pods and names their metrics
// port; the ServiceMonitor selects the Service and scrapes that port; the
// PrometheusRule has the expected alerts.
func depCheckMonitoring(t *testing.T, admin kubernetes.Interface, dep *appsv1.Deployment) {
	ctx := context.Background()
	svc, err := admin.CoreV1().Services(deployNS).Get(ctx, "lifeboat", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	podLabels := labels.Set(dep.Spec.Template.Labels)
	for k, v := range svc.Spec.Selector {
		if podLabels[k] != v {
			t.Errorf("Service selector %v does not select the pods %v", svc.Spec.Selector, podLabels)
		}
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].TargetPort.String() != "metrics" {
		t.Errorf("Service ports %+v", svc.Spec.Ports)
	}
	var sm struct {
		Spec struct {
			Selector  metav1.LabelSelector
			Endpoints []struct {
				Port, Path  string
				HonorLabels bool `json:"honorLabels"`
			}
		}
	}
	depGetJSON(t, &sm, "-n", deployNS, "get", "servicemonitors.monitoring.coreos.com", "lifeboat")
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select the Service (labels %v)", sm.Spec.Selector, svc.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" || sm.Spec.Endpoints[0].Path != "/metrics" || !sm.Spec.Endpoints[0].HonorLabels {
		t.Errorf("ServiceMonitor endpoints %+v: want port metrics, /metrics, honorLabels", sm.Spec.Endpoints)
	}
	alerts := map[string]bool{}
	for _, r := range depRules(t) {
		alerts[r.Alert] = true
		if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("alert %s lacks severity, summary or description", r.Alert)
		}
	}
	for _, a := range []string{"LifeboatNotRunning", "LifeboatExportsFailing", "LifeboatExportsAllFailing", "LifeboatPVCBackupStale",
		"LifeboatVerifyProblems", "LifeboatOrphanImagesGrowing", "LifeboatCephDown", "LifeboatObjectStoreDown"} {
		if !alerts[a] {
			t.Errorf("alert %s missing (have %v)", a, alerts)
		}
	}
}

type depRule struct {
	Alert       string
	Expr        string
	Labels      map[string]string
	Annotations map[string]string
}

// depRules reads the PrometheusRule back from the API server.
func depRules(t *testing.T) []depRule {
	t.Helper()
	var pr struct {
		Spec struct {
			Groups []struct{ Rules []depRule }
		}
	}
	depGetJSON(t, &pr, "-n", deployNS, "get", "prometheusrules.monitoring.coreos.com", "lifeboat")
	var rules []depRule
	for _, g := range pr.Spec.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatal("the PrometheusRule has no rules")
	}
	return rules
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

// depServiceAccountConfig is a client config with a token of the deployed
// ServiceAccount (TokenRequest, as the kubelet gets for a pod), after
// checking the API server authenticates it as that ServiceAccount.
func depServiceAccountConfig(t *testing.T, admin kubernetes.Interface) *rest.Config {
	t.Helper()
	ctx := context.Background()
	exp := int64(3600)
	tr, err := admin.CoreV1().ServiceAccounts(deployNS).CreateToken(ctx, deploySA,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", deployNS, deploySA, err)
	}
	cfg := &rest.Config{Host: env.Get("KUBE_APISERVER"), BearerToken: tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: env.Get("KUBE_CA_FILE")}, Timeout: 30 * time.Second, QPS: 100, Burst: 200}
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := k.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectReview with the ServiceAccount token: %v", err)
	}
	if u := r.Status.UserInfo.Username; u != deployWho {
		t.Fatalf("the token authenticates as %q, want %q", u, deployWho)
	}
	t.Logf("token authenticates as %s, groups %v", r.Status.UserInfo.Username, r.Status.UserInfo.Groups)
	return cfg
}

// depAllowed fails the test unless do succeeded.
func depAllowed(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("ALLOWED expected: %s: %v", what, err)
	}
}

// depForbidden fails the test unless the API server refused do for the
// ServiceAccount (403 naming it: not a 404 or a validation error).
func depForbidden(t *testing.T, what string, err error) {
	t.Helper()
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), deployWho) {
		t.Errorf("FORBIDDEN expected: %s: got %v", what, err)
	}
}

// depWatch opens a watch and closes it: a forbidden watch fails to open.
func depWatch(open func() (watch.Interface, error)) error {
	w, err := open()
	if err == nil {
		w.Stop()
	}
	return err
}

const depLease = "lifeboat" // agent.leaseName in the example config and the Role's resourceName

// depFreeLease waits until no live holder has rook-ceph/lifeboat (an agent
// of another test releases it on exit, or it expires), then deletes it.
func depFreeLease(t *testing.T, admin kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	leases := admin.CoordinationV1().Leases(deployNS)
	deadline := time.Now().Add(45 * time.Second)
	for {
		l, err := leases.Get(ctx, depLease, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		held := l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" && l.Spec.RenewTime != nil &&
			l.Spec.LeaseDurationSeconds != nil &&
			time.Since(l.Spec.RenewTime.Time) < time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second
		if !held {
			err := leases.Delete(ctx, depLease, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &l.ResourceVersion}})
			if err == nil || apierrors.IsNotFound(err) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Lease %s/%s is held by %q: is another lifeboat agent running on this stack?", deployNS, depLease, *l.Spec.HolderIdentity)
		}
		time.Sleep(time.Second)
	}
}

// depCheckAllowed makes every call the agent makes, with its token.
func depCheckAllowed(t *testing.T, admin, k kubernetes.Interface, s snapclient.Interface, ns, pvc, content, vsName string) {
	ctx := context.Background()
	one := int64(1)
	get := metav1.GetOptions{}
	all := metav1.ListOptions{TimeoutSeconds: &one}

	// Snapshots and PVCs, cluster-wide.
	vscs := s.SnapshotV1().VolumeSnapshotContents()
	_, err := vscs.List(ctx, metav1.ListOptions{})
	depAllowed(t, "list volumesnapshotcontents", err)
	depAllowed(t, "watch volumesnapshotcontents", depWatch(func() (watch.Interface, error) { return vscs.Watch(ctx, all) }))
	vsc, err := vscs.Get(ctx, content, get)
	depAllowed(t, "get volumesnapshotcontent "+content, err)
	_, err = vscs.Patch(ctx, content, types.MergePatchType, []byte(`{"metadata":{"annotations":{"e2e.lifeboat.io/rbac":"patched"}}}`), metav1.PatchOptions{})
	depAllowed(t, "merge-patch the annotations of volumesnapshotcontent "+content, err)
	if got, err := vscs.Get(ctx, content, get); err != nil || got.Annotations["e2e.lifeboat.io/rbac"] != "patched" {
		t.Errorf("the merge patch did not stick: %v", err)
	}
	_, err = s.SnapshotV1().VolumeSnapshots(ns).Get(ctx, vsName, get)
	depAllowed(t, "get volumesnapshot "+ns+"/"+vsName, err)
	_, err = s.SnapshotV1().VolumeSnapshots("").List(ctx, metav1.ListOptions{})
	depAllowed(t, "list volumesnapshots in all namespaces", err)
	depAllowed(t, "watch volumesnapshots in all namespaces", depWatch(func() (watch.Interface, error) { return s.SnapshotV1().VolumeSnapshots("").Watch(ctx, all) }))
	_, err = k.CoreV1().PersistentVolumeClaims(ns).Get(ctx, pvc, get)
	depAllowed(t, "get persistentvolumeclaim "+ns+"/"+pvc, err)
	_, err = k.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	depAllowed(t, "list persistentvolumeclaims in all namespaces", err)
	depAllowed(t, "watch persistentvolumeclaims", depWatch(func() (watch.Interface, error) { return k.CoreV1().PersistentVolumeClaims("").Watch(ctx, all) }))

	// Events: core (what client-go's recorder writes; a cluster-scoped
	// object's events go to "default") and events.k8s.io.
	if vsc != nil {
		now := metav1.Now()
		ev, err := k.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "lifeboat-e2e-", Namespace: metav1.NamespaceDefault},
			InvolvedObject: corev1.ObjectReference{APIVersion: "snapshot.storage.k8s.io/v1", Kind: "VolumeSnapshotContent",
				Name: content, UID: vsc.UID},
			Reason: "RBACCheck", Message: "lifeboat e2e: the agent may record events", Type: corev1.EventTypeNormal,
			Source: corev1.EventSource{Component: "lifeboat"}, FirstTimestamp: now, LastTimestamp: now, Count: 1,
		}, metav1.CreateOptions{})
		depAllowed(t, "create a core/v1 event", err)
		if err == nil {
			t.Cleanup(func() {
				_ = admin.CoreV1().Events(metav1.NamespaceDefault).Delete(context.Background(), ev.Name, metav1.DeleteOptions{})
			})
			_, err = k.CoreV1().Events(metav1.NamespaceDefault).Patch(ctx, ev.Name, types.StrategicMergePatchType,
				[]byte(fmt.Sprintf(`{"count":2,"lastTimestamp":%q}`, time.Now().UTC().Format(time.RFC3339))), metav1.PatchOptions{})
			depAllowed(t, "patch a core/v1 event", err)
		}
	}
	ev2, err := k.EventsV1().Events(ns).Create(ctx, &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "lifeboat-e2e-", Namespace: ns},
		EventTime:  metav1.NewMicroTime(time.Now()), ReportingController: "lifeboat.io/agent", ReportingInstance: "lifeboat-e2e",
		Action: "Verify", Reason: "RBACCheck", Note: "lifeboat e2e: the agent may record events", Type: corev1.EventTypeNormal,
		Regarding: corev1.ObjectReference{APIVersion: "snapshot.storage.k8s.io/v1", Kind: "VolumeSnapshot", Namespace: ns, Name: vsName},
	}, metav1.CreateOptions{})
	depAllowed(t, "create an events.k8s.io/v1 event", err)
	if err == nil {
		t.Cleanup(func() { _ = admin.EventsV1().Events(ns).Delete(context.Background(), ev2.Name, metav1.DeleteOptions{}) })
		patch := fmt.Sprintf(`{"series":{"count":2,"lastObservedTime":%q}}`, time.Now().UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
		_, err = k.EventsV1().Events(ns).Patch(ctx, ev2.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		depAllowed(t, "patch an events.k8s.io/v1 event", err)
	}

	// rook-ceph: ceph-csi's ConfigMap (get, and list/watch of that one name,
	// as an informer with a metadata.name field selector does) and the
	// three Secrets.
	cms := k.CoreV1().ConfigMaps(deployNS)
	_, err = cms.Get(ctx, "rook-ceph-csi-config", get)
	depAllowed(t, "get configmap rook-ceph/rook-ceph-csi-config", err)
	byName := metav1.ListOptions{FieldSelector: "metadata.name=rook-ceph-csi-config", TimeoutSeconds: &one}
	_, err = cms.List(ctx, byName)
	depAllowed(t, "list configmaps rook-ceph/rook-ceph-csi-config (field selector)", err)
	depAllowed(t, "watch configmap rook-ceph/rook-ceph-csi-config (field selector)", depWatch(func() (watch.Interface, error) { return cms.Watch(ctx, byName) }))
	for _, name := range []string{"rook-csi-rbd-provisioner", "lifeboat-s3", "lifeboat-encryption-key"} {
		_, err = k.CoreV1().Secrets(deployNS).Get(ctx, name, get)
		depAllowed(t, "get secret rook-ceph/"+name, err)
	}

	// The leader Lease: get (absent), create, update, get.
	depFreeLease(t, admin)
	leases := k.CoordinationV1().Leases(deployNS)
	if _, err := leases.Get(ctx, depLease, get); !apierrors.IsNotFound(err) {
		t.Errorf("get lease rook-ceph/%s before it exists: %v, want NotFound (authorized)", depLease, err)
	}
	holder, dur := "lifeboat-e2e-rbac", int32(1)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Create(ctx, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: depLease, Namespace: deployNS},
		Spec: coordv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, AcquireTime: &now, RenewTime: &now}}, metav1.CreateOptions{})
	depAllowed(t, "create lease rook-ceph/"+depLease, err)
	if err == nil {
		renew := metav1.NewMicroTime(time.Now())
		l.Spec.RenewTime = &renew
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		depAllowed(t, "update lease rook-ceph/"+depLease, err)
		_, err = leases.Get(ctx, depLease, get)
		depAllowed(t, "get lease rook-ceph/"+depLease, err)
		if err := admin.CoordinationV1().Leases(deployNS).Delete(ctx, depLease, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting the test's lease: %v", err)
		}
	}
}

// depCheckForbidden tries what the agent must never do, with its token.
// The objects exist (depFixtures, the world), so a 403 is not a 404.
func depCheckForbidden(t *testing.T, k kubernetes.Interface, s snapclient.Interface, ns, pvc, content, vsName string) {
	ctx := context.Background()
	get := metav1.GetOptions{}
	one := int64(1)
	all := metav1.ListOptions{TimeoutSeconds: &one}
	f := func(what string, err error) { t.Helper(); depForbidden(t, what, err) }
	// Every write is a server-side dry run: authorization comes first and is
	// the same, and a broken RBAC rule cannot destroy the shared stack.
	dry := []string{metav1.DryRunAll}
	dryCreate, dryUpdate := metav1.CreateOptions{DryRun: dry}, metav1.UpdateOptions{DryRun: dry}
	dryPatch, dryDelete := metav1.PatchOptions{DryRun: dry}, metav1.DeleteOptions{DryRun: dry}
	var err error

	// Secrets: only the three, only get, only in rook-ceph.
	sec := k.CoreV1().Secrets
	_, err = sec(deployNS).Get(ctx, depDecoy(ns), get)
	f("get another secret in rook-ceph", err)
	for _, name := range []string{"rook-csi-rbd-provisioner", "lifeboat-s3"} {
		_, err = sec(ns).Get(ctx, name, get)
		f("get secret "+name+" in another namespace", err)
	}
	_, err = sec(metav1.NamespaceDefault).Get(ctx, "lifeboat-encryption-key", get)
	f("get secret lifeboat-encryption-key in default", err)
	_, err = sec(deployNS).List(ctx, metav1.ListOptions{})
	f("list secrets in rook-ceph", err)
	_, err = sec("").List(ctx, metav1.ListOptions{})
	f("list secrets in all namespaces", err)
	_, err = sec(deployNS).List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=lifeboat-s3"})
	f("list secret lifeboat-s3 by field selector", err)
	err = depWatch(func() (watch.Interface, error) {
		return sec(deployNS).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=rook-csi-rbd-provisioner", TimeoutSeconds: &one})
	})
	f("watch secret rook-csi-rbd-provisioner", err)
	_, err = sec(deployNS).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{GenerateName: "lifeboat-e2e-"}}, dryCreate)
	f("create a secret in rook-ceph", err)
	_, err = sec(deployNS).Patch(ctx, "lifeboat-s3", types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), dryPatch)
	f("patch secret lifeboat-s3", err)
	_, err = sec(deployNS).Update(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "lifeboat-s3", Namespace: deployNS}}, dryUpdate)
	f("update secret lifeboat-s3", err)
	f("delete secret rook-csi-rbd-provisioner", sec(deployNS).Delete(ctx, "rook-csi-rbd-provisioner", dryDelete))

	// ConfigMaps: only rook-ceph-csi-config, read only.
	cms := k.CoreV1().ConfigMaps
	_, err = cms(deployNS).Get(ctx, "lifeboat-config", get)
	f("get configmap lifeboat-config (mounted, not read through the API)", err)
	_, err = cms(ns).Get(ctx, "rook-ceph-csi-config", get)
	f("get configmap rook-ceph-csi-config in another namespace", err)
	_, err = cms(deployNS).List(ctx, metav1.ListOptions{})
	f("list configmaps in rook-ceph", err)
	_, err = cms(deployNS).Patch(ctx, "rook-ceph-csi-config", types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), dryPatch)
	f("patch configmap rook-ceph-csi-config", err)

	// VolumeSnapshotContents: patch only; no update, delete, create, status.
	vscs := s.SnapshotV1().VolumeSnapshotContents()
	if vsc, err := vscs.Get(ctx, content, get); err != nil {
		t.Errorf("get volumesnapshotcontent: %v", err)
	} else {
		vsc.Annotations = map[string]string{"e2e.lifeboat.io/put": "x"}
		_, err = vscs.Update(ctx, vsc, dryUpdate)
		f("update (PUT) a volumesnapshotcontent", err)
		_, err = vscs.UpdateStatus(ctx, vsc, dryUpdate)
		f("update a volumesnapshotcontent's status", err)
		c := vsc.DeepCopy()
		c.ObjectMeta = metav1.ObjectMeta{Name: "lifeboat-e2e-" + ns}
		_, err = vscs.Create(ctx, c, dryCreate)
		f("create a volumesnapshotcontent", err)
	}
	_, err = vscs.Patch(ctx, content, types.MergePatchType, []byte(`{"status":{"readyToUse":false}}`), dryPatch, "status")
	f("patch a volumesnapshotcontent's status", err)
	f("delete a volumesnapshotcontent", vscs.Delete(ctx, content, dryDelete))
	f("delete all volumesnapshotcontents", vscs.DeleteCollection(ctx, dryDelete, metav1.ListOptions{}))

	// VolumeSnapshots, PVCs, PVs: read only (PVs not at all).
	vss := s.SnapshotV1().VolumeSnapshots(ns)
	_, err = vss.Patch(ctx, vsName, types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), dryPatch)
	f("patch a volumesnapshot", err)
	f("delete a volumesnapshot", vss.Delete(ctx, vsName, dryDelete))
	_, err = vss.Create(ctx, &snapv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Name: "lifeboat-e2e"}}, dryCreate)
	f("create a volumesnapshot", err)
	pvcs := k.CoreV1().PersistentVolumeClaims(ns)
	_, err = pvcs.Patch(ctx, pvc, types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), dryPatch)
	f("patch a persistentvolumeclaim", err)
	f("delete a persistentvolumeclaim", pvcs.Delete(ctx, pvc, dryDelete))
	_, err = k.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	f("list persistentvolumes", err)

	// Pods and workloads, including its own Deployment.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "lifeboat-e2e-"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	for _, n := range []string{deployNS, ns} {
		_, err = k.CoreV1().Pods(n).Create(ctx, pod, dryCreate)
		f("create a pod in "+n, err)
	}
	_, err = k.CoreV1().Pods(deployNS).List(ctx, metav1.ListOptions{})
	f("list pods", err)
	_, err = k.AppsV1().Deployments(deployNS).Get(ctx, "lifeboat", get)
	f("get its own deployment", err)
	_, err = k.AppsV1().Deployments(deployNS).Patch(ctx, "lifeboat", types.MergePatchType, []byte(`{"spec":{"replicas":3}}`), dryPatch)
	f("patch its own deployment", err)

	// Leases: only rook-ceph/lifeboat may be read or renewed; create is
	// namespace-wide in rook-ceph only (Kubernetes cannot limit create by name).
	lease := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: depLease}}
	for _, n := range []string{ns, metav1.NamespaceDefault, "kube-system"} {
		_, err = k.CoordinationV1().Leases(n).Get(ctx, depLease, get)
		f("get lease "+n+"/"+depLease, err)
		_, err = k.CoordinationV1().Leases(n).Create(ctx, lease, dryCreate)
		f("create lease in "+n, err)
	}
	_, err = k.CoordinationV1().Leases(deployNS).Get(ctx, "some-other-controller", get)
	f("get another lease in rook-ceph", err)
	_, err = k.CoordinationV1().Leases(deployNS).Update(ctx, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "some-other-controller", Namespace: deployNS}}, dryUpdate)
	f("update another lease in rook-ceph", err)
	_, err = k.CoordinationV1().Leases(deployNS).List(ctx, metav1.ListOptions{})
	f("list leases in rook-ceph", err)
	err = depWatch(func() (watch.Interface, error) { return k.CoordinationV1().Leases(deployNS).Watch(ctx, all) })
	f("watch leases in rook-ceph", err)
	f("delete lease rook-ceph/"+depLease, k.CoordinationV1().Leases(deployNS).Delete(ctx, depLease, dryDelete))

	// Events are write-only; no escalation through RBAC or tokens.
	_, err = k.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
	f("list events", err)
	f("delete events", k.CoreV1().Events(ns).DeleteCollection(ctx, dryDelete, metav1.ListOptions{}))
	_, err = k.RbacV1().RoleBindings(deployNS).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "lifeboat-e2e"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: deploySA, Namespace: deployNS}}}, dryCreate)
	f("create a rolebinding", err)
	_, err = k.RbacV1().Roles(deployNS).Get(ctx, "lifeboat", get)
	f("read its own role", err)
	exp := int64(600)
	_, err = k.CoreV1().ServiceAccounts(deployNS).CreateToken(ctx, deploySA, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp}}, dryCreate)
	f("mint a token for itself", err)
	_, err = k.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	f("list nodes", err)
	_, err = k.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	f("list namespaces", err)
}

// depCheckCanI asks `kubectl auth can-i --as` the same questions: a
// supplement to the real calls above (impersonation, not the token).
func depCheckCanI(t *testing.T, ns string) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"list", "volumesnapshotcontents.snapshot.storage.k8s.io"}, "yes"},
		{[]string{"watch", "volumesnapshotcontents.snapshot.storage.k8s.io"}, "yes"},
		{[]string{"patch", "volumesnapshotcontents.snapshot.storage.k8s.io"}, "yes"},
		{[]string{"update", "volumesnapshotcontents.snapshot.storage.k8s.io"}, "no"},
		{[]string{"delete", "volumesnapshotcontents.snapshot.storage.k8s.io"}, "no"},
		{[]string{"get", "volumesnapshots.snapshot.storage.k8s.io", "-n", ns}, "yes"},
		{[]string{"get", "persistentvolumeclaims", "-n", ns}, "yes"},
		{[]string{"create", "events", "-n", ns}, "yes"},
		{[]string{"create", "events.events.k8s.io", "-n", ns}, "yes"},
		{[]string{"get", "leases.coordination.k8s.io/lifeboat", "-n", deployNS}, "yes"},
		{[]string{"update", "leases.coordination.k8s.io/lifeboat", "-n", deployNS}, "yes"},
		{[]string{"get", "leases.coordination.k8s.io/lifeboat", "-n", ns}, "no"},
		{[]string{"get", "configmaps/rook-ceph-csi-config", "-n", deployNS}, "yes"},
		{[]string{"get", "configmaps/lifeboat-config", "-n", deployNS}, "no"},
		{[]string{"get", "secrets/rook-csi-rbd-provisioner", "-n", deployNS}, "yes"},
		{[]string{"get", "secrets/lifeboat-s3", "-n", deployNS}, "yes"},
		{[]string{"get", "secrets/lifeboat-encryption-key", "-n", deployNS}, "yes"},
		{[]string{"get", "secrets/" + depDecoy(ns), "-n", deployNS}, "no"},
		{[]string{"get", "secrets/lifeboat-s3", "-n", ns}, "no"},
		{[]string{"list", "secrets", "-n", deployNS}, "no"},
		{[]string{"create", "pods", "-n", deployNS}, "no"},
	} {
		args := append([]string{"auth", "can-i", "--as", deployWho}, c.args...)
		out, _ := depKubectl(args...) // exit 1 means "no"; warnings come first
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if got := lines[len(lines)-1]; got != c.want {
			t.Errorf("kubectl auth can-i %s: %q, want %q", strings.Join(c.args, " "), got, c.want)
		}
	}
	if out, err := depKubectl("auth", "can-i", "--list", "--as", deployWho, "-n", deployNS); err == nil {
		t.Logf("kubectl auth can-i --list --as %s -n %s:\n%s", deployWho, deployNS, out)
	}
}

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
