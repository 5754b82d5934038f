package csidriver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	librbd "github.com/ceph/go-ceph/rbd"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const oneGiB = 1 << 30

// image is a volume or snapshot resolved from its handle: its journal
// entry and its RBD image.
type image struct {
	uuid  string
	attrs Attrs
	info  ImageInfo
}

// genImage resolves a handle like generateVolumeFromVolumeID (volumes) and
// genSnapFromSnapID (snapshots): decode, pool by ID, journal attributes in
// the pool and the config's RADOS namespace, then the image. On error the
// connection and whatever was resolved are still returned (nil conn when
// the pool was not reached) so that deletes can clean up.
func (d *Driver) genImage(ctx context.Context, j Journal, h string, secrets map[string]string) (*conn, image, error) {
	c, id, err := d.fromHandle(ctx, h, secrets)
	if err != nil {
		return nil, image{}, err
	}
	img := image{uuid: id.UUID}
	if img.attrs, err = j.Attributes(c.ioctx, id.UUID); err != nil {
		return c, img, err
	}
	if img.info, err = Stat(c.ioctx, img.attrs.ImageName); err != nil {
		return c, img, err
	}
	if img.attrs.ImageID == "" {
		if err := j.StoreImageID(c.ioctx, id.UUID, img.info.ID); err != nil {
			return c, img, err
		}
		img.attrs.ImageID = img.info.ID
	}
	return c, img, nil
}

