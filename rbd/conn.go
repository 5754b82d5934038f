package rbd

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ceph/go-ceph/rados"
)

// DefaultTimeout bounds connecting to a cluster and each monitor or OSD
// operation, so an unreachable cluster fails instead of hanging.
const DefaultTimeout = 10 * time.Second

// ClusterConfig says how to reach one Ceph cluster: either monitors plus a
// cephx user and key (what ceph-csi's config map and Secret give), or a
// ceph.conf file plus optional user and keyring (what an admin has).
type ClusterConfig struct {
	// ID names the cluster in messages: the ceph-csi clusterID.
	ID       string
	Monitors []string
	User     string // cephx id without "client.", e.g. csi-rbd-provisioner
	Key      string // cephx key; never logged
	ConfFile string
	Keyring  string
	Timeout  time.Duration
}

func (c ClusterConfig) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

// where describes the cluster for error messages, without secrets.
func (c ClusterConfig) where() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Ceph cluster %q", c.ID)
	if len(c.Monitors) > 0 {
		fmt.Fprintf(&b, " (monitors %s", strings.Join(c.Monitors, ","))
	} else {
		fmt.Fprintf(&b, " (conf %s", c.ConfFile)
	}
	if c.User != "" {
		fmt.Fprintf(&b, ", user client.%s", c.User)
	}
	b.WriteString(")")
	return b.String()
}

// DefaultParallel is how many operations lifeboat runs at once on one
// cluster connection by default (librados multiplexes them). The S3 side
// has its own, objectstore.DefaultParallel: neither package knows the
// other, and the two need not stay equal.
const DefaultParallel = 8

// ErrUnreachable is wrapped when a cluster cannot be connected to in time or
// refuses the credentials.
var ErrUnreachable = errors.New("cannot connect to Ceph")

// Cluster is one open connection to a Ceph cluster. It is safe for
// concurrent use; librados multiplexes every image and pool over it.
type Cluster struct {
	Config ClusterConfig
	FSID   string
	conn   *rados.Conn
	// waiting counts reads retrying after a timeout right now (see
	// retry): the cluster is in an outage while it is above zero.
	waiting atomic.Int64
}

// Waiting reports whether reads on this connection are waiting for Ceph
// to answer again (an OSD or monitor restart).
func (c *Cluster) Waiting() bool { return c.waiting.Load() > 0 }

// opened counts connections ever made by this process, so tests and
// benchmarks can prove connections are reused.
var opened atomic.Int64

// ConnectionsOpened returns how many Ceph connections this process opened.
func ConnectionsOpened() int64 { return opened.Load() }

// Connect opens a connection. It returns within the configured timeout even
// when librados would keep retrying an unreachable monitor.
func Connect(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	conn, err := newConn(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnreachable, cfg.where(), err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout()+time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- conn.Connect() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// librados cannot be interrupted; let the attempt finish in the
		// background and shut the handle down then.
		go func() { <-done; conn.Shutdown() }()
		return nil, fmt.Errorf("%w: %s: no answer within %s: check the monitor addresses and that this host can reach them",
			ErrUnreachable, cfg.where(), cfg.timeout())
	}
	if err != nil {
		conn.Shutdown()
		return nil, fmt.Errorf("%w: %s: %v: check the monitor addresses, the user and its key", ErrUnreachable, cfg.where(), err)
	}
	opened.Add(1)
	fsid, err := conn.GetFSID()
	if err != nil {
		conn.Shutdown()
		return nil, fmt.Errorf("%s: reading fsid: %w", cfg.where(), err)
	}
	return &Cluster{Config: cfg, FSID: fsid, conn: conn}, nil
}

func newConn(cfg ClusterConfig) (*rados.Conn, error) {
	// librados logs a key it cannot decode, verbatim, to stderr: refuse it
	// here instead.
	if cfg.Key != "" && !validKey(cfg.Key) {
		return nil, fmt.Errorf("the cephx key of client.%s is not a Ceph key (base64 of a 28-byte CryptoKey, like ceph auth get-key prints)", cfg.User)
	}
	// The cluster named "ceph", as the Ceph CLIs name it: go-ceph's NewConn
	// and NewConnWithUser leave the name empty (rados_create), and librados
	// then never applies a setting to its log, so the log settings below
	// would not keep it off stderr.
	conn, err := rados.NewConnWithClusterAndUser("ceph", "client."+cmp.Or(cfg.User, "admin"))
	if err != nil {
		return nil, err
	}
	if cfg.ConfFile != "" {
		if err := conn.ReadConfigFile(cfg.ConfFile); err != nil {
			return nil, fmt.Errorf("reading %s: %v", cfg.ConfFile, err)
		}
	}
	secs := strconv.Itoa(int(cfg.timeout().Seconds() + 0.5))
	opts := [][2]string{
		{"client_mount_timeout", secs},
		{"rados_mon_op_timeout", secs},
		{"rados_osd_op_timeout", secs},
		// librados' own log goes nowhere: lifeboat reports what fails
		// through the errors librados returns. Left alone it prints
		// messenger errors on stderr (an unprefixed monitor address on a
		// port other than 6789 is tried as msgr2 first: "_handle_peer_banner
		// ... is using msgr V1 protocol"), and a ceph.conf may name a log
		// file or an admin socket, which the agent's read-only root
		// filesystem refuses. go-ceph has no hook to route that log into
		// slog (rados_monitor_log2 forwards the monitors' cluster log, not
		// the client's own lines), so it is silenced.
		{"log_to_stderr", "false"},
		{"err_to_stderr", "false"},
		{"log_to_file", "false"},
		{"log_file", ""},
		{"admin_socket", ""},
		// lifeboat reads each byte once and writes restores in full chunks:
		// librbd's cache (32 MiB per open image) would only cost memory.
		{"rbd_cache", "false"},
		// ImageWriter's AIO writes then send its buffers as they are
		// instead of a copy (lifeboat does not touch a buffer in flight).
		{"rbd_disable_zero_copy_writes", "false"},
	}
	if len(cfg.Monitors) > 0 {
		opts = append(opts, [2]string{"mon_host", strings.Join(cfg.Monitors, ",")})
	}
	if cfg.Key != "" {
		opts = append(opts, [2]string{"key", cfg.Key})
	}
	if cfg.Keyring != "" {
		opts = append(opts, [2]string{"keyring", cfg.Keyring})
	}
	for _, o := range opts {
		if err := conn.SetConfigOption(o[0], o[1]); err != nil {
			return nil, fmt.Errorf("setting %s: %v", o[0], err)
		}
	}
	return conn, nil
}

