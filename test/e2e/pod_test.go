//go:build e2e && node

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/lifeboat-backup/lifeboat/test/sim"
)

// The test node's overlay puts the agent's metrics here (hostNetwork).
const podMetrics = "127.0.0.1:15290"

// TestPod runs deploy/ as users run it, from the image `make image` built, on
// the test node (test/node/: containerd, runc and a kubelet against the stack's
// API server; `make test-node` starts it and loads the image):
//   - the Deployment's pod (test/node/overlay: one replica, hostNetwork) gets
//     Ready, as UID 65532 on a read-only root without capabilities, and takes
//     the Lease with its ServiceAccount's own token through in-cluster
//     configuration (the pod has no kubeconfig);
//   - the agent leading, a real `velero backup create` snapshots a PVC
//     provisioned on the stack's real CSI path; the pod verifies and exports
//     Velero's VolumeSnapshotContent and annotates it; the backup restores
//     bit-exactly;
//   - /metrics answers and parses; a real Prometheus finds the pod through
//     the Service's endpoints with the relabelling the ServiceMonitor implies,
//     scrapes it and evaluates every alert of deploy/prometheusrule.yaml
//     without an error (none firing);
//   - with the agent frozen (SIGSTOP), readiness fails and liveness restarts
//     the container, which gets Ready and leads again;
//   - the prune CronJob, run once as a Job from the same image, prunes.
//
// Built only with the `node` tag: the other e2e tests run without a node.
func TestPod(t *testing.T) {
	start := time.Now()
	defer func() { t.Logf("TestPod took %s", time.Since(start).Round(time.Millisecond)) }()
	node := podNodeEnv(t)

	lockDeployedRBAC(t)
	depInstallMonitoringCRDs(t)
	p := newRealPath(t, "pod")
	scratch := newWorld(t) // a RADOS namespace to restore into, purged at the end
	admin := p.sim.Kube
	pvc := p.createPVC("data", 32*MiB)
	want := p.writePVC(pvc, 1)
	bucket := removedAtEnd(t, "pod-"+p.ns).name
	keyFile := podSecrets(t, admin, bucket, p.ns)
	t.Setenv("AWS_ACCESS_KEY_ID", env.Get("AWS_ACCESS_KEY_ID"))
	t.Setenv("AWS_SECRET_ACCESS_KEY", env.Get("AWS_SECRET_ACCESS_KEY"))
	repo := []string{"--s3-endpoint", env.Get("S3_ENDPOINT"), "--s3-bucket", bucket, "--encryption-key-file", keyFile}
	if r := runLifeboat(t, append([]string{"repo", "init", "--s3-create-bucket"}, repo...)...); r.code != 0 {
		t.Fatalf("repo init: exit %d\n%s", r.code, r.stderr)
	}

	depFreeLease(t, admin)
	podApply(t, podOverlay(t, realDriver))
	t.Cleanup(func() { // runs before podApply's: the objects still exist
		if t.Failed() {
			out, _ := depKubectl("get", "deploy,rs,pods,jobs,events", "-n", deployNS, "-o", "wide")
			t.Logf("rook-ceph:\n%s", out)
			podLogs(t, node)
		}
	})
	pod := podWaitReady(t, admin, node, "", 3*time.Minute)
	t.Logf("pod %s Ready on %s after %s", pod.Name, pod.Spec.NodeName, time.Since(start).Round(time.Second))

	t.Run("security and in-cluster config", func(t *testing.T) { podCheckProcess(t, node, pod) })
	t.Run("holds the lease", func(t *testing.T) { podWaitLeader(t, admin, pod.Name) })

	// Velero backs the namespace up while the pod leads: Velero 1.18
	// deletes its VolumeSnapshots and contents once the backup completes
	// (the class's Retain keeps the RBD snapshot), so the agent must be
	// watching already; the repository, not the content, says what it
	// exported.
	seen, content, h := podVeleroBackup(t, p, pvc)
	img, snap := snapshotImage(t, h)
	if got := p.imageSHA256(img, snap); got != want {
		t.Fatalf("snapshot %s of PVC %s: sha256 %s, the volume had %s", h, pvc.Name, got, want)
	}
	var id string
	waitFor(t, "the pod to export "+h, 3*time.Minute, func() bool {
		b := backupsIn(t, repo, h)
		if len(b) > 1 {
			t.Fatalf("snapshot %s exported %d times: %v", h, len(b), b)
		}
		if len(b) == 1 {
			id = b[0]
		}
		return id != ""
	})
	t.Logf("exported: backup %s after %s", id, time.Since(start).Round(time.Second))
	podCheckAnnotated(t, seen, content, id)
	podRestoreAndCompare(t, scratch, bucket, id, want, "--encryption-key-file", keyFile)

	t.Run("metrics", func(t *testing.T) { podCheckMetrics(t) })
	t.Run("prometheus scrapes it", func(t *testing.T) { podPrometheus(t, node, pod) })
	t.Run("probes fail and recover", func(t *testing.T) { podCheckProbes(t, admin, node, pod) })
	t.Run("prune cronjob as a job", func(t *testing.T) { podRunPrune(t, admin, node) })
}

