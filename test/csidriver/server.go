package csidriver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lifeboat-backup/lifeboat/rbd"
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
	cluster   *rbd.Cluster
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
	if c.cluster != nil {
		c.cluster.Close()
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
	cl, err := rbd.Connect(ctx, rbd.ClusterConfig{ID: clusterID, Monitors: info.Monitors, User: user, Key: key})
	if err != nil {
		return nil, err
	}
	return &conn{cluster: cl, clusterID: clusterID, info: info}, nil
}

// openPool sets the connection's pool by name (and the config's RADOS
// namespace).
func (c *conn) openPool(pool string) error {
	ioctx, err := c.cluster.IOContext(pool, c.info.RBD.RadosNamespace)
	if err != nil {
		return err
	}
	c.ioctx, c.pool, c.poolID = ioctx, pool, ioctx.GetPoolID()
	return nil
}

// openPoolID sets the connection's pool by ID (util.GetPoolName); an
// unknown ID wraps rbd.ErrPoolNotFound.
func (c *conn) openPoolID(id int64) error {
	name, err := c.cluster.PoolName(id)
	if err != nil {
		return err
	}
	return c.openPool(name)
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