// CreateVolume is ceph-csi's (controllerserver.go): blank, from a snapshot
// or from a volume; idempotent by request name through the volume journal.
func (d *Driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if err := validateCreateVolume(req); err != nil {
		return nil, err
	}
	params := req.GetParameters()
	features, err := ParseFeatures(params["imageFeatures"])
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	size := uint64(oneGiB)
	if r := req.GetCapacityRange(); r != nil {
		size = uint64(r.GetRequiredBytes())
	}
	size = RoundOffBytes(size)
	if _, _, err := credentials(req.GetSecrets()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if _, err := ReadConfig(d.opts.ConfigPath, params["clusterID"]); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	release, err := d.locks.acquire(req.GetName())
	if err != nil {
		return nil, err
	}
	defer release()

	c, err := d.connect(ctx, params["clusterID"], req.GetSecrets())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	defer c.close()
	if err := c.openPool(params["pool"]); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	src, err := d.contentSource(ctx, req)
	if err != nil {
		return nil, err
	}
	if src != nil {
		defer src.c.close()
	}
	if resp, err := d.existingVolume(req, c, size, src != nil); resp != nil || err != nil {
		return resp, err
	}
	if src != nil && size < src.info.Size {
		return nil, status.Errorf(codes.InvalidArgument, "cannot %s: volume size %d is smaller than source volume size %d",
			src.what, size, src.info.Size)
	}

	id, err := VolumeJournal.Reserve(c.ioctx, d.opts.InstanceID, req.GetName(), params["volumeNamePrefix"], "",
		params["csi.storage.k8s.io/pvc/namespace"])
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	name := VolumeJournal.ImageName(params["volumeNamePrefix"], id)
	if err := d.createBackingImage(c, name, size, features, src); err != nil {
		d.undo(c, VolumeJournal, id, req.GetName())
		return nil, status.Error(codes.Internal, err.Error())
	}
	info, err := Stat(c.ioctx, name)
	if err == nil {
		err = VolumeJournal.StoreImageID(c.ioctx, id, info.ID)
	}
	var h string
	if err == nil {
		h, err = c.handle(id)
	}
	if err != nil {
		_, _ = DeleteImage(c.ioctx, name)
		_, _ = DeleteImage(c.ioctx, name+"-temp")
		d.undo(c, VolumeJournal, id, req.GetName())
		return nil, status.Error(codes.Internal, err.Error())
	}
	return volumeResponse(req, c, h, name, size), nil
}

func (d *Driver) undo(c *conn, j Journal, id, reqName string) {
	if err := j.Undo(c.ioctx, d.opts.InstanceID, id, reqName); err != nil {
		d.log.Warn("undoing reservation", "request", reqName, "err", err)
	}
}

// validateCreateVolume is validateVolumeReq plus the access mode check of
// parseVolCreateRequest.
func validateCreateVolume(req *csi.CreateVolumeRequest) error {
	if req.GetName() == "" {
		return status.Error(codes.InvalidArgument, "volume Name cannot be empty")
	}
	if req.GetVolumeCapabilities() == nil {
		return status.Error(codes.InvalidArgument, "volume Capabilities cannot be empty")
	}
	p := req.GetParameters()
	if p["clusterID"] == "" {
		return status.Error(codes.InvalidArgument, "missing or empty cluster ID to provision volume from")
	}
	if p["pool"] == "" {
		return status.Error(codes.InvalidArgument, "missing or empty pool name to provision volume from")
	}
	for k, what := range map[string]string{"dataPool": "datapool name", "radosNamespace": "namespace name",
		"volumeNamePrefix": "volume name prefix", "imageFeatures": "imageFeatures parameter"} {
		if v, ok := p[k]; ok && v == "" {
			return status.Errorf(codes.InvalidArgument, "empty %s to provision volume from", what)
		}
	}
	for _, vc := range req.GetVolumeCapabilities() {
		switch vc.GetAccessMode().GetMode() {
		case csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER:
			if vc.GetBlock() == nil {
				return status.Error(codes.InvalidArgument, "multi node access modes are only supported on rbd `block` type volumes")
			}
		}
	}
	return nil
}

// source is a CreateVolume content source: a snapshot's image (cloned
// from <image>@<image>) or a volume's image.
type source struct {
	c        *conn
	image    image
	info     ImageInfo
	snapshot bool
	what     string // for messages: "restore from snapshot X"
}

// contentSource is checkContentSource: a snapshot through genSnapFromSnapID
// (every error Internal, as there: a missing journal object or csi.source
// is "no snap source in omap", an unknown pool ID util.ErrPoolNotFound), a
// volume through GenVolFromVolID (a missing image NotFound).
func (d *Driver) contentSource(ctx context.Context, req *csi.CreateVolumeRequest) (*source, error) {
	cs := req.GetVolumeContentSource()
	if cs == nil {
		return nil, nil
	}
	switch {
	case cs.GetSnapshot() != nil:
		id := cs.GetSnapshot().GetSnapshotId()
		if id == "" {
			return nil, status.Error(codes.NotFound, "volume Snapshot ID cannot be empty")
		}
		c, img, err := d.genImage(ctx, SnapshotJournal, id, req.GetSecrets())
		if err != nil {
			if c != nil {
				c.close()
			}
			return nil, status.Errorf(codes.Internal, "snapshot %s: %v", id, err)
		}
		return &source{c: c, image: img, info: img.info, snapshot: true, what: "restore from snapshot " + id}, nil
	case cs.GetVolume() != nil:
		id := cs.GetVolume().GetVolumeId()
		if id == "" {
			return nil, status.Error(codes.NotFound, "volume ID cannot be empty")
		}
		c, img, err := d.genImage(ctx, VolumeJournal, id, req.GetSecrets())
		if err != nil {
			if c != nil {
				c.close()
			}
			if errors.Is(err, ErrImageNotFound) {
				return nil, status.Errorf(codes.NotFound, "%s image does not exist", id)
			}
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
		return &source{c: c, image: img, info: img.info, what: "clone from volume " + id}, nil
	}
	return nil, status.Error(codes.InvalidArgument, "not a proper volume source")
}

// existingVolume is rbdVolume.Exists + repairExistingVolume: a reservation
// for the request name whose image exists answers the request again (grown
// to size for clones, AlreadyExists when a blank image is smaller); a
// reservation whose image is gone is undone.
func (d *Driver) existingVolume(req *csi.CreateVolumeRequest, c *conn, size uint64, cloned bool) (*csi.CreateVolumeResponse, error) {
	id, err := VolumeJournal.Lookup(c.ioctx, d.opts.InstanceID, req.GetName())
	if err != nil || id == "" {
		return nil, internal(err)
	}
	attrs, err := VolumeJournal.Attributes(c.ioctx, id)
	if err != nil {
		return nil, internal(err)
	}
	if attrs.RequestName != req.GetName() {
		return nil, status.Errorf(codes.Internal, "internal state inconsistent, omap names mismatch, request name (%s) volume UUID (%s) volume omap name (%s)",
			req.GetName(), id, attrs.RequestName)
	}
	info, err := Stat(c.ioctx, attrs.ImageName)
	if errors.Is(err, ErrImageNotFound) {
		return nil, internal(VolumeJournal.Undo(c.ioctx, d.opts.InstanceID, id, req.GetName()))
	}
	if err != nil {
		return nil, internal(err)
	}
	if info.Size < size {
		if !cloned {
			return nil, status.Errorf(codes.AlreadyExists, "%v: image with the same name (%s) but with different size already exists",
				ErrNameConflict, attrs.ImageName)
		}
		if err := Resize(c.ioctx, attrs.ImageName, size); err != nil {
			return nil, internal(err)
		}
		info.Size = size
	}
	if attrs.ImageID == "" {
		if err := VolumeJournal.StoreImageID(c.ioctx, id, info.ID); err != nil {
			return nil, internal(err)
		}
	}
	h, err := c.handle(id)
	if err != nil {
		return nil, internal(err)
	}
	return volumeResponse(req, c, h, attrs.ImageName, info.Size), nil
}

// createBackingImage: a blank image; a clone of <image>@<image> of a
// snapshot (grown to size); or, for a volume source, clone.go's
// doSnapClone: a temporary clone <name>-temp of the parent, then the
// volume cloned from it, both through a temporary snapshot.
func (d *Driver) createBackingImage(c *conn, name string, size, features uint64, src *source) error {
	switch {
	case src == nil:
		return CreateImage(c.ioctx, name, size, features)
	case src.snapshot:
		img := src.image.attrs.ImageName
		if err := Clone(src.c.ioctx, img, img, c.ioctx, name, features); err != nil {
			return err
		}
	default:
		temp := name + "-temp"
		if err := CloneViaTempSnapshot(src.c.ioctx, src.image.attrs.ImageName, c.ioctx, temp, SnapshotFeatures); err != nil {
			return err
		}
		if err := CloneViaTempSnapshot(c.ioctx, temp, c.ioctx, name, features); err != nil {
			_, _ = DeleteImage(c.ioctx, temp)
			return err
		}
	}
	if err := Resize(c.ioctx, name, size); err != nil {
		_, _ = DeleteImage(c.ioctx, name)
		_, _ = DeleteImage(c.ioctx, name+"-temp")
		return err
	}
	return nil
}

// volumeResponse is buildCreateVolumeResponse: the parameters (without the
// csi.storage.k8s.io/ metadata) plus pool, journalPool, imageName and
// radosNamespace.
func volumeResponse(req *csi.CreateVolumeRequest, c *conn, h, name string, size uint64) *csi.CreateVolumeResponse {
	vc := map[string]string{}
	for k, v := range req.GetParameters() {
		if !strings.HasPrefix(k, "csi.storage.k8s.io/") {
			vc[k] = v
		}
	}
	vc["pool"], vc["journalPool"], vc["imageName"] = c.pool, c.pool, name
	if ns := c.info.RBD.RadosNamespace; ns != "" {
		vc["radosNamespace"] = ns
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId: h, CapacityBytes: int64(size), VolumeContext: vc, ContentSource: req.GetVolumeContentSource(),
	}}
}

// DeleteVolume is ceph-csi's DeleteVolume + cleanupRBDImage: an unknown pool
// or a missing image is success (the reservation is cleaned up); an image
// with watchers is refused; the temporary clone <name>-temp of a volume
// clone goes too; the image goes through the trash (DeleteImage).
func (d *Driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	h := req.GetVolumeId()
	if h == "" {
		return nil, status.Error(codes.InvalidArgument, "empty volume ID in request")
	}
	if _, _, err := credentials(req.GetSecrets()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	release, err := d.locks.acquire(h)
	if err != nil {
		return nil, err
	}
	defer release()
	c, img, err := d.genImage(ctx, VolumeJournal, h, req.GetSecrets())
	if c != nil {
		defer c.close()
	}
	switch {
	case errors.Is(err, ErrPoolNotFound):
		d.log.Warn("pool of volume gone: nothing to delete", "volume", h, "err", err)
		return &csi.DeleteVolumeResponse{}, nil
	case errors.Is(err, ErrImageNotFound):
		if _, err := DeleteImage(c.ioctx, img.attrs.ImageName); err != nil {
			return nil, internal(err)
		}
		return &csi.DeleteVolumeResponse{}, internal(VolumeJournal.Undo(c.ioctx, d.opts.InstanceID, img.uuid, img.attrs.RequestName))
	case err != nil:
		return nil, internal(err)
	}
	name := img.attrs.ImageName
	release2, err := d.locks.acquire(img.attrs.RequestName)
	if err != nil {
		return nil, err
	}
	defer release2()
	if img.info.Watchers > 0 {
		return nil, status.Errorf(codes.Internal, "rbd %s is still being used", name)
	}
	// ceph-csi removes <name>-temp first and leaves the retries to the
	// mgr's trash remove task; synchronously, the child must go first.
	for _, n := range []string{name, name + "-temp"} {
		stays, err := DeleteImage(c.ioctx, n)
		if err != nil {
			return nil, internal(err)
		}
		if stays {
			d.trashRemoveLater(c, n)
		}
	}
	return &csi.DeleteVolumeResponse{}, internal(VolumeJournal.Undo(c.ioctx, d.opts.InstanceID, img.uuid, img.attrs.RequestName))
}

// ValidateVolumeCapabilities is ceph-csi's: only SINGLE_NODE_WRITER is
// confirmed.
func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "empty volume ID in request")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "empty volume capabilities in request")
	}
	for _, vc := range req.GetVolumeCapabilities() {
		if vc.GetAccessMode().GetMode() != csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER {
			return &csi.ValidateVolumeCapabilitiesResponse{}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeCapabilities: req.GetVolumeCapabilities()}}, nil
}