// podVeleroBackup runs `velero backup create` of the path's namespace (one
// PVC) and returns the watch that saw the backup's VolumeSnapshotContent
// (Velero may have deleted it already), its name and its snapshot handle.
func podVeleroBackup(t *testing.T, p *realPath, pvc *realPVC) (seen *vscSeen, content, handle string) {
	t.Helper()
	seen = p.watchContents()
	backup := "b-" + p.ns
	st := p.veleroBackup(backup)
	if st.CSIVolumeSnapshotsAttempted != 1 || st.CSIVolumeSnapshotsCompleted != 1 {
		t.Fatalf("backup %s: CSI snapshots %d attempted, %d completed; want 1 and 1", backup, st.CSIVolumeSnapshotsAttempted, st.CSIVolumeSnapshotsCompleted)
	}
	waitFor(t, "the watch to see the VolumeSnapshotContent of backup "+backup, 30*time.Second, func() bool {
		for name, c := range seen.ofBackup(backup) {
			if c.Spec.Driver == realDriver && c.Spec.Source.VolumeHandle != nil && *c.Spec.Source.VolumeHandle == pvc.Handle &&
				c.Status != nil && c.Status.SnapshotHandle != nil {
				content, handle = name, *c.Status.SnapshotHandle
				return true
			}
		}
		return false
	})
	seen.mu.Lock()
	_, deleted := seen.deleted[content]
	t.Logf("velero backup %s: VolumeSnapshotContent %s (deleted by Velero: %v, last lifeboat.io/phase %q), snapshot %s",
		backup, content, deleted, seen.last[content].Annotations["lifeboat.io/phase"], handle)
	seen.mu.Unlock()
	return seen, content, handle
}

// podCheckAnnotated: the pod annotated the backup's VolumeSnapshotContent.
// The agent marks it Exporting once verified, exports, then marks it
// Exported; Velero may delete it in between. So the last state the watch
// saw is Exported with the backup's id, or Exporting and then deleted.
func podCheckAnnotated(t *testing.T, seen *vscSeen, name, id string) {
	t.Helper()
	var last map[string]string
	deleted := false
	waitFor(t, "VolumeSnapshotContent "+name+" Exported or deleted", time.Minute, func() bool {
		seen.mu.Lock()
		defer seen.mu.Unlock()
		last = seen.last[name].Annotations
		_, deleted = seen.deleted[name]
		return deleted || last["lifeboat.io/phase"] == "Exported"
	})
	phase := last["lifeboat.io/phase"]
	t.Logf("VolumeSnapshotContent %s: last seen %q, deleted by Velero: %v", name, phase, deleted)
	if last["lifeboat.io/verified"] != "OK" {
		t.Errorf("VolumeSnapshotContent %s: lifeboat.io/verified %q, want OK (annotations %v)", name, last["lifeboat.io/verified"], last)
	}
	switch phase {
	case "Exported":
		if last["lifeboat.io/backup-id"] != id || last["lifeboat.io/exported-at"] == "" || last["lifeboat.io/repository"] == "" {
			t.Errorf("VolumeSnapshotContent %s Exported with annotations %v, want backup %s", name, last, id)
		}
	case "Exporting": // and deleted: the wait above
	default:
		t.Errorf("VolumeSnapshotContent %s: last lifeboat.io/phase %q, want Exporting or Exported (annotations %v)", name, phase, last)
	}
}

