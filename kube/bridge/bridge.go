// Package bridge joins the two halves of a CSI snapshot: the Kubernetes
// objects (kube) and the RBD image behind them (rbd). It resolves handles
// to images and verifies them, and is what the CLI and the controller use.
package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lifeboat-backup/lifeboat/kube"
	"github.com/lifeboat-backup/lifeboat/rbd"
)

// Options say where ceph-csi's configuration lives and how to reach Ceph.
type Options struct {
	Namespace      string // where the ConfigMap and Secret are
	ConfigMap      string
	Secret         string
	DriverSuffix   string
	SnapshotPrefix string
	InstanceID     string
	CephTimeout    time.Duration
	// Override, when set, is used for every cluster instead of the monitors
	// and Secret from Kubernetes (an admin's ceph.conf and keyring). Its ID
	// is replaced by each clusterID.
	Override *rbd.ClusterConfig
}

func (o *Options) defaults() {
	o.Namespace = cmp.Or(o.Namespace, kube.DefaultNamespace)
	o.ConfigMap = cmp.Or(o.ConfigMap, kube.DefaultConfigMap)
	o.Secret = cmp.Or(o.Secret, kube.DefaultSecret)
	o.DriverSuffix = cmp.Or(o.DriverSuffix, kube.DefaultDriverSuffix)
	o.SnapshotPrefix = cmp.Or(o.SnapshotPrefix, rbd.DefaultSnapshotPrefix)
	o.InstanceID = cmp.Or(o.InstanceID, rbd.DefaultInstanceID)
}

// Bridge resolves and verifies CSI snapshots. One Bridge keeps one Ceph
// connection per cluster for its lifetime.
type Bridge struct {
	Kube *kube.Clients
	Ceph *rbd.Registry
	opts Options

	mu       sync.Mutex
	clusters []kube.CSICluster // ceph-csi config, read once
	loaded   bool
}

// New returns a Bridge. Close it to drop its Ceph connections.
func New(k *kube.Clients, opts Options) *Bridge {
	opts.defaults()
	b := &Bridge{Kube: k, opts: opts}
	b.Ceph = rbd.NewRegistry(b.clusterConfig)
	return b
}

// Close drops the Ceph connections.
func (b *Bridge) Close() { b.Ceph.Close() }

// errNoKube: a Bridge made for Ceph alone was asked about Kubernetes.
var errNoKube = errors.New("no Kubernetes API server configured (use --kubeconfig, or run in a pod)")

// ErrUnknownCluster is wrapped when a clusterID is not in ceph-csi's config.
var ErrUnknownCluster = errors.New("clusterID not in ceph-csi's config")

// csiClusters reads ceph-csi's cluster list once per Bridge.
func (b *Bridge) csiClusters(ctx context.Context) ([]kube.CSICluster, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.loaded {
		return b.clusters, nil
	}
	if b.Kube == nil {
		return nil, errNoKube
	}
	cl, err := b.Kube.CSIClusters(ctx, b.opts.Namespace, b.opts.ConfigMap)
	if err != nil {
		return nil, err
	}
	b.clusters, b.loaded = cl, true
	return cl, nil
}

// csiCluster returns the config entry of a clusterID. With an Override, an
// unknown clusterID is fine: the override says how to connect.
func (b *Bridge) csiCluster(ctx context.Context, id string) (kube.CSICluster, error) {
	cl, err := b.csiClusters(ctx)
	if err != nil && b.opts.Override == nil {
		return kube.CSICluster{}, err
	}
	if c, ok := kube.FindCluster(cl, id); ok {
		return c, nil
	}
	if b.opts.Override != nil {
		return kube.CSICluster{ClusterID: id}, nil
	}
	return kube.CSICluster{}, fmt.Errorf("%w: %q is not listed in ConfigMap %s/%s", ErrUnknownCluster, id, b.opts.Namespace, b.opts.ConfigMap)
}

// clusterConfig is the rbd.Registry's lookup.
func (b *Bridge) clusterConfig(ctx context.Context, id string) (rbd.ClusterConfig, error) {
	if o := b.opts.Override; o != nil {
		cfg := *o
		cfg.ID = id
		return cfg, nil
	}
	c, err := b.csiCluster(ctx, id)
	if err != nil {
		return rbd.ClusterConfig{}, err
	}
	cred, err := b.Kube.CephCredentials(ctx, b.opts.Namespace, b.opts.Secret)
	if err != nil {
		return rbd.ClusterConfig{}, err
	}
	return rbd.ClusterConfig{ID: id, Monitors: c.Monitors, User: cred.ID, Key: cred.Key, Timeout: b.opts.CephTimeout}, nil
}

// CSINamespace is the RADOS namespace ceph-csi's config sets for a
// clusterID; ok is false when the config cannot be read or lacks it.
func (b *Bridge) CSINamespace(ctx context.Context, id string) (string, bool) {
	cl, err := b.csiClusters(ctx)
	if err != nil {
		return "", false
	}
	c, ok := kube.FindCluster(cl, id)
	return c.RadosNamespace(), ok
}
