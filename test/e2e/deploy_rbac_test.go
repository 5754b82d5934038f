//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	authnv1 "k8s.io/api/authentication/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TestDeploy's checks of the deployed RBAC: what the ServiceAccount may
// and may not do.

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