// Close shuts the connection down.
func (c *Cluster) Close() { c.conn.Shutdown() }

// ErrPoolNotFound is wrapped when a pool ID or name does not exist.
var ErrPoolNotFound = errors.New("pool not found")

// PoolName maps a pool ID (as encoded in a ceph-csi handle) to its name.
func (c *Cluster) PoolName(id int64) (string, error) {
	name, err := c.conn.GetPoolByID(id)
	if err != nil || name == "" {
		if err == nil || errors.Is(err, rados.ErrNotFound) {
			return "", fmt.Errorf("%w: no pool with ID %d in %s", ErrPoolNotFound, id, c.Config.where())
		}
		return "", fmt.Errorf("looking up pool ID %d in %s: %w", id, c.Config.where(), err)
	}
	return name, nil
}

// IOContext opens a pool, set to a RADOS namespace. Callers Destroy it.
func (c *Cluster) IOContext(pool, namespace string) (*rados.IOContext, error) {
	ioctx, err := c.conn.OpenIOContext(pool)
	if err != nil {
		if errors.Is(err, rados.ErrNotFound) {
			return nil, fmt.Errorf("%w: %q in %s", ErrPoolNotFound, pool, c.Config.where())
		}
		return nil, fmt.Errorf("opening pool %q in %s: %w", pool, c.Config.where(), err)
	}
	ioctx.SetNamespace(namespace)
	return ioctx, nil
}

// Registry hands out one shared connection per cluster, connecting on first
// use and reconnecting after Forget. A verify of hundreds of snapshots thus
// opens one connection per cluster, not one per snapshot.
type Registry struct {
	lookup func(ctx context.Context, clusterID string) (ClusterConfig, error)

	mu       sync.Mutex
	clusters map[string]*clusterSlot
}

type clusterSlot struct {
	once sync.Once
	c    *Cluster
	err  error
}

// NewRegistry returns a Registry that finds a cluster's connection settings
// with lookup (for instance from ceph-csi's config map).
func NewRegistry(lookup func(ctx context.Context, clusterID string) (ClusterConfig, error)) *Registry {
	return &Registry{lookup: lookup, clusters: map[string]*clusterSlot{}}
}

// Get returns the connection to a cluster, connecting if needed. Concurrent
// callers for one cluster share a single connection attempt.
func (r *Registry) Get(ctx context.Context, clusterID string) (*Cluster, error) {
	r.mu.Lock()
	slot, ok := r.clusters[clusterID]
	if !ok {
		slot = &clusterSlot{}
		r.clusters[clusterID] = slot
	}
	r.mu.Unlock()
	slot.once.Do(func() {
		cfg, err := r.lookup(ctx, clusterID)
		if err != nil {
			slot.err = err
			return
		}
		slot.c, slot.err = Connect(ctx, cfg)
	})
	return slot.c, slot.err
}

// Forget drops a cluster's connection (after a failure) so the next Get
// reconnects.
func (r *Registry) Forget(clusterID string) {
	r.mu.Lock()
	slot := r.clusters[clusterID]
	delete(r.clusters, clusterID)
	r.mu.Unlock()
	if slot != nil && slot.c != nil {
		slot.c.Close()
	}
}

// Waiting returns the ids of the clusters whose connection has reads
// waiting for Ceph to answer again.
func (r *Registry) Waiting() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]bool{}
	for id, slot := range r.clusters {
		if slot.c != nil {
			out[id] = slot.c.Waiting()
		}
	}
	return out
}

// Close shuts every connection down.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, slot := range r.clusters {
		if slot.c != nil {
			slot.c.Close()
		}
		delete(r.clusters, id)
	}
}

// validKey checks the shape of a cephx key: base64 of a CryptoKey, which is
// a u16 type, a u64 creation time, a u16 secret length and the secret.
func validKey(k string) bool {
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil || len(b) < 12 {
		return false
	}
	return int(binary.LittleEndian.Uint16(b[10:12])) == len(b)-12
}
