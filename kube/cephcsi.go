package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Where Rook keeps ceph-csi's configuration, and the keys plain ceph-csi
// uses instead.
const (
	DefaultNamespace  = "rook-ceph"
	DefaultConfigMap  = "rook-ceph-csi-config"
	DefaultSecret     = "rook-csi-rbd-provisioner"
	rookConfigKey     = "csi-cluster-config-json"
	cephCSIConfigKey  = "config.json"
	secretUserIDKey   = "userID"
	secretUserKeyKey  = "userKey"
	secretAdminIDKey  = "adminID"
	secretAdminKeyKey = "adminKey"
)

// CSICluster is one entry of ceph-csi's cluster configuration.
type CSICluster struct {
	ClusterID string   `json:"clusterID"`
	Monitors  []string `json:"monitors"`
	RBD       struct {
		RadosNamespace string `json:"radosNamespace"`
	} `json:"rbd"`
	// Older ceph-csi releases put radosNamespace at the top level.
	LegacyRadosNamespace string `json:"radosNamespace"`
}

// RadosNamespace is the RADOS namespace ceph-csi uses for RBD images of
// this cluster ("" for the default namespace).
func (c CSICluster) RadosNamespace() string {
	if c.RBD.RadosNamespace != "" {
		return c.RBD.RadosNamespace
	}
	return c.LegacyRadosNamespace
}

// ErrNotFound is wrapped when a ConfigMap, Secret or key lifeboat needs is
// absent.
var ErrNotFound = errors.New("not found")

// CSIClusters reads ceph-csi's cluster list from a ConfigMap (Rook's
// csi-cluster-config-json key, or plain ceph-csi's config.json).
func (c *Clients) CSIClusters(ctx context.Context, namespace, name string) ([]CSICluster, error) {
	cm, err := c.Kube.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("ceph-csi config: ConfigMap %s/%s %w (set --csi-config-map to where ceph-csi's cluster list is)", namespace, name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading ceph-csi ConfigMap %s/%s: %w", namespace, name, err)
	}
	raw, ok := cm.Data[rookConfigKey]
	if !ok {
		raw, ok = cm.Data[cephCSIConfigKey]
	}
	if !ok {
		return nil, fmt.Errorf("ceph-csi config: ConfigMap %s/%s has neither key %q nor %q: %w", namespace, name, rookConfigKey, cephCSIConfigKey, ErrNotFound)
	}
	var clusters []CSICluster
	if err := json.Unmarshal([]byte(raw), &clusters); err != nil {
		return nil, fmt.Errorf("ceph-csi config in ConfigMap %s/%s is not a JSON list of clusters: %w", namespace, name, err)
	}
	return clusters, nil
}

// FindCluster returns the entry for a clusterID.
func FindCluster(clusters []CSICluster, id string) (CSICluster, bool) {
	for _, c := range clusters {
		if c.ClusterID == id {
			return c, true
		}
	}
	return CSICluster{}, false
}

// Credentials are a cephx user and key from a ceph-csi Secret.
type Credentials struct {
	ID  string
	Key string
}

// String never prints the key.
func (c Credentials) String() string { return "client." + c.ID }

// CephCredentials reads a ceph-csi credentials Secret: userID/userKey as
// Rook and ceph-csi write them (adminID/adminKey in older deployments).
func (c *Clients) CephCredentials(ctx context.Context, namespace, name string) (Credentials, error) {
	s, err := c.Kube.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Credentials{}, fmt.Errorf("Ceph credentials: Secret %s/%s %w (set --ceph-secret)", namespace, name, ErrNotFound)
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("reading Ceph credentials Secret %s/%s: %w", namespace, name, err)
	}
	for _, keys := range [][2]string{{secretUserIDKey, secretUserKeyKey}, {secretAdminIDKey, secretAdminKeyKey}} {
		id, key := string(s.Data[keys[0]]), string(s.Data[keys[1]])
		if id != "" && key != "" {
			return Credentials{ID: id, Key: key}, nil
		}
	}
	return Credentials{}, fmt.Errorf("Ceph credentials: Secret %s/%s has no %s/%s pair: %w", namespace, name, secretUserIDKey, secretUserKeyKey, ErrNotFound)
}
