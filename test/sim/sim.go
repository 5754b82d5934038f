// Package sim simulates what ceph-csi (v3.x RBD driver, as deployed by Rook),
// the CSI external-provisioner / snapshot-controller / csi-snapshotter
// sidecars and Velero's CSI plugin leave behind in a real Ceph cluster and a
// real Kubernetes API server, without running any of them.
//
// It talks to Ceph with go-ceph (admin credentials from the stack's
// ceph.conf) and to Kubernetes with client-go and the external-snapshotter
// v8 clientset. Everything it creates in Ceph is byte-for-byte what ceph-csi
// would create: images csi-vol-<uuid> and csi-snap-<uuid>, clone v2 chains
// with the parent's temporary snapshot in the trash snapshot namespace, the
// csi.volumes.<instance> / csi.snaps.<instance> journal omaps and handles of
// the form 0001-LLLL-<clusterID>-<poolID>-<uuid>, as ceph-csi's own
// internal/journal/voljournal.go and internal/rbd/ (snapshot.go,
// rbd_journal.go) lay them out; rbd/journal.go reads them back.
//
// No controllers run against the API server, so the simulator writes object
// status itself (through the status subresources) and never adds finalizers
// that nothing would remove.
//
// Build with -tags pacific on hosts with Ceph 16 (Pacific) libraries.
package sim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/lifeboat-backup/lifeboat/rbd/handle"
	"github.com/lifeboat-backup/lifeboat/test/csidriver"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Defaults, as in Rook's example manifests.
const (
	DefaultPool          = "replicapool"
	DefaultClusterID     = "rook-ceph"
	DefaultInstanceID    = "default"
	DefaultDriver        = "rook-ceph.rbd.csi.ceph.com"
	DefaultRookNamespace = "rook-ceph"
	DefaultStorageClass  = "rook-ceph-block"
	DefaultSnapshotClass = "csi-rbdplugin-snapclass"
	// DefaultVolumeFeatures is the feature list Rook's example StorageClass
	// (deploy/examples/csi/rbd/storageclass.yaml) documents for kernels >=
	// 5.4 and which most production clusters use; it enables object-map and
	// fast-diff on the volumes. Rook's example ships with "layering" alone
	// (for old kernels): set Options.VolumeFeatures to that to simulate it.
	DefaultVolumeFeatures = "layering,exclusive-lock,object-map,fast-diff,deep-flatten"

	// Names of the Rook objects ceph-csi (and lifeboat) read.
	RookConfigMap    = "rook-ceph-csi-config"
	RookConfigKey    = "csi-cluster-config-json"
	RookSecret       = "rook-csi-rbd-provisioner"
	RookNodeSecret   = "rook-csi-rbd-node"
	DefaultCSIUserID = "csi-rbd-provisioner"

	// ceph-csi name prefixes (StorageClass volumeNamePrefix and
	// VolumeSnapshotClass snapshotNamePrefix defaults).
	VolumePrefix   = csidriver.VolumePrefix
	SnapshotPrefix = csidriver.SnapshotPrefix
)

// Options configures a Sim. Zero fields take the defaults above.
type Options struct {
	// CephConf is an admin ceph.conf (with keyring); "" uses librados'
	// default search.
	CephConf string
	// Pool holds the images and the journal ("replicapool").
	Pool string
	// RadosNamespace, when set, holds images and journal; it is created
	// (rbd namespace create) if missing.
	RadosNamespace string
	// ClusterID is ceph-csi's cluster ID, the key of its config entry and
	// part of every handle ("rook-ceph").
	ClusterID string
	// InstanceID is ceph-csi's instance ID, the suffix of the journal
	// directory objects ("default").
	InstanceID string
	// Driver is the CSI driver name ("rook-ceph.rbd.csi.ceph.com").
	Driver string
	// Kubeconfig is the kubeconfig file of the API server.
	Kubeconfig string
	// RookNamespace holds the Rook ConfigMap and Secrets ("rook-ceph").
	RookNamespace string
	// VolumeFeatures is the StorageClass imageFeatures of new volumes
	// (DefaultVolumeFeatures). Snapshot clones always get
	// layering,deep-flatten like ceph-csi.
	VolumeFeatures string
	// StorageClass is the name of the StorageClass PVs and PVCs refer to; it
	// is created if missing. Default "rook-ceph-block" when Driver,
	// ClusterID, Pool, RadosNamespace and VolumeFeatures are the defaults,
	// else "rook-ceph-block-<8 hex hash of them>" so that differently
	// configured Sims sharing one API server never share a class.
	StorageClass string
	// LiveDriver is the CSI driver real csi-provisioner and csi-snapshotter
	// serve in the stack (env CSI_DRIVER). When it is Driver, the Sim
	// takes the real path where fabricated objects would race with them
	// (see live.go).
	LiveDriver string
	// CSIConfig is lbcsi's config.json (env CSI_CONFIG); a live Sim adds
	// its clusterID there when missing.
	CSIConfig string
	// SnapshotClass is the VolumeSnapshotClass used for snapshots; it is
	// created if missing with Velero's label. Default
	// "csi-rbdplugin-snapclass", with the same hash suffix rule.
	SnapshotClass string
}

