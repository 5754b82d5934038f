//go:build e2e

package e2e

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// TestDeploy's checks of the rendered manifests: the pod template, its
// security, the prune CronJob and the monitoring objects.

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
