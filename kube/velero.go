package kube

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// VeleroVolumeInfo is the part of Velero's BackupVolumeInfo (v1.13+,
// internal/volume/volumes_information.go) lifeboat reads: which PVC, and
// for a CSI snapshot its handle.
type VeleroVolumeInfo struct {
	PVCName         string       `json:"pvcName"`
	PVCNamespace    string       `json:"pvcNamespace"`
	BackupMethod    string       `json:"backupMethod"`
	Skipped         bool         `json:"skipped"`
	StartTimestamp  *metav1.Time `json:"startTimestamp"`
	CSISnapshotInfo *struct {
		SnapshotHandle string `json:"snapshotHandle"`
		Size           int64  `json:"size"`
		Driver         string `json:"driver"`
		VSCName        string `json:"vscName"`
	} `json:"csiSnapshotInfo"`
}

var downloadRequests = schema.GroupVersionResource{Group: "velero.io", Version: "v1", Resource: "downloadrequests"}

// VeleroVolumes asks the Velero server in namespace ns for backup's
// volume list, as `velero backup describe` does: a DownloadRequest for its
// BackupVolumeInfos, whose signed URL Velero fills in. It needs Velero
// (v1.13+) running against the backup's storage location.
func (c *Clients) VeleroVolumes(ctx context.Context, ns, backup string, timeout time.Duration) ([]VeleroVolumeInfo, error) {
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	req := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "velero.io/v1", "kind": "DownloadRequest",
		"metadata": map[string]any{"generateName": "lifeboat-" + backup + "-", "namespace": ns},
		"spec":     map[string]any{"target": map[string]any{"kind": "BackupVolumeInfos", "name": backup}},
	}}
	api := dyn.Resource(downloadRequests).Namespace(ns)
	created, err := api.Create(ctx, req, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("asking Velero (namespace %s) for backup %s's volumes: creating a DownloadRequest: %w", ns, backup, err)
	}
	defer func() { _ = api.Delete(context.WithoutCancel(ctx), created.GetName(), metav1.DeleteOptions{}) }()
	deadline := time.Now().Add(timeout)
	var url string
	for {
		got, err := api.Get(ctx, created.GetName(), metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("reading DownloadRequest %s/%s: %w", ns, created.GetName(), err)
		}
		phase, _, _ := unstructured.NestedString(got.Object, "status", "phase")
		url, _, _ = unstructured.NestedString(got.Object, "status", "downloadURL")
		if phase == "Processed" && url != "" {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("Velero did not answer DownloadRequest %s/%s within %s (phase %q): is the Velero server running in namespace %s?",
				ns, created.GetName(), timeout, phase, ns)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	return fetchVolumeInfos(ctx, url, backup)
}

func fetchVolumeInfos(ctx context.Context, url, backup string) ([]VeleroVolumeInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("downloading backup %s's volume list from Velero's storage: %w", backup, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("downloading backup %s's volume list from Velero's storage: %s (Velero before v1.13 writes none)", backup, resp.Status)
	}
	zr, err := gzip.NewReader(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("backup %s's volume list: %w", backup, err)
	}
	var infos []VeleroVolumeInfo
	if err := json.NewDecoder(zr).Decode(&infos); err != nil {
		return nil, fmt.Errorf("backup %s's volume list: %w", backup, err)
	}
	return infos, nil
}

var veleroBackups = schema.GroupVersionResource{Group: "velero.io", Version: "v1", Resource: "backups"}

// VeleroBackup is the part of a velero.io/v1 Backup lifeboat reads.
type VeleroBackup struct {
	Name      string
	Phase     string
	Completed time.Time // zero until the backup completes
}

// Done tells whether Velero is finished with the backup and its volume
// list is written: Completed, or PartiallyFailed (some volumes made it).
func (b VeleroBackup) Done() bool { return b.Phase == "Completed" || b.Phase == "PartiallyFailed" }

// ErrNoVelero is returned by VeleroBackups when the velero.io API is not
// served: Velero is not installed.
var ErrNoVelero = errors.New("the velero.io/v1 API is not served: is Velero installed?")

// VeleroBackups lists the Backups in Velero's namespace ns.
func (c *Clients) VeleroBackups(ctx context.Context, ns string) ([]VeleroBackup, error) {
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	l, err := dyn.Resource(veleroBackups).Namespace(ns).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		return nil, ErrNoVelero
	}
	if err != nil {
		return nil, fmt.Errorf("listing Velero backups in namespace %s: %w", ns, err)
	}
	out := make([]VeleroBackup, 0, len(l.Items))
	for _, o := range l.Items {
		b := VeleroBackup{Name: o.GetName()}
		b.Phase, _, _ = unstructured.NestedString(o.Object, "status", "phase")
		if s, _, _ := unstructured.NestedString(o.Object, "status", "completionTimestamp"); s != "" {
			b.Completed, _ = time.Parse(time.RFC3339, s)
		}
		out = append(out, b)
	}
	return out, nil
}
