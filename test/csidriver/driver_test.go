package csidriver_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/lifeboat-backup/lifeboat/rbd"
	"github.com/lifeboat-backup/lifeboat/rbd/handle"
	"github.com/lifeboat-backup/lifeboat/test/csidriver"
	"github.com/lifeboat-backup/lifeboat/test/sim"
)

const (
	mib  = 1 << 20
	pool = "replicapool"
)

// fixture is a driver on a temporary socket, a gRPC client to it and an
// admin view of the stack's Ceph.
type fixture struct {
	t         *testing.T
	ctx       context.Context
	id        csi.IdentityClient
	ctl       csi.ControllerClient
	secrets   map[string]string
	clusterID string
	instance  string
	config    string
	admin     *rbd.Cluster
	ioctx     *rados.IOContext // pool, admin
	poolID    int64
	env       sim.Env
}

// requireCeph loads the stack env; without a reachable Ceph the test fails
// under CI=true and is skipped otherwise (run `make stack-up`).
func requireCeph(t *testing.T) sim.Env {
	t.Helper()
	env, err := sim.LoadEnv()
	if err == nil {
		err = env.Require("CEPH_CONF", "CEPH_MON_HOST_V2", "CEPH_CSI_USER", "CEPH_CSI_KEY")
	}
	if err == nil {
		err = env.Reachable(3 * time.Second)
	}
	if err != nil {
		msg := fmt.Sprintf("local stack not available (%v): run `make stack-up` (env file %s)", err, sim.EnvPath())
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return env
}

func newFixture(t *testing.T) *fixture {
	env := requireCeph(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	f := &fixture{t: t, ctx: ctx, env: env,
		clusterID: "lbcsi-" + uuid.NewString()[:8],
		// A fresh instance ID: our journal directories are ours alone in
		// the shared pool.
		instance: "test-" + uuid.NewString()[:8],
		secrets:  map[string]string{"userID": env.Get("CEPH_CSI_USER"), "userKey": env.Get("CEPH_CSI_KEY")},
	}
	dir := t.TempDir()
	f.config = filepath.Join(dir, "config.json")
	sock := filepath.Join(dir, "csi.sock")
	logs := &syncWriter{}
	d := csidriver.New(csidriver.Options{InstanceID: f.instance, ConfigPath: f.config,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.Serve(sctx, "unix://"+sock) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("driver log:\n%s", logs.String())
		}
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 100 {
			t.Fatal("driver socket did not appear")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	f.id, f.ctl = csi.NewIdentityClient(cc), csi.NewControllerClient(cc)

	if f.admin, err = rbd.Connect(ctx, rbd.ClusterConfig{ID: "admin", ConfFile: env.Get("CEPH_CONF")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.admin.Close)
	if f.ioctx, err = f.admin.IOContext(pool, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.ioctx.Destroy)
	f.poolID = f.ioctx.GetPoolID()
	// The instance's journal directories (emptied by the deletes, as
	// ceph-csi leaves them) go with the test.
	t.Cleanup(func() {
		for _, o := range []string{"csi.volumes." + f.instance, "csi.snaps." + f.instance} {
			_ = f.ioctx.Delete(o)
		}
	})
	return f
}

// syncWriter serialises the driver's log writes into a builder.
type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// writeConfig (re)writes the driver's config entry for the fixture's
// clusterID, as the stack does.
func (f *fixture) writeConfig(monitors []string) {
	f.t.Helper()
	c := csidriver.ClusterInfo{ClusterID: f.clusterID, Monitors: monitors}
	if err := csidriver.SetCluster(f.config, c); err != nil {
		f.t.Fatal(err)
	}
}

var rwo = []*csi.VolumeCapability{{
	AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
	AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
}}

const volFeatures = "layering,exclusive-lock,object-map,fast-diff,deep-flatten"

func (f *fixture) createVolumeReq(name string, size int64, src *csi.VolumeContentSource) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: rwo,
		Parameters: map[string]string{
			"clusterID": f.clusterID, "pool": pool, "imageFeatures": volFeatures, "imageFormat": "2",
			"csi.storage.k8s.io/pvc/namespace": "ns1", "csi.storage.k8s.io/pvc/name": "data",
		},
		Secrets:             f.secrets,
		VolumeContentSource: src,
	}
}

func (f *fixture) createVolume(name string, size int64, src *csi.VolumeContentSource) *csi.Volume {
	f.t.Helper()
	r, err := f.ctl.CreateVolume(f.ctx, f.createVolumeReq(name, size, src))
	if err != nil {
		f.t.Fatalf("CreateVolume %s: %v", name, err)
	}
	return r.GetVolume()
}

func (f *fixture) createSnapshot(name, source string) *csi.Snapshot {
	f.t.Helper()
	r, err := f.ctl.CreateSnapshot(f.ctx, &csi.CreateSnapshotRequest{
		Name: name, SourceVolumeId: source, Secrets: f.secrets,
		Parameters: map[string]string{"clusterID": f.clusterID},
	})
	if err != nil {
		f.t.Fatalf("CreateSnapshot %s: %v", name, err)
	}
	return r.GetSnapshot()
}

func (f *fixture) deleteVolume(h string) {
	f.t.Helper()
	if _, err := f.ctl.DeleteVolume(f.ctx, &csi.DeleteVolumeRequest{VolumeId: h, Secrets: f.secrets}); err != nil {
		f.t.Fatalf("DeleteVolume %s: %v", h, err)
	}
}

func (f *fixture) deleteSnapshot(h string) {
	f.t.Helper()
	if _, err := f.ctl.DeleteSnapshot(f.ctx, &csi.DeleteSnapshotRequest{SnapshotId: h, Secrets: f.secrets}); err != nil {
		f.t.Fatalf("DeleteSnapshot %s: %v", h, err)
	}
}

// decode checks a handle is ours: version 1, the fixture's clusterID, the
// pool's ID.
func (f *fixture) decode(h string) handle.ID {
	f.t.Helper()
	id, err := handle.Decode(h)
	if err != nil {
		f.t.Fatal(err)
	}
	if id.ClusterID != f.clusterID || id.PoolID != f.poolID {
		f.t.Fatalf("handle %s: cluster %q pool %d, want %q %d", h, id.ClusterID, id.PoolID, f.clusterID, f.poolID)
	}
	return id
}

func (f *fixture) omap(oid string) map[string]string {
	f.t.Helper()
	m, err := f.ioctx.GetAllOmapValues(oid, "", "", 100)
	if err != nil {
		f.t.Fatalf("omap %s: %v", oid, err)
	}
	out := map[string]string{}
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

func (f *fixture) exists(oid string) bool {
	_, err := f.ioctx.Stat(oid)
	if err != nil && !errors.Is(err, rados.ErrNotFound) {
		f.t.Fatal(err)
	}
	return err == nil
}

func (f *fixture) imageExists(name string) bool {
	f.t.Helper()
	names, err := librbd.GetImageNames(f.ioctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return slices.Contains(names, name)
}

func (f *fixture) inTrash(name string) bool {
	f.t.Helper()
	list, err := librbd.GetTrashList(f.ioctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return slices.ContainsFunc(list, func(e librbd.TrashInfo) bool { return e.Name == name })
}

// write writes seeded random bytes at off through librbd.
func (f *fixture) write(image string, off int64, n int, seed int64) {
	f.t.Helper()
	img, err := librbd.OpenImage(f.ioctx, image, librbd.NoSnapshot)
	if err != nil {
		f.t.Fatal(err)
	}
	defer img.Close()
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	if _, err := img.WriteAt(b, off); err != nil {
		f.t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		f.t.Fatal(err)
	}
}

// sha reads image (at snap when not "") whole, through its parents, and
// returns its SHA-256.
func (f *fixture) sha(image, snap string, size uint64) string {
	f.t.Helper()
	if snap == "" {
		snap = librbd.NoSnapshot
	}
	img, err := librbd.OpenImageReadOnly(f.ioctx, image, snap)
	if err != nil {
		f.t.Fatalf("open %s@%s: %v", image, snap, err)
	}
	defer img.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(img, 0, int64(size))); err != nil {
		f.t.Fatalf("read %s: %v", image, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// features lists an image's features without "operations" (the op
// features flag librbd adds to clones).
func features(i *rbd.ImageInfo) string {
	return strings.Join(slices.DeleteFunc(i.FeatureNames(), func(n string) bool { return n == "operations" }), ",")
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Errorf("%s: got %v, want code %s with %q", what, err, code, msg)
	}
}

func TestIdentityAndCapabilities(t *testing.T) {
	f := newFixture(t)
	info, err := f.id.GetPluginInfo(f.ctx, &csi.GetPluginInfoRequest{})
	if err != nil || info.GetName() != csidriver.DefaultDriverName {
		t.Fatalf("GetPluginInfo = %v, %v", info, err)
	}
	if _, err := f.id.Probe(f.ctx, &csi.ProbeRequest{}); err != nil {
		t.Fatal(err)
	}
	pc, err := f.id.GetPluginCapabilities(f.ctx, &csi.GetPluginCapabilitiesRequest{})
	if err != nil || len(pc.GetCapabilities()) != 3 ||
		pc.GetCapabilities()[0].GetService().GetType() != csi.PluginCapability_Service_CONTROLLER_SERVICE ||
		pc.GetCapabilities()[1].GetVolumeExpansion().GetType() != csi.PluginCapability_VolumeExpansion_ONLINE {
		t.Fatalf("GetPluginCapabilities = %v, %v", pc, err)
	}
	cc, err := f.ctl.ControllerGetCapabilities(f.ctx, &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []csi.ControllerServiceCapability_RPC_Type
	for _, c := range cc.GetCapabilities() {
		got = append(got, c.GetRpc().GetType())
	}
	want := []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME, csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME, csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
	}
	if !slices.Equal(got, want) {
		t.Errorf("controller capabilities %v, want %v (no LIST_SNAPSHOTS)", got, want)
	}
	// Requests are checked before Ceph is touched, with ceph-csi's codes.
	req := f.createVolumeReq("", mib, nil)
	_, err = f.ctl.CreateVolume(f.ctx, req)
	wantCode(t, "CreateVolume without name", err, codes.InvalidArgument, "volume Name cannot be empty")
	req = f.createVolumeReq("pvc-x", mib, nil)
	req.Secrets = nil
	_, err = f.ctl.CreateVolume(f.ctx, req)
	wantCode(t, "CreateVolume without secrets", err, codes.InvalidArgument, "missing ID field 'userID' in secrets")
	// No config entry for the clusterID.
	if err := csidriver.SetCluster(f.config, csidriver.ClusterInfo{ClusterID: "other", Monitors: []string{"127.0.0.1:1"}}); err != nil {
		t.Fatal(err)
	}
	_, err = f.ctl.CreateVolume(f.ctx, f.createVolumeReq("pvc-x", mib, nil))
	wantCode(t, "CreateVolume of an unknown clusterID", err, codes.InvalidArgument, "missing configuration for cluster ID")
}

// TestVolumeSnapshotRestore drives the whole life of a volume through the
// gRPC API and checks what lands in Ceph against ceph-csi's layout, and that
// lifeboat's resolver finds the images from the handles.
func TestVolumeSnapshotRestore(t *testing.T) {
	f := newFixture(t)
	// The config is read per request: written after the driver started.
	f.writeConfig(f.env.Monitors())
	const size = 24*mib + 1 // rounded up to 25 MiB
	volName := "pvc-" + uuid.NewString()
	vol := f.createVolume(volName, size, nil)
	vid := f.decode(vol.GetVolumeId())
	image := "csi-vol-" + vid.UUID
	if vol.GetCapacityBytes() != 25*mib {
		t.Errorf("capacity %d, want %d", vol.GetCapacityBytes(), 25*mib)
	}
	if vc := vol.GetVolumeContext(); vc["imageName"] != image || vc["pool"] != pool || vc["journalPool"] != pool ||
		vc["clusterID"] != f.clusterID || vc["csi.storage.k8s.io/pvc/name"] != "" {
		t.Errorf("volume context %v", vc)
	}
	info, err := f.admin.Inspect(pool, "", image, false)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != 25*mib || features(info) != volFeatures {
		t.Errorf("image %s: size %d features %v", image, info.Size, info.FeatureNames())
	}
	j := f.omap("csi.volume." + vid.UUID)
	if j["csi.volname"] != volName || j["csi.imagename"] != image || j["csi.imageid"] != info.ID || j["csi.volume.owner"] != "ns1" {
		t.Errorf("volume journal %v (image id %s)", j, info.ID)
	}
	if d := f.omap("csi.volumes." + f.instance); d["csi.volume."+volName] != vid.UUID {
		t.Errorf("volume directory %v", d)
	}
	// Idempotent by request name; a bigger size for the name is a conflict.
	if again := f.createVolume(volName, size, nil); again.GetVolumeId() != vol.GetVolumeId() {
		t.Errorf("retried CreateVolume gave %s, first %s", again.GetVolumeId(), vol.GetVolumeId())
	}
	_, err = f.ctl.CreateVolume(f.ctx, f.createVolumeReq(volName, 2*size, nil))
	wantCode(t, "CreateVolume same name, bigger", err, codes.AlreadyExists, "different size")

	f.write(image, 0, 3*mib, 1)
	f.write(image, 20*mib, mib, 2)
	before := f.sha(image, "", 25*mib)

	snapName := "snapshot-" + uuid.NewString()
	snap := f.createSnapshot(snapName, vol.GetVolumeId())
	sid := f.decode(snap.GetSnapshotId())
	clone := "csi-snap-" + sid.UUID
	if !snap.GetReadyToUse() || snap.GetSizeBytes() != 25*mib || snap.GetSourceVolumeId() != vol.GetVolumeId() ||
		snap.GetCreationTime().AsTime().Before(time.Now().Add(-time.Minute)) {
		t.Errorf("snapshot %v", snap)
	}
	if again := f.createSnapshot(snapName, vol.GetVolumeId()); again.GetSnapshotId() != snap.GetSnapshotId() ||
		!again.GetCreationTime().AsTime().Equal(snap.GetCreationTime().AsTime()) {
		t.Errorf("retried CreateSnapshot gave %v, first %v", again, snap)
	}
	f.checkSnapshotLayout(image, clone, snapName, sid.UUID)
	f.write(image, 0, mib, 3) // after the snapshot: must not show in it
	if got := f.sha(clone, clone, 25*mib); got != before {
		t.Errorf("%s@%s sha256 %s, volume at snapshot time %s", clone, clone, got, before)
	}

	// lifeboat's resolver finds the images from the handles.
	ref, err := f.admin.Resolve(sid, rbd.Snapshot, rbd.ResolveOptions{})
	if err != nil || !ref.FromJournal || ref.Image != clone || ref.Snapshot != clone || ref.Source != image ||
		ref.RequestName != snapName || ref.Pool != pool {
		t.Errorf("Resolve(snapshot) = %+v, %v", ref, err)
	}
	if ref, err := f.admin.Resolve(vid, rbd.Volume, rbd.ResolveOptions{}); err != nil || ref.Image != image || ref.RequestName != volName {
		t.Errorf("Resolve(volume) = %+v, %v", ref, err)
	}

	// Restore: a clone of csi-snap@csi-snap with the StorageClass features.
	fromSnap := &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snap.GetSnapshotId()}}}
	_, err = f.ctl.CreateVolume(f.ctx, f.createVolumeReq("pvc-"+uuid.NewString(), 10*mib, fromSnap))
	wantCode(t, "restore into a smaller volume", err, codes.InvalidArgument, "smaller than source volume size")
	restoredName := "pvc-" + uuid.NewString()
	restored := f.createVolume(restoredName, 25*mib, fromSnap)
	if again := f.createVolume(restoredName, 25*mib, fromSnap); again.GetVolumeId() != restored.GetVolumeId() {
		t.Errorf("retried restore gave %s, first %s", again.GetVolumeId(), restored.GetVolumeId())
	}
	rimage := "csi-vol-" + f.decode(restored.GetVolumeId()).UUID
	rinfo, err := f.admin.Inspect(pool, "", rimage, false)
	if err != nil {
		t.Fatal(err)
	}
	if rinfo.Parent == nil || rinfo.Parent.Image != clone || rinfo.Parent.Snap != clone ||
		features(rinfo) != volFeatures {
		t.Errorf("restored %s: parent %+v features %v", rimage, rinfo.Parent, rinfo.FeatureNames())
	}
	if got := f.sha(rimage, "", 25*mib); got != before {
		t.Errorf("restored volume sha256 %s, snapshot %s", got, before)
	}

	// CLONE_VOLUME: through <name>-temp, bytes of the volume now.
	now := f.sha(image, "", 25*mib)
	cloned := f.createVolume("pvc-"+uuid.NewString(), 25*mib, &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
		Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: vol.GetVolumeId()}}})
	cimage := "csi-vol-" + f.decode(cloned.GetVolumeId()).UUID
	if !f.imageExists(cimage+"-temp") || f.sha(cimage, "", 25*mib) != now {
		t.Errorf("volume clone %s: temp clone present %v, bytes differ from the source", cimage, f.imageExists(cimage+"-temp"))
	}
	// Expansion.
	ex, err := f.ctl.ControllerExpandVolume(f.ctx, &csi.ControllerExpandVolumeRequest{VolumeId: cloned.GetVolumeId(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: 40 * mib}, Secrets: f.secrets})
	if err != nil || ex.GetCapacityBytes() != 40*mib || !ex.GetNodeExpansionRequired() {
		t.Errorf("ControllerExpandVolume = %v, %v", ex, err)
	}

	// Deletes, children first: everything goes, nothing stays in the trash.
	f.deleteVolume(cloned.GetVolumeId())
	f.deleteVolume(restored.GetVolumeId())
	f.deleteSnapshot(snap.GetSnapshotId())
	f.deleteSnapshot(snap.GetSnapshotId()) // again: success
	f.deleteVolume(vol.GetVolumeId())
	f.deleteVolume(vol.GetVolumeId())
	for _, img := range []string{image, clone, rimage, cimage, cimage + "-temp"} {
		if f.imageExists(img) || f.inTrash(img) {
			t.Errorf("image %s left (in trash: %v)", img, f.inTrash(img))
		}
	}
	for _, oid := range []string{"csi.volume." + vid.UUID, "csi.snap." + sid.UUID} {
		if f.exists(oid) {
			t.Errorf("journal object %s left", oid)
		}
	}
	for _, dir := range []string{"csi.volumes." + f.instance, "csi.snaps." + f.instance} {
		if d := f.omap(dir); len(d) != 0 {
			t.Errorf("directory %s left with %v", dir, d)
		}
	}
}

// checkSnapshotLayout checks what ceph-csi's CreateSnapshot leaves: the
// clone (layering,deep-flatten, clone-child) of the volume's trash
// snapshot, its snapshot clone@clone and the journal.
func (f *fixture) checkSnapshotLayout(volImage, clone, reqName, id string) {
	t := f.t
	t.Helper()
	info, err := f.admin.Inspect(pool, "", clone, true)
	if err != nil {
		t.Fatal(err)
	}
	if features(info) != "layering,deep-flatten" || info.Parent == nil ||
		info.Parent.Image != volImage || info.Parent.SnapNamespace != "trash" || info.Parent.SnapTrashName != clone {
		t.Errorf("clone %s: features %v parent %+v", clone, info.FeatureNames(), info.Parent)
	}
	if _, ok := info.Snapshot(clone); !ok {
		t.Errorf("no snapshot %s@%s", clone, clone)
	}
	parent, err := f.admin.Inspect(pool, "", volImage, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := parent.Snapshot(clone); ok {
		t.Errorf("temporary snapshot %s@%s still in the user namespace", volImage, clone)
	}
	j := f.omap("csi.snap." + id)
	if j["csi.snapname"] != reqName || j["csi.imagename"] != clone || j["csi.source"] != volImage || j["csi.imageid"] != info.ID {
		t.Errorf("snapshot journal %v (clone id %s)", j, info.ID)
	}
	if d := f.omap("csi.snaps." + f.instance); d["csi.snap."+reqName] != id {
		t.Errorf("snapshot directory %v", d)
	}
}

// TestSnapshotHandleErrors: what ceph-csi answers for snapshot handles it
// cannot resolve.
func TestSnapshotHandleErrors(t *testing.T) {
	f := newFixture(t)
	f.writeConfig(f.env.Monitors())
	restore := func(h string) error {
		src := &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: h}}}
		_, err := f.ctl.CreateVolume(f.ctx, f.createVolumeReq("pvc-"+uuid.NewString(), 8*mib, src))
		return err
	}
	// A journal entry without csi.source: "no snap source in omap", Internal.
	id := uuid.NewString()
	oid := "csi.snap." + id
	if err := f.ioctx.SetOmap(oid, map[string][]byte{"csi.imagename": []byte("csi-snap-" + id), "csi.snapname": []byte("x")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.ioctx.Delete(oid) })
	h := handle.ID{Version: 1, ClusterID: f.clusterID, PoolID: f.poolID, UUID: id}.String()
	wantCode(t, "restore without csi.source", restore(h), codes.Internal, "no snap source in omap")
	// ... and DeleteSnapshot of it succeeds (ErrKeyNotFound), like ceph-csi.
	f.deleteSnapshot(h)
	// No journal object at all reads the same way.
	gone := handle.ID{Version: 1, ClusterID: f.clusterID, PoolID: f.poolID, UUID: uuid.NewString()}.String()
	wantCode(t, "restore of a snapshot without journal", restore(gone), codes.Internal, "no snap source in omap")
	// An unknown pool ID: Internal on restore, success on delete.
	nopool := handle.ID{Version: 1, ClusterID: f.clusterID, PoolID: 4242, UUID: id}.String()
	wantCode(t, "restore from an unknown pool", restore(nopool), codes.Internal, "pool")
	f.deleteSnapshot(nopool)
	f.deleteVolume(nopool)
	// A journal entry whose image is gone: Internal; DeleteSnapshot cleans it.
	if err := f.ioctx.SetOmap(oid, map[string][]byte{"csi.source": []byte("csi-vol-x")}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "restore of a snapshot without image", restore(h), codes.Internal, "image not found")
	f.deleteSnapshot(h)
	if f.exists(oid) {
		t.Errorf("DeleteSnapshot left %s", oid)
	}
	// A source volume that does not exist.
	_, err := f.ctl.CreateSnapshot(f.ctx, &csi.CreateSnapshotRequest{Name: "snapshot-x", SourceVolumeId: gone,
		Secrets: f.secrets, Parameters: map[string]string{"clusterID": f.clusterID}})
	wantCode(t, "snapshot of a missing volume", err, codes.NotFound, "not found")
	// A malformed handle.
	wantCode(t, "restore of a malformed handle", restore("0001-nonsense"), codes.Internal, "malformed")
}

