package csidriver

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"
	"github.com/ceph/go-ceph/rbd/admin"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lifeboat-backup/lifeboat/rbd/handle"
)

// Defaults of the lbcsi flags.
const (
	DefaultDriverName = "rook-ceph.rbd.csi.ceph.com"
	DefaultInstanceID = "default"
)

// Version is reported by GetPluginInfo.
const Version = "lifeboat-lbcsi-1"

// Options configure a Driver.
type Options struct {
	DriverName string // DefaultDriverName when ""
	InstanceID string // DefaultInstanceID when ""
	ConfigPath string // ceph-csi config.json, read on every request
	Logger     *slog.Logger
}

// Driver is the Identity and Controller services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer

	opts  Options
	log   *slog.Logger
	locks keyLocks
}

// New returns a Driver.
func New(opts Options) *Driver {
	if opts.DriverName == "" {
		opts.DriverName = DefaultDriverName
	}
	if opts.InstanceID == "" {
		opts.InstanceID = DefaultInstanceID
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return &Driver{opts: opts, log: opts.Logger, locks: keyLocks{held: map[string]bool{}}}
}

// Serve listens on endpoint ("unix:///abs/path.sock"; a stale socket file
// is removed) and serves until ctx ends, then stops gracefully and removes
// the socket.
func (d *Driver) Serve(ctx context.Context, endpoint string) error {
	path, err := SocketPath(endpoint)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	defer os.Remove(path)
	srv := grpc.NewServer(grpc.UnaryInterceptor(d.logCall))
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterControllerServer(srv, d)
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
			return
		}
		t := time.AfterFunc(10*time.Second, srv.Stop)
		srv.GracefulStop()
		t.Stop()
	}()
	d.log.Info("serving CSI", "endpoint", endpoint, "driver", d.opts.DriverName, "instance", d.opts.InstanceID, "config", d.opts.ConfigPath)
	err = srv.Serve(l)
	close(done)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// SocketPath checks a "unix:///abs/path" endpoint and returns the path.
func SocketPath(endpoint string) (string, error) {
	path, ok := strings.CutPrefix(endpoint, "unix://")
	if !ok || !strings.HasPrefix(path, "/") {
		return "", fmt.Errorf("endpoint %q: want unix:///absolute/path.sock", endpoint)
	}
	return path, nil
}

// logCall logs each call's method, duration and outcome; never the request
// (it carries the secrets).
func (d *Driver) logCall(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	attrs := []any{"method", info.FullMethod, "took", time.Since(start).Round(time.Millisecond)}
	attrs = append(attrs, requestIDs(req)...)
	if err != nil {
		d.log.Warn("call failed", append(attrs, "code", status.Code(err).String(), "err", status.Convert(err).Message())...)
	} else if !strings.HasSuffix(info.FullMethod, "/Probe") {
		switch r := resp.(type) {
		case *csi.CreateVolumeResponse:
			attrs = append(attrs, "created", r.GetVolume().GetVolumeId())
		case *csi.CreateSnapshotResponse:
			attrs = append(attrs, "created", r.GetSnapshot().GetSnapshotId())
		}
		d.log.Info("call", attrs...)
	}
	return resp, err
}

// requestIDs picks the request's names and handles for the log (never its
// secrets or parameters).
func requestIDs(req any) []any {
	var out []any
	if r, ok := req.(interface{ GetName() string }); ok && r.GetName() != "" {
		out = append(out, "name", r.GetName())
	}
	if r, ok := req.(interface{ GetVolumeId() string }); ok && r.GetVolumeId() != "" {
		out = append(out, "volume", r.GetVolumeId())
	}
	if r, ok := req.(interface{ GetSourceVolumeId() string }); ok && r.GetSourceVolumeId() != "" {
		out = append(out, "source", r.GetSourceVolumeId())
	}
	if r, ok := req.(interface{ GetSnapshotId() string }); ok && r.GetSnapshotId() != "" {
		out = append(out, "snapshot", r.GetSnapshotId())
	}
	return out
}

// keyLocks is ceph-csi's util.VolumeLocks: a second operation on a key in
// flight is refused with Aborted (the sidecars retry).
type keyLocks struct {
	mu   sync.Mutex
	held map[string]bool
}

func (l *keyLocks) acquire(keys ...string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		if l.held[k] {
			return nil, status.Errorf(codes.Aborted, "an operation with the given Volume ID %s already exists", k)
		}
	}
	for _, k := range keys {
		l.held[k] = true
	}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, k := range keys {
			delete(l.held, k)
		}
	}, nil
}

// credentials reads userID/userKey like util.NewUserCredentials.
func credentials(secrets map[string]string) (user, key string, err error) {
	if user = secrets["userID"]; user == "" {
		return "", "", errors.New("missing ID field 'userID' in secrets")
	}
	if key = secrets["userKey"]; key == "" {
		return "", "", errors.New("missing key field 'userKey' in secrets")
	}
	return user, key, nil
}

// conn is one request's connection to a cluster, opened to one pool and
// the config's RADOS namespace.
type conn struct {
	rados     *rados.Conn
	clusterID string
	info      ClusterInfo
	pool      string
	poolID    int64
	ioctx     *rados.IOContext
}

func (c *conn) close() {
	if c.ioctx != nil {
		c.ioctx.Destroy()
	}
	if c.rados != nil {
		c.rados.Shutdown()
	}
}

// handle encodes a ceph-csi handle for uuid in this connection's cluster
// and pool (util.GenerateVolID / ComposeCSIID).
func (c *conn) handle(id string) (string, error) {
	h := handle.ID{Version: handle.Version, ClusterID: c.clusterID, PoolID: c.poolID, UUID: id}.String()
	if _, err := handle.Decode(h); err != nil {
		return "", fmt.Errorf("CSI ID encoding: %w", err)
	}
	return h, nil
}