// DefaultOptions returns Options with the defaults filled in, except
// StorageClass and SnapshotClass which New derives from the final options.
func DefaultOptions() Options {
	var o Options
	o.fill()
	return o
}

func (o *Options) fill() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&o.Pool, DefaultPool)
	def(&o.ClusterID, DefaultClusterID)
	def(&o.InstanceID, DefaultInstanceID)
	def(&o.Driver, DefaultDriver)
	def(&o.RookNamespace, DefaultRookNamespace)
	def(&o.VolumeFeatures, DefaultVolumeFeatures)
}

// fillClasses names the classes from the final options (New only, so that
// callers can change DefaultOptions() fields first).
func (o *Options) fillClasses() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	suffix := ""
	if o.Driver != DefaultDriver || o.ClusterID != DefaultClusterID || o.Pool != DefaultPool ||
		o.RadosNamespace != "" || o.VolumeFeatures != DefaultVolumeFeatures {
		h := sha256.Sum256([]byte(strings.Join([]string{o.Driver, o.ClusterID, o.Pool, o.RadosNamespace, o.VolumeFeatures}, "\x00")))
		suffix = "-" + hex.EncodeToString(h[:4])
	}
	def(&o.StorageClass, DefaultStorageClass+suffix)
	def(&o.SnapshotClass, DefaultSnapshotClass+suffix)
}

// Sim holds one RADOS connection and the Kubernetes clients. Its methods are
// safe for concurrent use.
type Sim struct {
	opts     Options
	features uint64

	conn   *rados.Conn
	ioctx  *rados.IOContext // Pool + RadosNamespace
	poolID int64

	// Kube and Snap are the clients the Sim uses; tests may use them too.
	Kube kubernetes.Interface
	Snap snapclient.Interface
}