// CreateSnapshot is ceph-csi's CreateSnapshot + doSnapshotClone: a journal
// reservation csi.snap.<uuid> (csi.snapname, csi.imagename, csi.source) in
// the source volume's pool, the clone csi-snap-<uuid> of a temporary
// snapshot of the volume (layering,deep-flatten; the temporary snapshot
// ends in the volume's trash snapshot namespace), the snapshot
// csi-snap-<uuid>@csi-snap-<uuid> on the clone, then csi.imageid.
// Idempotent by request name.
func (d *Driver) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot Name cannot be empty")
	}
	if req.GetSourceVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "source Volume ID cannot be empty")
	}
	params := req.GetParameters()
	if v, ok := params["snapshotNamePrefix"]; ok && v == "" {
		return nil, status.Error(codes.InvalidArgument, "empty snapshot name prefix to provision snapshot from")
	}
	if v, ok := params["pool"]; ok && v == "" {
		return nil, status.Error(codes.InvalidArgument, "empty pool name in which rbd image will be created")
	}
	if _, _, err := credentials(req.GetSecrets()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	c, vol, err := d.genImage(ctx, VolumeJournal, req.GetSourceVolumeId(), req.GetSecrets())
	if c != nil {
		defer c.close()
	}
	switch {
	case errors.Is(err, ErrImageNotFound):
		return nil, status.Errorf(codes.NotFound, "source Volume ID %s not found", req.GetSourceVolumeId())
	case errors.Is(err, ErrPoolNotFound):
		return nil, status.Error(codes.NotFound, err.Error())
	case err != nil:
		return nil, internal(err)
	}
	if vol.info.Features&librbd.FeatureLayering == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "volume(%s) has not snapshot feature(layering)", req.GetSourceVolumeId())
	}
	clusterID := params["clusterID"]
	if clusterID == "" {
		return nil, status.Error(codes.Internal, "clusterID must be set")
	}
	if _, err := ReadConfig(d.opts.ConfigPath, clusterID); err != nil {
		return nil, internal(err)
	}
	// The handle names the snapshot's clusterID and the source's pool.
	c.clusterID = clusterID
	release, err := d.locks.acquire(req.GetName())
	if err != nil {
		return nil, err
	}
	defer release()

	if resp, err := d.existingSnapshot(req, c, vol); resp != nil || err != nil {
		return resp, err
	}
	prefix := params["snapshotNamePrefix"]
	id, err := SnapshotJournal.Reserve(c.ioctx, d.opts.InstanceID, req.GetName(), prefix, vol.attrs.ImageName, "")
	if err != nil {
		return nil, internal(err)
	}
	name := SnapshotJournal.ImageName(prefix, id)
	info, err := Stat(c.ioctx, vol.attrs.ImageName) // not a stale size
	if err == nil {
		err = SnapshotClone(c.ioctx, vol.attrs.ImageName, name)
	}
	if err != nil {
		d.undo(c, SnapshotJournal, id, req.GetName())
		return nil, internal(err)
	}
	clone, err := Stat(c.ioctx, name)
	if err == nil {
		err = SnapshotJournal.StoreImageID(c.ioctx, id, clone.ID)
	}
	var h string
	if err == nil {
		h, err = c.handle(id)
	}
	if err != nil {
		_, _ = DeleteSnapshotImage(c.ioctx, name)
		d.undo(c, SnapshotJournal, id, req.GetName())
		return nil, internal(err)
	}
	return snapshotResponse(req, h, info.Size, clone.Created), nil
}