// podRestoreAndCompare restores backup id into the scratch world's RADOS
// namespace and compares it with want, the snapshot's sha256.
func podRestoreAndCompare(t *testing.T, scratch *world, bucket, id, want string, extra ...string) {
	t.Helper()
	r := runLifeboat(t, append([]string{"restore", id, "--to", scratch.spec("restored"), "--ceph-conf", env.Get("CEPH_CONF"),
		"--s3-endpoint", env.Get("S3_ENDPOINT"), "--s3-bucket", bucket}, extra...)...)
	if r.code != 0 {
		t.Fatalf("restore %s: %s", id, r.stderr)
	}
	got, err := scratch.sim.ImageSHA256(context.Background(), "restored", "")
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("backup %s restores to sha256 %s, the snapshot is %s", id, got, want)
	}
}

// podNodeEnv reads the node's env file (test/node/node.sh up writes it).
func podNodeEnv(t *testing.T) sim.Env {
	t.Helper()
	dir := os.Getenv("LIFEBOAT_NODE_DIR")
	if dir == "" {
		dir = "/tmp/lifeboat-node"
	}
	e, err := sim.LoadEnvFile(filepath.Join(dir, "env"))
	if err == nil {
		err = e.Require("LIFEBOAT_NODE_NAME", "LIFEBOAT_NODE_CONTAINERD", "LIFEBOAT_NODE_DIR")
	}
	if err != nil {
		t.Fatalf("the test node is not up (%v): run `make node-up` (make test-node does)", err)
	}
	return e
}

// podSecrets makes the objects deploy/examples/ stands for, for this test's
// bucket: the config (metrics on the overlay's loopback port, the example's
// selector, only the test's namespace: other tests share the API server),
// the S3 and encryption key Secrets. It returns the key's file for the CLI.
func podSecrets(t *testing.T, admin kubernetes.Interface, bucket, ns string) string {
	t.Helper()
	ctx := context.Background()
	key := "lifeboat-e2e-pod-" + bucket + "-key"
	keyFile := filepath.Join(t.TempDir(), "key")
	writeFile(t, keyFile, key+"\n")
	config := fmt.Sprintf(`s3: {endpoint: %q, bucket: %q, pathStyle: true}
encryptionKeyFile: /etc/lifeboat/key/key
parallel: 4
agent:
  workers: 2
  selector: velero.io/backup-name
  includeNamespaces: [%q]
  verifyInterval: 1h
  leaseName: %s
  metricsAddress: %q
  csiConfigMap: rook-ceph-csi-config
  cephSecret: rook-csi-rbd-provisioner
`, env.Get("S3_ENDPOINT"), bucket, ns, depLease, podMetrics)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "lifeboat-config", Namespace: deployNS},
		Data: map[string]string{"config.yaml": config}}
	secrets := []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "lifeboat-s3", Namespace: deployNS}, StringData: map[string]string{
			"AWS_ACCESS_KEY_ID": env.Get("AWS_ACCESS_KEY_ID"), "AWS_SECRET_ACCESS_KEY": env.Get("AWS_SECRET_ACCESS_KEY")}},
		{ObjectMeta: metav1.ObjectMeta{Name: "lifeboat-encryption-key", Namespace: deployNS},
			StringData: map[string]string{"key": key + "\n"}},
	}
	if _, err := admin.CoreV1().ConfigMaps(deployNS).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("ConfigMap %s: %v", cm.Name, err)
	}
	t.Cleanup(func() {
		_ = admin.CoreV1().ConfigMaps(deployNS).Delete(context.Background(), cm.Name, metav1.DeleteOptions{})
	})
	for _, s := range secrets {
		if _, err := admin.CoreV1().Secrets(deployNS).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("Secret %s: %v", s.Name, err)
		}
		name := s.Name
		t.Cleanup(func() {
			_ = admin.CoreV1().Secrets(deployNS).Delete(context.Background(), name, metav1.DeleteOptions{})
		})
	}
	return keyFile
}

