// Package csidriver is lifeboat's test CSI driver: the Identity and
// Controller services of ceph-csi v3's RBD plugin, over a unix socket
// (github.com/container-storage-interface/spec v1.11.0, gRPC), with librbd
// (go-ceph) as the data path. ceph-csi itself is not available to the
// build, so the stack runs this in its place, behind the real
// csi-provisioner and csi-snapshotter. Its Ceph layout (layout.go) is also
// what test/sim writes, so the two can never disagree.
//
// Reproduced, by ceph-csi source file (read from ceph-csi devel, v3.x):
//   - internal/rbd/identityserver.go: plugin capabilities CONTROLLER_SERVICE,
//     VolumeExpansion ONLINE, VOLUME_ACCESSIBILITY_CONSTRAINTS.
//   - internal/rbd/driver/driver.go: controller capabilities
//     CREATE_DELETE_VOLUME, CREATE_DELETE_SNAPSHOT, CLONE_VOLUME,
//     EXPAND_VOLUME - and not LIST_SNAPSHOTS, so csi-snapshotter marks a
//     pre-provisioned snapshot handle ready without asking.
//   - internal/util/volid.go: handles 0001-LLLL-<clusterID>-<16-hex pool
//     id>-<uuid> (rbd/handle).
//   - internal/util/csiconfig.go: config.json (clusterID -> monitors,
//     rbd.radosNamespace) read on every request; credentials from the
//     request secrets userID/userKey (internal/util/credentials.go).
//   - internal/journal/voljournal.go: ReserveName, CheckReservation,
//     UndoReservation, GetImageAttributes, StoreImageID - directories
//     csi.volumes.<instance> / csi.snaps.<instance>, objects
//     csi.volume.<uuid> (csi.volname, csi.imagename, csi.volume.owner,
//     csi.imageid) and csi.snap.<uuid> (csi.snapname, csi.imagename,
//     csi.source, csi.imageid); csi.source required ("no snap source in
//     omap"); csi.imagename defaulting to <prefix><uuid>.
//   - internal/rbd/controllerserver.go: request validation and gRPC codes;
//     CreateVolume (sizes rounded by util.RoundOffBytes, default 1 GiB,
//     StorageClass imageFeatures / volumeNamePrefix, idempotent by request
//     name, volume context), checkContentSource (a snapshot's errors are
//     all Internal, a source volume's missing image NotFound), DeleteVolume
//     (unknown pool or missing image is success, watchers refuse),
//     CreateSnapshot / doSnapshotClone (idempotent by request name,
//     AlreadyExists for another source, size and creation time of the
//     clone), DeleteSnapshot (unknown pool, missing journal or csi.source is
//     success), ControllerExpandVolume, ValidateVolumeCapabilities.
//   - internal/rbd/rbd_util.go: genSnapFromSnapID and
//     generateVolumeFromVolumeID (handle -> pool by ID -> journal in the
//     config's RADOS namespace -> image), createImage (format 2),
//     cloneRbdImageFromSnapshot (clone format 2 of <imagename>@<imagename>
//     with the StorageClass features, requested size >= snapshot size, then
//     grown), validateImageFeatures, deleteImage and trashRemoveImage (move
//     to the RBD trash, then remove; an image whose trash snapshots still
//     have children stays and is handed to the mgr's rbd_support "trash
//     remove" task, which retries until they are gone). Unlike ceph-csi the
//     first removal is tried at once, so what can go is gone when the call
//     returns; a volume clone is removed before its <name>-temp parent.
//   - internal/rbd/snapshot.go: createRBDClone (temporary snapshot on the
//     parent, clone v2 with layering,deep-flatten, the temporary snapshot
//     removed into the parent's trash namespace), cleanUpSnapshot.
//   - internal/rbd/clone.go: doSnapClone for CLONE_VOLUME (<name>-temp
//     clone of the parent, then the volume cloned from it).
//   - internal/util/idlocker.go: a second operation on a name or ID in
//     flight is Aborted.
//
// Deliberately not reproduced: the node service; topology and
// topology-constrained pools (journal pool = image pool, so no
// csi.journalpool); encryption (KMS keys); mirroring, replication and
// CSI-Addons; thick provisioning; dataPool, striping and object size;
// clone-depth flattening (rbdSoftMaxCloneDepth / minSnapshotsOnImage, the
// mgr flatten tasks); the connection pool (one connection per request, so
// a rewritten config takes effect at once); the cluster-ID / pool-ID
// mapping file; volume
// groups; image metadata (--setmetadata); ListVolumes / ListSnapshots /
// GetCapacity; the rados namespace is not created (ceph-csi does not either).
package csidriver