// existingSnapshot is checkSnapCloneExists: a reservation for the request
// name from another source volume is AlreadyExists; one whose clone is gone
// is undone (with the temporary snapshot on the parent, if left); one whose
// clone lacks its snapshot gets it.
func (d *Driver) existingSnapshot(req *csi.CreateSnapshotRequest, c *conn, vol image) (*csi.CreateSnapshotResponse, error) {
	id, err := SnapshotJournal.Lookup(c.ioctx, d.opts.InstanceID, req.GetName())
	if err != nil || id == "" {
		return nil, internal(err)
	}
	attrs, err := SnapshotJournal.Attributes(c.ioctx, id)
	if errors.Is(err, ErrKeyNotFound) {
		return nil, internal(SnapshotJournal.Undo(c.ioctx, d.opts.InstanceID, id, req.GetName()))
	}
	if err != nil {
		return nil, internal(err)
	}
	if attrs.Source != vol.attrs.ImageName {
		return nil, status.Errorf(codes.AlreadyExists, "%v: snapname points to different volume, request name (%s) source name (%s) : saved source name (%s)",
			ErrNameConflict, req.GetName(), vol.attrs.ImageName, attrs.Source)
	}
	clone, err := Stat(c.ioctx, attrs.ImageName)
	if errors.Is(err, ErrImageNotFound) {
		_ = RemoveSnapshot(c.ioctx, vol.attrs.ImageName, attrs.ImageName)
		return nil, internal(SnapshotJournal.Undo(c.ioctx, d.opts.InstanceID, id, req.GetName()))
	}
	if err == nil {
		err = EnsureSnapshot(c.ioctx, attrs.ImageName, attrs.ImageName)
	}
	if err == nil && attrs.ImageID == "" {
		err = SnapshotJournal.StoreImageID(c.ioctx, id, clone.ID)
	}
	var h string
	if err == nil {
		h, err = c.handle(id)
	}
	if err != nil {
		return nil, internal(err)
	}
	return snapshotResponse(req, h, vol.info.Size, clone.Created), nil
}

