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

ns=demo
echo "== Rook's ceph-csi config and credentials, a 256 MiB PVC $ns/shop-db with data"
sim cleanup "$ns" >/dev/null 2>&1 || true
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

echo; echo "== Velero deletes its objects; under Retain the image stays: an orphan"
kubectl -n "$ns" delete volumesnapshot "${vs#*/}" --wait=false >/dev/null
kubectl delete volumesnapshotcontent "$vsc" --wait=false >/dev/null
lb verify || echo "(exit $?: verify found something)"
