package kube

import (
	"context"
	"errors"
	"strings"
	"testing"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func ptr[T any](v T) *T { return &v }

func TestCSIClusters(t *testing.T) {
	rook := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "rook-ceph", Name: "rook-ceph-csi-config"},
		Data: map[string]string{"csi-cluster-config-json": `[{"clusterID":"rook-ceph","monitors":["127.0.0.9:6789"],"rbd":{"radosNamespace":"tenant"}}]`}}
	plain := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ceph-csi", Name: "ceph-csi-config"},
		Data: map[string]string{"config.json": `[{"clusterID":"abc","monitors":["m1","m2"],"radosNamespace":"legacy"}]`}}
	bad := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "bad"}, Data: map[string]string{"config.json": `{`}}
	empty := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "empty"}}
	c := &Clients{Kube: fake.NewClientset(rook, plain, bad, empty)}
	ctx := context.Background()

	cl, err := c.CSIClusters(ctx, "rook-ceph", "rook-ceph-csi-config")
	if err != nil || len(cl) != 1 || cl[0].RadosNamespace() != "tenant" || cl[0].Monitors[0] != "127.0.0.9:6789" {
		t.Fatalf("rook config: %+v, %v", cl, err)
	}
	cl, err = c.CSIClusters(ctx, "ceph-csi", "ceph-csi-config")
	if err != nil || len(cl) != 1 || cl[0].RadosNamespace() != "legacy" {
		t.Fatalf("plain ceph-csi config: %+v, %v", cl, err)
	}
	if _, ok := FindCluster(cl, "abc"); !ok {
		t.Error("FindCluster(abc) not found")
	}
	if _, ok := FindCluster(cl, "nope"); ok {
		t.Error("FindCluster(nope) found")
	}
	if _, err := c.CSIClusters(ctx, "x", "missing"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "--csi-config-map") {
		t.Errorf("missing ConfigMap: %v", err)
	}
	if _, err := c.CSIClusters(ctx, "x", "bad"); err == nil || !strings.Contains(err.Error(), "not a JSON list") {
		t.Errorf("bad JSON: %v", err)
	}
	if _, err := c.CSIClusters(ctx, "x", "empty"); !errors.Is(err, ErrNotFound) {
		t.Errorf("no key: %v", err)
	}
}

func TestCephCredentials(t *testing.T) {
	good := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "rook-ceph", Name: "s"},
		Data: map[string][]byte{"userID": []byte("csi-rbd-provisioner"), "userKey": []byte("AQSECRET==")}}
	legacy := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "rook-ceph", Name: "l"},
		Data: map[string][]byte{"adminID": []byte("admin"), "adminKey": []byte("AQADMIN==")}}
	none := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "rook-ceph", Name: "n"}}
	c := &Clients{Kube: fake.NewClientset(good, legacy, none)}
	ctx := context.Background()
	cred, err := c.CephCredentials(ctx, "rook-ceph", "s")
	if err != nil || cred.ID != "csi-rbd-provisioner" || cred.Key != "AQSECRET==" {
		t.Fatalf("creds: %+v %v", cred, err)
	}
	if s := cred.String(); strings.Contains(s, "AQSECRET") {
		t.Errorf("String() leaks the key: %s", s)
	}
	if cred, err := c.CephCredentials(ctx, "rook-ceph", "l"); err != nil || cred.ID != "admin" {
		t.Errorf("legacy creds: %+v %v", cred, err)
	}
	if _, err := c.CephCredentials(ctx, "rook-ceph", "n"); !errors.Is(err, ErrNotFound) {
		t.Errorf("empty secret: %v", err)
	}
	if _, err := c.CephCredentials(ctx, "rook-ceph", "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing secret: %v", err)
	}
}

func TestIsRBDDriver(t *testing.T) {
	for d, want := range map[string]bool{
		"rook-ceph.rbd.csi.ceph.com": true, "rbd.csi.ceph.com": true, "storage.rbd.csi.ceph.com": true,
		"rook-ceph.cephfs.csi.ceph.com": false, "ebs.csi.aws.com": false, "xrbd.csi.ceph.com": false,
	} {
		if got := IsRBDDriver(d, ""); got != want {
			t.Errorf("IsRBDDriver(%q) = %v", d, got)
		}
	}
}

func TestListSnapshots(t *testing.T) {
	vs := &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "velero-db-x", Labels: map[string]string{VeleroBackupLabel: "nightly"}},
		Spec:       snapv1.VolumeSnapshotSpec{Source: snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr("db")}},
	}
	rbdContent := &snapv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: "snapcontent-b"},
		Spec: snapv1.VolumeSnapshotContentSpec{Driver: "rook-ceph.rbd.csi.ceph.com",
			VolumeSnapshotRef: corev1.ObjectReference{Namespace: "shop", Name: "velero-db-x"}},
		Status: &snapv1.VolumeSnapshotContentStatus{SnapshotHandle: ptr("h1"), ReadyToUse: ptr(true), RestoreSize: ptr(int64(42))},
	}
	preprov := &snapv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: "snapcontent-a"},
		Spec: snapv1.VolumeSnapshotContentSpec{Driver: "rbd.csi.ceph.com",
			Source: snapv1.VolumeSnapshotContentSource{SnapshotHandle: ptr("h2")}},
	}
	other := &snapv1.VolumeSnapshotContent{ObjectMeta: metav1.ObjectMeta{Name: "snapcontent-c"},
		Spec: snapv1.VolumeSnapshotContentSpec{Driver: "ebs.csi.aws.com"}}
	c := &Clients{Snap: snapfake.NewSimpleClientset(vs, rbdContent, preprov, other)}
	got, err := c.ListSnapshots(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Content.Name != "snapcontent-a" || got[1].Content.Name != "snapcontent-b" {
		t.Fatalf("ListSnapshots = %v", got)
	}
	a, b := got[0], got[1]
	if a.Handle() != "h2" || a.Ready() || a.PVC() != "" || a.VolumeSnapshotName() != "" || a.RestoreSize() != 0 {
		t.Errorf("pre-provisioned: handle %q ready %v pvc %q", a.Handle(), a.Ready(), a.PVC())
	}
	if b.Handle() != "h1" || !b.Ready() || b.PVC() != "shop/db" || b.VolumeSnapshotName() != "shop/velero-db-x" ||
		b.RestoreSize() != 42 || b.VeleroBackup() != "nightly" {
		t.Errorf("dynamic: handle %q ready %v pvc %q vs %q size %d backup %q", b.Handle(), b.Ready(), b.PVC(), b.VolumeSnapshotName(), b.RestoreSize(), b.VeleroBackup())
	}
	s, err := c.GetContent(context.Background(), "snapcontent-b")
	if err != nil || s.Snapshot == nil || s.PVC() != "shop/db" {
		t.Errorf("GetContent: %+v %v", s, err)
	}
	if _, err := c.GetContent(context.Background(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetContent(nope): %v", err)
	}
	if _, err := c.GetVolumeSnapshot(context.Background(), "shop", "velero-db-x"); err == nil || !strings.Contains(err.Error(), "not bound") {
		t.Errorf("unbound VolumeSnapshot: %v", err)
	}
}