func snapshotResponse(req *csi.CreateSnapshotRequest, h string, size uint64, created librbd.Timespec) *csi.CreateSnapshotResponse {
	return &csi.CreateSnapshotResponse{Snapshot: &csi.Snapshot{
		SizeBytes:      int64(size),
		SnapshotId:     h,
		SourceVolumeId: req.GetSourceVolumeId(),
		CreationTime:   timestamppb.New(time.Unix(created.Sec, created.Nsec)),
		ReadyToUse:     true,
	}}
}

// DeleteSnapshot is ceph-csi's: an unknown pool, a missing journal entry or
// csi.source is success; a missing clone is cleaned from the trash and the
// reservation undone; otherwise the snapshot on the clone, the clone
// (DeleteImage) and the reservation go.
func (d *Driver) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	if _, _, err := credentials(req.GetSecrets()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	h := req.GetSnapshotId()
	if h == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot ID cannot be empty")
	}
	release, err := d.locks.acquire(h)
	if err != nil {
		return nil, err
	}
	defer release()
	c, img, err := d.genImage(ctx, SnapshotJournal, h, req.GetSecrets())
	if c != nil {
		defer c.close()
	}
	switch {
	case errors.Is(err, ErrPoolNotFound):
		d.log.Warn("pool of snapshot gone: nothing to delete", "snapshot", h, "err", err)
		return &csi.DeleteSnapshotResponse{}, nil
	case errors.Is(err, ErrKeyNotFound):
		return &csi.DeleteSnapshotResponse{}, nil
	case errors.Is(err, ErrImageNotFound):
		if _, err := DeleteImage(c.ioctx, img.attrs.ImageName); err != nil {
			return nil, internal(err)
		}
		return &csi.DeleteSnapshotResponse{}, internal(SnapshotJournal.Undo(c.ioctx, d.opts.InstanceID, img.uuid, img.attrs.RequestName))
	case err != nil:
		return nil, internal(err)
	}
	release2, err := d.locks.acquire(img.attrs.RequestName)
	if err != nil {
		return nil, err
	}
	defer release2()
	stays, err := DeleteSnapshotImage(c.ioctx, img.attrs.ImageName)
	if err != nil {
		return nil, internal(err)
	}
	if stays {
		d.trashRemoveLater(c, img.attrs.ImageName)
	}
	return &csi.DeleteSnapshotResponse{}, internal(SnapshotJournal.Undo(c.ioctx, d.opts.InstanceID, img.uuid, img.attrs.RequestName))
}