// connect reads the config entry of clusterID and connects with the
// request's credentials. A new connection per request: the config may
// have repointed the clusterID at another cluster since the last one.
func (d *Driver) connect(ctx context.Context, clusterID string, secrets map[string]string) (*conn, error) {
	user, key, err := credentials(secrets)
	if err != nil {
		return nil, err
	}
	info, err := ReadConfig(d.opts.ConfigPath, clusterID)
	if err != nil {
		return nil, err
	}
	rc, err := dial(ctx, info.Monitors, user, key)
	if err != nil {
		return nil, fmt.Errorf("cluster ID %q: %w", clusterID, err)
	}
	return &conn{rados: rc, clusterID: clusterID, info: info}, nil
}

// connectTimeout bounds connecting and each monitor command, so that a
// cluster that is gone fails the request instead of hanging it. OSD
// operations get no timeout, as in ceph-csi (which sets none): librbd's
// clone, snapshot and trash state machines expect their OSD ops to finish,
// and a bound shorter than the OSDs' own failure detection (heartbeat
// grace 20 s + interval 6 s) fails ops on a busy cluster that would have
// gone through.
const connectTimeout = 10 * time.Second

// dial connects to the monitors as client.<user> with a cephx key, like
// ceph-csi's connection pool (internal/util/conn_pool.go) minus the pool.
func dial(ctx context.Context, monitors []string, user, key string) (*rados.Conn, error) {
	// librados prints a key it cannot decode to stderr: refuse it here.
	if _, err := base64.StdEncoding.DecodeString(key); err != nil {
		return nil, fmt.Errorf("the userKey of client.%s is not a cephx key (base64)", user)
	}
	rc, err := rados.NewConnWithUser(user)
	if err != nil {
		return nil, err
	}
	secs := strconv.Itoa(int(connectTimeout.Seconds()))
	for _, o := range [][2]string{
		{"mon_host", strings.Join(monitors, ",")}, {"key", key},
		{"client_mount_timeout", secs}, {"rados_mon_op_timeout", secs},
		{"log_to_stderr", "false"}, {"err_to_stderr", "false"},
	} {
		if err := rc.SetConfigOption(o[0], o[1]); err != nil {
			rc.Shutdown()
			return nil, fmt.Errorf("setting %s: %w", o[0], err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- rc.Connect() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		go func() { <-done; rc.Shutdown() }() // librados cannot be interrupted
		return nil, ctx.Err()
	}
	if err != nil {
		rc.Shutdown()
		return nil, fmt.Errorf("connecting to monitors %s as client.%s: %w: check the monitors in the config and the Secret's key",
			strings.Join(monitors, ","), user, err)
	}
	return rc, nil
}

// ErrPoolNotFound is wrapped when a handle's pool ID is not in the cluster
// (ceph-csi's util.ErrPoolNotFound).
var ErrPoolNotFound = errors.New("pool not found")

// openPool sets the connection's pool by name (and the config's RADOS
// namespace).
func (c *conn) openPool(pool string) error {
	ioctx, err := c.rados.OpenIOContext(pool)
	if err != nil {
		if errors.Is(err, rados.ErrNotFound) {
			return fmt.Errorf("%w: %q in cluster ID %q", ErrPoolNotFound, pool, c.clusterID)
		}
		return fmt.Errorf("opening pool %q: %w", pool, err)
	}
	ioctx.SetNamespace(c.info.RBD.RadosNamespace)
	c.ioctx, c.pool, c.poolID = ioctx, pool, ioctx.GetPoolID()
	return nil
}

// openPoolID sets the connection's pool by ID (util.GetPoolName).
func (c *conn) openPoolID(id int64) error {
	name, err := c.rados.GetPoolByID(id)
	if err != nil || name == "" {
		if err == nil || errors.Is(err, rados.ErrNotFound) {
			return fmt.Errorf("%w: pool ID(%d) not found in Ceph cluster ID %q", ErrPoolNotFound, id, c.clusterID)
		}
		return fmt.Errorf("looking up pool ID %d: %w", id, err)
	}
	return c.openPool(name)
}

// trashRemoveLater hands an image that stayed in the RBD trash to the
// mgr's rbd_support task queue, as ceph-csi's trashRemoveImage does: the
// mgr retries (30 s, backing off to 5 min) until its children are gone.
func (d *Driver) trashRemoveLater(c *conn, name string) {
	list, err := librbd.GetTrashList(c.ioctx)
	for _, t := range list {
		if t.Name == name && err == nil {
			_, err = admin.NewFromConn(c.rados).Task().AddTrashRemove(admin.NewImageSpec(c.pool, c.info.RBD.RadosNamespace, t.Id))
		}
	}
	if err != nil {
		d.log.Warn("image stays in the RBD trash: no mgr task to remove it later", "image", name, "err", err)
	}
}

// fromHandle decodes a handle, connects to its cluster and opens its pool:
// the first steps of genSnapFromSnapID / generateVolumeFromVolumeID.
func (d *Driver) fromHandle(ctx context.Context, h string, secrets map[string]string) (*conn, handle.ID, error) {
	id, err := handle.Decode(h)
	if err != nil {
		return nil, id, err
	}
	c, err := d.connect(ctx, id.ClusterID, secrets)
	if err != nil {
		return nil, id, err
	}
	if err := c.openPoolID(id.PoolID); err != nil {
		c.close()
		return nil, id, err
	}
	return c, id, nil
}
