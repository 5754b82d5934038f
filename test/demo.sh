#!/usr/bin/env bash
# make demo: what lifeboat does, on the local stack (started by `make stack-up`).
# A PVC with data, two Velero-style CSI snapshots of it, then the questions
# admins ask today with `rbd ls | grep`: which image is this snapshot, is it
# healthy, what leaks.
set -euo pipefail
cd "$(dirname "$0")/.."
stack=${LIFEBOAT_STACK_DIR:-/tmp/lifeboat-stack}
set -a; . "$stack/env"; set +a
# Only the Rook driver: the e2e tests use their own driver names on this stack.
lb() { echo; echo "\$ lifeboat $*"; ./bin/lifeboat --driver-suffix rook-ceph.rbd.csi.ceph.com "$@"; }
sim() { ./bin/lbsim --env "$stack/env" "$@"; }

# A new namespace each run: the test stack runs no namespace controller, so
# a deleted namespace's objects would linger in etcd.
ns=demo-$(date +%H%M%S)
echo "== Rook's ceph-csi config and credentials, a 256 MiB PVC $ns/shop-db with data"
# Previous demos' snapshots (their images may be gone with a wiped cluster).
kubectl get volumesnapshotcontents -o jsonpath='{range .items[*]}{.metadata.name} {.spec.volumeSnapshotRef.namespace}{"\n"}{end}' |
  awk '$2 ~ /^demo-/ {print $1}' | xargs -r kubectl delete volumesnapshotcontent --wait=false >/dev/null
sim rook >/dev/null
sim volume "$ns/shop-db" 256M --fill random:32M,text:16M,hole:64M,random:8M >/dev/null

echo "== Two Velero backups snapshot it (VolumeSnapshotClass with deletionPolicy Retain)"
sim snapshot "$ns/shop-db" --backup nightly-1 | tee /tmp/lifeboat-demo-snap1
sim write "$ns/shop-db" --offset 4M --length 2M --seed 7 >/dev/null
sim snapshot "$ns/shop-db" --backup nightly-2 >/dev/null
vsc=$(sed -n 's/^VSC=//p' /tmp/lifeboat-demo-snap1)
vs=$(sed -n 's/^VS=//p' /tmp/lifeboat-demo-snap1)

echo; echo "== Which RBD image is this VolumeSnapshot?"
lb resolve "$vs"
echo; echo "== Is every snapshot what ceph-csi promises?"
lb verify

echo; echo "== Both snapshots leave Ceph: an encrypted repository in MinIO, a full and an incremental export"
bucket="demo-$(date +%s)"
key=$stack/demo-repository.key
head -c 32 /dev/urandom | base64 >"$key"
s3=(--s3-endpoint "$S3_ENDPOINT" --s3-bucket "$bucket" --s3-create-bucket --encryption-key-file "$key")
lb repo init "${s3[@]}"
vsc2=$(kubectl get volumesnapshotcontent -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.labels.velero\.io/backup-name}{"\n"}{end}' |
  awk '$2 == "nightly-2" {print $1}' | head -1)
lb export "$vsc" "${s3[@]}"
id2=$(./bin/lifeboat export "$vsc2" "${s3[@]}" -o json | tee /dev/stderr | sed -n 's/.*"id": "\(.*\)".*/\1/p')
lb backups list "${s3[@]}"
img2=$(./bin/lifeboat resolve "$vsc2" -o json | sed -n 's/.*"name": "\(csi-snap-[^"]*\)".*/\1/p' | head -1)
want=$(rbd -c "$CEPH_CONF" export "replicapool/$img2@$img2" - 2>/dev/null | sha256sum | cut -c1-64)
echo "sha256 of replicapool/$img2@$img2 in Ceph: $want"

echo; echo "== Velero deletes its objects; under Retain the image stays: an orphan"
kubectl -n "$ns" delete volumesnapshot "${vs#*/}" --wait=false >/dev/null
kubectl delete volumesnapshotcontent "$vsc" --wait=false >/dev/null
lb verify || echo "(exit $?: verify found something)"

echo; echo "== Disaster: the Ceph cluster is destroyed (make stack-up brings a fresh one back later)"
test/stack/ceph-cluster.sh stop "$stack/ceph" --wipe
b=$stack/demo-cluster-b
echo "== A brand-new, empty Ceph cluster B"
test/stack/ceph-cluster.sh start "$b" 25300 28789 >/dev/null
lb restore "$id2" --to replicapool/shop-db-restored --ceph-conf "$b/ceph.conf" "${s3[@]}"
got=$(rbd -c "$b/ceph.conf" export replicapool/shop-db-restored - 2>/dev/null | sha256sum | cut -c1-64)
echo "sha256 restored by lifeboat into B:      $got"
echo; echo "\$ lifeboat cat $id2 --format rbd-diff | rbd import-diff - replicapool/stock-tools"
rbd -c "$b/ceph.conf" create --size 256M replicapool/stock-tools
set -o pipefail
./bin/lifeboat cat "$id2" --format rbd-diff "${s3[@]}" | rbd -c "$b/ceph.conf" import-diff --no-progress - replicapool/stock-tools
got2=$(rbd -c "$b/ceph.conf" export replicapool/stock-tools - 2>/dev/null | sha256sum | cut -c1-64)
echo "sha256 restored by rbd import-diff into B: $got2"
test/stack/ceph-cluster.sh stop "$b" --wipe
[ "$got" = "$want" ] && [ "$got2" = "$want" ] && echo "== Bit-exact: the backup survived the loss of the cluster."