// ControllerExpandVolume is ceph-csi's: grow the image to the rounded size;
// node expansion is required except for block volumes.
func (d *Driver) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	h := req.GetVolumeId()
	if h == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID cannot be empty")
	}
	if req.GetCapacityRange() == nil {
		return nil, status.Error(codes.InvalidArgument, "capacityRange cannot be empty")
	}
	release, err := d.locks.acquire(h)
	if err != nil {
		return nil, err
	}
	defer release()
	if _, _, err := credentials(req.GetSecrets()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	c, img, err := d.genImage(ctx, VolumeJournal, h, req.GetSecrets())
	if c != nil {
		defer c.close()
	}
	switch {
	case errors.Is(err, ErrImageNotFound):
		return nil, status.Errorf(codes.NotFound, "volume ID %s not found", h)
	case errors.Is(err, ErrPoolNotFound):
		return nil, status.Error(codes.NotFound, err.Error())
	case err != nil:
		return nil, internal(err)
	}
	size := RoundOffBytes(uint64(req.GetCapacityRange().GetRequiredBytes()))
	if img.info.Size < size {
		if err := Resize(c.ioctx, img.attrs.ImageName, size); err != nil {
			return nil, internal(err)
		}
		img.info.Size = size
	}
	return &csi.ControllerExpandVolumeResponse{
		CapacityBytes:         int64(img.info.Size),
		NodeExpansionRequired: req.GetVolumeCapability().GetBlock() == nil,
	}, nil
}

// internal wraps err as codes.Internal (nil stays nil).
func internal(err error) error {
	if err == nil {
		return nil
	}
	return status.Error(codes.Internal, fmt.Sprint(err))
}