// TestRadosNamespace: with rbd.radosNamespace in the config, images and
// journal live in that namespace, and lifeboat's resolver finds them there.
func TestRadosNamespace(t *testing.T) {
	f := newFixture(t)
	ns := "lbcsi-" + uuid.NewString()[:8]
	if err := librbd.NamespaceCreate(f.ioctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := librbd.NamespaceRemove(f.ioctx, ns); err != nil {
			t.Errorf("rbd namespace remove %s: %v", ns, err)
		}
	})
	c := csidriver.ClusterInfo{ClusterID: f.clusterID, Monitors: f.env.Monitors()}
	c.RBD.RadosNamespace = ns
	if err := csidriver.SetCluster(f.config, c); err != nil {
		t.Fatal(err)
	}
	// With the classes' name prefixes too.
	req := f.createVolumeReq("pvc-"+uuid.NewString(), 8*mib, nil)
	req.Parameters["volumeNamePrefix"] = "lbt-vol-"
	r, err := f.ctl.CreateVolume(f.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	vol := r.GetVolume()
	if vc := vol.GetVolumeContext(); vc["radosNamespace"] != ns || vc["imageName"] != "lbt-vol-"+f.decode(vol.GetVolumeId()).UUID {
		t.Errorf("volume context %v: want radosNamespace %s, image lbt-vol-<uuid>", vc, ns)
	}
	rs, err := f.ctl.CreateSnapshot(f.ctx, &csi.CreateSnapshotRequest{
		Name: "snapshot-" + uuid.NewString(), SourceVolumeId: vol.GetVolumeId(), Secrets: f.secrets,
		Parameters: map[string]string{"clusterID": f.clusterID, "snapshotNamePrefix": "lbt-snap-"},
	})
	if err != nil {
		t.Fatal(err)
	}
	snap := rs.GetSnapshot()
	sid := f.decode(snap.GetSnapshotId())
	ref, err := f.admin.Resolve(sid, rbd.Snapshot, rbd.ResolveOptions{Namespace: ns})
	if err != nil || !ref.FromJournal || ref.Namespace != ns || ref.Image != "lbt-snap-"+sid.UUID ||
		ref.Source != vol.GetVolumeContext()["imageName"] {
		t.Errorf("Resolve in namespace = %+v, %v", ref, err)
	}
	if _, err := f.admin.Inspect(pool, ns, ref.Image, false); err != nil {
		t.Errorf("snapshot image not in namespace %s: %v", ns, err)
	}
	if f.exists("csi.snap." + sid.UUID) {
		t.Errorf("journal written outside namespace %s", ns)
	}
	restored := f.createVolume("pvc-"+uuid.NewString(), 8*mib, &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snap.GetSnapshotId()}}})
	f.deleteVolume(restored.GetVolumeId())
	f.deleteSnapshot(snap.GetSnapshotId())
	f.deleteVolume(vol.GetVolumeId())
	nsctx, err := f.admin.IOContext(pool, ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsctx.Destroy()
	if names, err := librbd.GetImageNames(nsctx); err != nil || len(names) != 0 {
		t.Errorf("images left in namespace %s: %v, %v", ns, names, err)
	}
	// Journal directories are left empty (omap keys removed), as by
	// ceph-csi; remove the objects so the namespace can go.
	for _, o := range []string{"csi.volumes." + f.instance, "csi.snaps." + f.instance} {
		if err := nsctx.Delete(o); err != nil && !errors.Is(err, rados.ErrNotFound) {
			t.Error(err)
		}
	}
}