// New connects to Ceph and Kubernetes. Close releases the connection.
func New(ctx context.Context, opts Options) (*Sim, error) {
	opts.fill()
	opts.fillClasses()
	features, err := csidriver.ParseFeatures(opts.VolumeFeatures)
	if err != nil {
		return nil, err
	}
	s := &Sim{opts: opts, features: features}

	cfg, err := clientcmd.BuildConfigFromFlags("", opts.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	if s.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if s.Snap, err = snapclient.NewForConfig(cfg); err != nil {
		return nil, err
	}

	conn, err := rados.NewConn()
	if err != nil {
		return nil, fmt.Errorf("rados: %w", err)
	}
	if opts.CephConf != "" {
		err = conn.ReadConfigFile(opts.CephConf)
	} else {
		err = conn.ReadDefaultConfigFile()
	}
	if err != nil {
		conn.Shutdown()
		return nil, fmt.Errorf("ceph conf %q: %w", opts.CephConf, err)
	}
	// Fail rather than hang when the cluster is away.
	_ = conn.SetConfigOption("client_mount_timeout", "15")
	_ = conn.SetConfigOption("rados_osd_op_timeout", "60")
	_ = conn.SetConfigOption("rados_mon_op_timeout", "30")
	if err := connectCtx(ctx, conn); err != nil {
		conn.Shutdown()
		return nil, fmt.Errorf("rados connect: %w", err)
	}
	s.conn = conn
	if s.poolID, err = conn.GetPoolByName(opts.Pool); err != nil {
		s.Close()
		return nil, fmt.Errorf("pool %q: %w", opts.Pool, err)
	}
	if s.ioctx, err = conn.OpenIOContext(opts.Pool); err != nil {
		s.Close()
		return nil, fmt.Errorf("pool %q: %w", opts.Pool, err)
	}
	if ns := opts.RadosNamespace; ns != "" {
		ok, err := rbd.NamespaceExists(s.ioctx, ns)
		if err == nil && !ok {
			if err = rbd.NamespaceCreate(s.ioctx, ns); errors.Is(err, rados.ErrObjectExists) || isErrno(err, 17) {
				err = nil // created concurrently
			}
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("rados namespace %q: %w", ns, err)
		}
		s.ioctx.SetNamespace(ns)
	}
	if s.live() {
		if err := s.ensureCSIConfig(); err != nil {
			s.Close()
			return nil, fmt.Errorf("lbcsi config %s: %w", opts.CSIConfig, err)
		}
	}
	return s, nil
}

func connectCtx(ctx context.Context, conn *rados.Conn) error {
	done := make(chan error, 1)
	go func() { done <- conn.Connect() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err() // Connect gives up after client_mount_timeout
	}
}

// Close releases the RADOS connection.
func (s *Sim) Close() {
	if s.ioctx != nil {
		s.ioctx.Destroy()
		s.ioctx = nil
	}
	if s.conn != nil {
		s.conn.Shutdown()
		s.conn = nil
	}
}

// Options returns the effective options.
func (s *Sim) Options() Options { return s.opts }

// PoolID is the ID of Options.Pool, as encoded in handles.
func (s *Sim) PoolID() int64 { return s.poolID }

// IOContext is the Sim's I/O context (pool + RADOS namespace). Do not
// destroy it or change its namespace.
func (s *Sim) IOContext() *rados.IOContext { return s.ioctx }

// Conn is the Sim's RADOS connection.
func (s *Sim) Conn() *rados.Conn { return s.conn }

// MonCommand runs a monitor command given as a JSON-able map and returns
// its output.
func (s *Sim) MonCommand(cmd map[string]any) ([]byte, error) {
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	out, info, err := s.conn.MonCommand(b)
	if err != nil {
		return nil, fmt.Errorf("mon command %s: %w (%s)", b, err, info)
	}
	return out, nil
}

// AuthGetKey returns the cephx key of a Ceph user ("csi-rbd-provisioner" or
// "client.csi-rbd-provisioner").
func (s *Sim) AuthGetKey(ctx context.Context, user string) (string, error) {
	if !strings.Contains(user, ".") {
		user = "client." + user
	}
	out, err := s.MonCommand(map[string]any{"prefix": "auth get-key", "entity": user, "format": "json"})
	if err != nil {
		return "", err
	}
	var r struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.Key == "" {
		return "", fmt.Errorf("auth get-key %s: unexpected output %q", user, out)
	}
	return r.Key, nil
}

// FSID returns the Ceph cluster fsid.
func (s *Sim) FSID() (string, error) { return s.conn.GetFSID() }

// handle builds a handle in the Sim's cluster and pool.
func (s *Sim) handle(uuid string) (string, error) {
	h := handle.ID{Version: handle.Version, ClusterID: s.opts.ClusterID, PoolID: s.poolID, UUID: uuid}.String()
	if _, err := handle.Decode(h); err != nil {
		return "", err
	}
	return h, nil
}

// parseHandle decodes h and checks it belongs to this Sim's cluster and pool.
func (s *Sim) parseHandle(h string) (handle.ID, error) {
	d, err := handle.Decode(h)
	if err != nil {
		return d, err
	}
	if d.ClusterID != s.opts.ClusterID {
		return d, fmt.Errorf("handle %s: clusterID %q, sim serves %q", h, d.ClusterID, s.opts.ClusterID)
	}
	if d.PoolID != s.poolID {
		return d, fmt.Errorf("handle %s: pool id %d, sim uses pool %q (id %d)", h, d.PoolID, s.opts.Pool, s.poolID)
	}
	return d, nil
}

// isErrno reports whether err is a go-ceph error carrying -errno.
func isErrno(err error, errno int) bool {
	var e interface{ ErrorCode() int }
	if errors.As(err, &e) {
		c := e.ErrorCode()
		return c == -errno || c == errno
	}
	return false
}

func timeout(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	return nil
}