// podOverlay is test/node/overlay for this stack: the API server's port, the
// CSI driver (the real path's: its periodic verification then covers no
// simulator world of another test), and probes frequent enough for a test
// (the base's take minutes to fail).
func podOverlay(t *testing.T, driver string) string {
	t.Helper()
	dir := t.TempDir()
	base, err := filepath.Abs("../node/overlay")
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(dir, base)
	if err != nil {
		t.Fatal(err)
	}
	port := env.Get("KUBE_APISERVER")[strings.LastIndex(env.Get("KUBE_APISERVER"), ":")+1:]
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [%s]
patches:
  - target: {group: apps, version: v1, kind: Deployment, name: lifeboat}
    patch: |-
      - {op: replace, path: /spec/template/spec/containers/0/env/6/value, value: %q}
      - {op: add, path: /spec/template/spec/containers/0/args/-, value: --driver-suffix}
      - {op: add, path: /spec/template/spec/containers/0/args/-, value: %q}
      - op: replace
        path: /spec/template/spec/containers/0/livenessProbe
        value: {httpGet: {host: 127.0.0.1, path: /healthz, port: metrics}, initialDelaySeconds: 5, periodSeconds: 3, timeoutSeconds: 2, failureThreshold: 3}
      - op: replace
        path: /spec/template/spec/containers/0/readinessProbe
        value: {httpGet: {host: 127.0.0.1, path: /readyz, port: metrics}, periodSeconds: 2, timeoutSeconds: 1, failureThreshold: 2}
`, rel, port, driver)
	writeFile(t, filepath.Join(dir, "kustomization.yaml"), k)
	out, err := depKubectl("kustomize", dir)
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
	}
	// The env index above must be KUBERNETES_SERVICE_PORT's.
	if !strings.Contains(out, "name: KUBERNETES_SERVICE_PORT\n          value: \""+port+"\"") {
		t.Fatalf("the overlay does not set KUBERNETES_SERVICE_PORT to %s:\n%s", port, out)
	}
	return dir
}

// podApply applies the overlay and deletes at the end what it applied,
// except the shared ServiceAccount and RBAC (depSharedKinds), and waits for
// the pods to be gone.
func podApply(t *testing.T, dir string) {
	t.Helper()
	names := func() []string {
		out, err := depKubectl("get", "-o", "name", "--ignore-not-found", "-k", dir)
		if err != nil {
			t.Errorf("kubectl get -k %s: %v\n%s", dir, err, out)
		}
		return strings.Fields(out)
	}
	before := names()
	t.Cleanup(func() {
		var del []string
		for _, n := range names() {
			shared := false
			for _, k := range depSharedKinds {
				shared = shared || strings.HasPrefix(n, k)
			}
			if !shared || !slices.Contains(before, n) {
				del = append(del, n)
			}
		}
		if out, err := depKubectl(append([]string{"delete", "-n", deployNS, "--ignore-not-found", "--wait=true", "--timeout=90s"}, del...)...); err != nil {
			t.Errorf("kubectl delete %v: %v\n%s", del, err, out)
		}
		if out, err := depKubectl("wait", "--for=delete", "pod", "-n", deployNS, "-l", "app.kubernetes.io/name=lifeboat", "--timeout=90s"); err != nil {
			t.Errorf("pods of the overlay still there: %v\n%s", err, out)
		}
	})
	if out, err := depKubectl("apply", "-k", dir); err != nil {
		t.Fatalf("kubectl apply -k %s: %v\n%s", dir, err, out)
	}
}

// podWaitReady waits for the Deployment's one pod to be Ready on the node,
// in a container other than notContainer (a restart's new one).
func podWaitReady(t *testing.T, admin kubernetes.Interface, node sim.Env, notContainer string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	waitFor(t, "the agent pod Ready on the node", timeout, func() bool {
		pods, err := admin.CoreV1().Pods(deployNS).List(context.Background(),
			metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=lifeboat,app.kubernetes.io/component=agent"})
		if err != nil || len(pods.Items) != 1 {
			return false
		}
		p := &pods.Items[0]
		if p.Spec.NodeName != node.Get("LIFEBOAT_NODE_NAME") || len(p.Status.ContainerStatuses) != 1 {
			return false
		}
		cs := p.Status.ContainerStatuses[0]
		if !cs.Ready || cs.ContainerID == notContainer {
			return false
		}
		pod = p
		return true
	})
	return pod
}

// podPID is the host pid of the pod's container (its containerd task).
func podPID(t *testing.T, node sim.Env, pod *corev1.Pod) int {
	t.Helper()
	id := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	out, err := exec.Command("ctr", "--address", node.Get("LIFEBOAT_NODE_CONTAINERD"), "-n", "k8s.io", "tasks", "ls").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr tasks ls: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == id {
			var pid int
			if _, err := fmt.Sscan(f[1], &pid); err == nil {
				return pid
			}
		}
	}
	t.Fatalf("no containerd task %s:\n%s", id, out)
	return 0
}

// podCheckProcess: the agent runs as the Deployment says, and nothing but the
// in-cluster ServiceAccount token gives it Kubernetes credentials.
func podCheckProcess(t *testing.T, node sim.Env, pod *corev1.Pod) {
	pid := podPID(t, node, pod)
	status := readFile(t, fmt.Sprintf("/proc/%d/status", pid))
	for _, want := range []string{"Uid:\t65532\t65532\t65532\t65532", "Gid:\t65532\t65532\t65532\t65532",
		"CapPrm:\t0000000000000000", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000",
		"NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(status, want) {
			t.Errorf("/proc/%d/status lacks %q:\n%s", pid, want, status)
		}
	}
	mounts := readFile(t, fmt.Sprintf("/proc/%d/mounts", pid))
	root := ""
	for _, l := range strings.Split(mounts, "\n") {
		if f := strings.Fields(l); len(f) >= 4 && f[1] == "/" {
			root = f[3]
		}
	}
	if !strings.HasPrefix(root, "ro,") && root != "ro" {
		t.Errorf("root filesystem mounted %q, want read-only", root)
	}
	if !strings.Contains(mounts, "/run/secrets/kubernetes.io/serviceaccount ") { // /var/run is /run
		t.Errorf("no ServiceAccount token mounted:\n%s", mounts)
	}
	cmdline := readFile(t, fmt.Sprintf("/proc/%d/cmdline", pid))
	environ := readFile(t, fmt.Sprintf("/proc/%d/environ", pid))
	if strings.Contains(cmdline, "kubeconfig") || strings.Contains(environ, "KUBECONFIG=") {
		t.Errorf("the agent was given a kubeconfig: %q", cmdline)
	}
}

func podWaitLeader(t *testing.T, admin kubernetes.Interface, name string) {
	t.Helper()
	waitFor(t, "pod "+name+" to hold the Lease", 2*time.Minute, func() bool {
		l, err := admin.CoordinationV1().Leases(deployNS).Get(context.Background(), depLease, metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == name
	})
}

func podCheckMetrics(t *testing.T) {
	resp, err := http.Get("http://" + podMetrics + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	if v := value(mf, "lifeboat_leader"); v != 1 {
		t.Errorf("lifeboat_leader = %v, want 1", v)
	}
	if len(mf) < 10 {
		t.Errorf("only %d metric families", len(mf))
	}
}

// podCheckProbes freezes the agent: readiness fails (the pod leaves the
// Service's endpoints), then liveness makes the kubelet replace the
// container, which gets Ready and leads again.
func podCheckProbes(t *testing.T, admin kubernetes.Interface, node sim.Env, pod *corev1.Pod) {
	ctx := context.Background()
	old := pod.Status.ContainerStatuses[0]
	pid := podPID(t, node, pod)
	stopped := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %d: %v", pid, err)
	}
	defer syscall.Kill(pid, syscall.SIGCONT) //nolint:errcheck // gone once liveness killed it
	waitFor(t, "readiness to fail", time.Minute, func() bool {
		p, err := admin.CoreV1().Pods(deployNS).Get(ctx, pod.Name, metav1.GetOptions{})
		return err == nil && len(p.Status.ContainerStatuses) == 1 && !p.Status.ContainerStatuses[0].Ready
	})
	t.Logf("readiness failed %s after SIGSTOP", time.Since(stopped).Round(time.Second))
	// Once liveness has failed, the kubelet stops the container: let the
	// agent run again so it handles the SIGTERM at once (frozen, it would
	// keep the pod for the whole 60 s grace period).
	waitFor(t, "liveness to fail", time.Minute, func() bool {
		return strings.Contains(podEvents(t, admin, pod.Name), "failed liveness probe, will be restarted")
	})
	t.Logf("liveness failed %s after SIGSTOP", time.Since(stopped).Round(time.Second))
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Errorf("SIGCONT %d: %v", pid, err)
	}
	p := podWaitReady(t, admin, node, old.ContainerID, 2*time.Minute)
	cs := p.Status.ContainerStatuses[0]
	if cs.RestartCount != old.RestartCount+1 {
		t.Errorf("restart count %d, want %d", cs.RestartCount, old.RestartCount+1)
	}
	if cs.LastTerminationState.Terminated == nil {
		t.Errorf("no last termination state")
	}
	podWaitLeader(t, admin, p.Name)
	joined := podEvents(t, admin, p.Name)
	if !strings.Contains(joined, "Readiness probe failed") || !strings.Contains(joined, "Liveness probe failed") {
		t.Errorf("events of %s lack failed readiness and liveness probes:\n%s", p.Name, joined)
	}
}

// podEvents are the kubelet's probe and kill events of a pod, one a line.
func podEvents(t *testing.T, admin kubernetes.Interface, name string) string {
	t.Helper()
	ev, err := admin.CoreV1().Events(deployNS).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	var saw []string
	for _, e := range ev.Items {
		if e.Reason == "Unhealthy" || e.Reason == "Killing" {
			saw = append(saw, e.Reason+": "+e.Message)
		}
	}
	return strings.Join(saw, "\n")
}

// podRunPrune runs the prune CronJob once, as `kubectl create job --from` does.
func podRunPrune(t *testing.T, admin kubernetes.Interface, node sim.Env) {
	ctx := context.Background()
	name := "lifeboat-prune-e2e"
	if out, err := depKubectl("create", "job", name, "-n", deployNS, "--from=cronjob/lifeboat-prune"); err != nil {
		t.Fatalf("kubectl create job --from=cronjob/lifeboat-prune: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		bg := metav1.DeletePropagationBackground
		_ = admin.BatchV1().Jobs(deployNS).Delete(context.Background(), name, metav1.DeleteOptions{PropagationPolicy: &bg})
	})
	var job *batchv1.Job
	waitFor(t, "the prune Job to finish", 3*time.Minute, func() bool {
		j, err := admin.BatchV1().Jobs(deployNS).Get(ctx, name, metav1.GetOptions{})
		job = j
		return err == nil && (j.Status.Succeeded > 0 || j.Status.Failed > 0)
	})
	log := podLogOf(t, node, "lifeboat-prune-e2e-", "prune")
	if job.Status.Succeeded != 1 || !strings.Contains(log, "1 backups: kept") {
		t.Errorf("prune Job: succeeded %d failed %d, log:\n%s", job.Status.Succeeded, job.Status.Failed, log)
	}
}

// podLogOf is the log the kubelet wrote for container of the pod whose
// name starts with prefix (the node's kubelet serves no logs API).
func podLogOf(t *testing.T, node sim.Env, prefix, container string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(node.Get("LIFEBOAT_NODE_DIR"), "pod-logs", deployNS+"_"+prefix+"*", container, "*.log"))
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err == nil {
			fmt.Fprintf(&b, "== %s\n%s", f, data)
		}
	}
	return b.String()
}

func podLogs(t *testing.T, node sim.Env) {
	t.Logf("agent container logs:\n%s", podLogOf(t, node, "lifeboat-", "lifeboat"))
}

// podPrometheus runs Prometheus (the node's build) with the scrape config the
// Prometheus Operator generates for deploy/servicemonitor.yaml (endpoints
// discovery in rook-ceph, the Service's labels, port "metrics", the target
// labels, honor_labels) and deploy/prometheusrule.yaml's rules. One
// addition for the test node: the address is rewritten to 127.0.0.1 (a
// hostNetwork pod's endpoint is the Node's interface address; the agent
// listens on loopback).
func podPrometheus(t *testing.T, node sim.Env, pod *corev1.Pod) {
	bin := node.Get("LIFEBOAT_NODE_PROMETHEUS")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no Prometheus binary (%v): test/node/install.sh prometheus builds it", err)
	}
	dir := t.TempDir()
	_, spec, ok := strings.Cut(readFile(t, "../../deploy/prometheusrule.yaml"), "\nspec:\n")
	if !ok {
		t.Fatal("deploy/prometheusrule.yaml has no spec")
	}
	writeFile(t, filepath.Join(dir, "rules.yaml"), strings.ReplaceAll("\n"+spec, "\n  ", "\n"))
	writeFile(t, filepath.Join(dir, "token"), env.Get("KUBE_ADMIN_TOKEN"))
	writeFile(t, filepath.Join(dir, "prometheus.yaml"), fmt.Sprintf(`global: {scrape_interval: 2s, evaluation_interval: 2s}
rule_files: [rules.yaml]
scrape_configs:
  - job_name: serviceMonitor/rook-ceph/lifeboat/0
    honor_labels: true
    scrape_interval: 2s
    scrape_timeout: 1s
    metrics_path: /metrics
    kubernetes_sd_configs:
      - role: endpoints
        api_server: %q
        namespaces: {names: [rook-ceph]}
        tls_config: {ca_file: %q}
        authorization: {credentials_file: token}
    relabel_configs:
      - {action: keep, source_labels: [__meta_kubernetes_service_label_app_kubernetes_io_name, __meta_kubernetes_service_labelpresent_app_kubernetes_io_name], regex: (lifeboat);true}
      - {action: keep, source_labels: [__meta_kubernetes_service_label_app_kubernetes_io_component, __meta_kubernetes_service_labelpresent_app_kubernetes_io_component], regex: (agent);true}
      - {action: keep, source_labels: [__meta_kubernetes_endpoint_port_name], regex: metrics}
      - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
      - {source_labels: [__meta_kubernetes_service_name], target_label: service}
      - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
      - {source_labels: [__meta_kubernetes_pod_container_name], target_label: container}
      - {source_labels: [__meta_kubernetes_service_name], target_label: job}
      - {target_label: endpoint, replacement: metrics}
      - {source_labels: [__address__], regex: '.+:(\d+)', target_label: __address__, replacement: '127.0.0.1:$1'}
`, env.Get("KUBE_APISERVER"), env.Get("KUBE_CA_FILE")))
	addr := freePort(t)
	cmd := exec.Command(bin, "--config.file", filepath.Join(dir, "prometheus.yaml"), "--web.listen-address", addr,
		"--storage.tsdb.path", filepath.Join(dir, "data"), "--log.level", "warn")
	cmd.Dir = dir
	var log depLog
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", log.String())
		}
	})
	query := func(path string, v any) bool {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(v) == nil
	}
	var targets struct {
		Data struct {
			ActiveTargets []struct {
				Labels map[string]string
				Health string
			}
		}
	}
	waitFor(t, "Prometheus to scrape the pod", time.Minute, func() bool {
		return query("/api/v1/targets", &targets) && len(targets.Data.ActiveTargets) == 1 &&
			targets.Data.ActiveTargets[0].Health == "up"
	})
	got := targets.Data.ActiveTargets[0].Labels
	want := map[string]string{"job": "lifeboat", "namespace": deployNS, "service": "lifeboat", "pod": pod.Name,
		"container": "lifeboat", "endpoint": "metrics", "instance": podMetrics}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("target label %s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	var leader struct {
		Data struct {
			Result []struct {
				Metric map[string]string
				Value  []any
			}
		}
	}
	waitFor(t, "lifeboat_leader in Prometheus", 30*time.Second, func() bool {
		return query("/api/v1/query?query=lifeboat_leader", &leader) && len(leader.Data.Result) == 1
	})
	if r := leader.Data.Result[0]; r.Metric["pod"] != pod.Name || fmt.Sprint(r.Value[1]) != "1" {
		t.Errorf("lifeboat_leader in Prometheus: %v %v, want 1 for pod %s", r.Metric, r.Value, pod.Name)
	}
	// Every alert evaluated (twice, after the scrape) without an error, none firing.
	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name, State, Health, LastError string
				}
			}
		}
	}
	time.Sleep(5 * time.Second)
	if !query("/api/v1/rules", &rules) || len(rules.Data.Groups) != 1 {
		t.Fatalf("Prometheus rules: %+v", rules)
	}
	n := 0
	for _, r := range rules.Data.Groups[0].Rules {
		n++
		if r.Health != "ok" || r.State != "inactive" {
			t.Errorf("alert %s: health %s (%s), state %s; want ok, inactive", r.Name, r.Health, r.LastError, r.State)
		}
	}
	if n < 8 {
		t.Errorf("Prometheus loaded %d alerts, deploy/prometheusrule.yaml has 8", n)
	}
}
