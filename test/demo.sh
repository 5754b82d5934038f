#!/usr/bin/env bash
# make demo: what lifeboat does, on the local stack (started by `make stack-up`),
# with the real Velero and the real CSI snapshot control plane: a PVC provisioned
# by csi-provisioner through our CSI driver (the ceph-csi RBD controller's
# behaviour), `velero backup create`, lifeboat's agent exporting the snapshot to
# S3 while Velero works, the questions admins ask today with `rbd ls | grep`
# (which image is this snapshot, is it healthy), and `velero restore create`.
# Then test/demo-dr.sh: Ceph is lost, and the same Velero backup restores into a
# new Ceph cluster after `lifeboat restore --velero-backup`.
set -euo pipefail
cd "$(dirname "$0")/.."
stack=${LIFEBOAT_STACK_DIR:-/tmp/lifeboat-stack}
set -a; . "$stack/env"; set +a # also puts the stack's velero CLI on PATH
for k in CSI_ENDPOINT VELERO VELERO_NAMESPACE; do
  [[ -n ${!k:-} ]] || { echo "demo: $stack/env has no $k: run \`make stack-up\` from this tree" >&2; exit 1; }
done
# Only the Rook driver: the e2e tests use their own driver names on this stack.
lb() { echo; echo "\$ lifeboat $*"; ./bin/lifeboat --driver-suffix "$CSI_DRIVER" "$@"; }
sim() { ./bin/lbsim --env "$stack/env" "$@"; }
say() { echo; echo "== $*"; }
run() { echo; echo "\$ $*"; "$@"; }

ns=demo-$(date +%H%M%S)
backup=nightly-$ns
work=$(mktemp -d /tmp/lifeboat-demo.XXXXXX)
agent_pid=
cleanup() {
  [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Previous demos' namespaces, Velero backups and restores (`velero backup delete` also deletes
# their CSI snapshots through csi-snapshotter); their RBD images would fill the memstore OSD.
kubectl delete namespace -l lifeboat.io/demo=true --wait=false >/dev/null
velero restore delete --selector lifeboat.io/demo=true --confirm >/dev/null 2>&1 || true
velero backup delete --selector lifeboat.io/demo=true --confirm >/dev/null 2>&1 || true

say "What Rook gives a cluster (made by make stack-up): the StorageClass, and the VolumeSnapshotClass Velero picks by its label (deletionPolicy Retain)"
run kubectl get storageclass rook-ceph-block
run kubectl get volumesnapshotclass -l velero.io/csi-volumesnapshot-class=true

say "A 256 MiB PVC $ns/shop-db: csi-provisioner asks the CSI driver, which creates an RBD image as ceph-csi does"
kubectl create namespace "$ns" >/dev/null
kubectl label namespace "$ns" lifeboat.io/demo=true >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: shop-db, namespace: $ns}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: rook-ceph-block
  resources: {requests: {storage: 256Mi}}
YAML
kubectl wait -n "$ns" --for=jsonpath='{.status.phase}'=Bound pvc/shop-db --timeout=90s >/dev/null
run kubectl get pvc -n "$ns" shop-db
pv=$(kubectl get pvc -n "$ns" shop-db -o jsonpath='{.spec.volumeName}')
echo "PV $pv, CSI volume handle $(kubectl get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}')"

say "The application writes its data (there is no kubelet here: lbsim writes into the PVC's RBD image through librbd, as the pod's filesystem would)"
sim write "$ns/shop-db" --offset 0 --length 32M --kind random --seed 1 >/dev/null
sim write "$ns/shop-db" --offset 32M --length 16M --kind text --seed 2 >/dev/null
want=$(sim sha256 "$ns/shop-db")
echo "the volume: $want"

say "lifeboat's agent starts: it exports every Velero CSI snapshot it sees to an encrypted repository in MinIO"
bucket=$ns
head -c 32 /dev/urandom | base64 >"$work/repository.key"
s3=(--s3-endpoint "$S3_ENDPOINT" --s3-bucket "$bucket" --encryption-key-file "$work/repository.key")
lb repo init "${s3[@]}" --s3-create-bucket
./bin/lifeboat run --driver-suffix "$CSI_DRIVER" "${s3[@]}" --include-namespaces "$ns" \
  --identity demo --lease-namespace "$ns" --metrics-address 127.0.0.1:0 --verify-interval 0 \
  >"$work/agent.log" 2>&1 &
agent_pid=$!

say "Velero backs up the namespace: a CSI snapshot of the PVC (snapshot-controller, csi-snapshotter, the CSI driver)"
run velero backup create "$backup" --include-namespaces "$ns" --labels lifeboat.io/demo=true --features=EnableCSI --wait
velero backup describe "$backup" --details --features=EnableCSI | sed -n '/CSI Snapshots:/,/^$/p'
handle=$(velero backup describe "$backup" --details --features=EnableCSI | grep -oE '0001-[0-9a-f]{4}-rook-ceph-[0-9a-f]{16}-[0-9a-f-]{36}' | head -1)
[[ -n $handle ]] || { echo "demo: no snapshot handle in velero backup describe" >&2; exit 1; }
left=$(kubectl get volumesnapshotcontents -o jsonpath="{range .items[?(@.spec.volumeSnapshotRef.namespace==\"$ns\")]}{.metadata.name} {end}")
echo "Velero deleted its VolumeSnapshot and VolumeSnapshotContent when the backup completed (the class's Retain"
echo "keeps the RBD snapshot; the handle is in the backup). Contents left for $ns: ${left:-none}."

say "Which RBD image is this snapshot? (by the handle Velero recorded)"
lb resolve "$handle"

say "The agent exported it while Velero worked (lifeboat backups list)"
for _ in $(seq 120); do
  ./bin/lifeboat backups list "${s3[@]}" -o json 2>/dev/null | grep -q "$handle" && break
  sleep 1
done
lb backups list "${s3[@]}"
kill "$agent_pid" && wait "$agent_pid" 2>/dev/null || true
agent_pid=
echo "The agent's events on Velero's VolumeSnapshot (outliving it):"
kubectl get events -n "$ns" --field-selector involvedObject.kind=VolumeSnapshot -o custom-columns=REASON:.reason,MESSAGE:.message --no-headers | cut -c1-160

say "lifeboat verify checks the snapshots Kubernetes knows: Velero's is no longer one of them"
lb verify || echo "(exit $?: verify found something)"

say "The namespace is deleted (the namespace controller removes the PVC, csi-provisioner the volume)"
run kubectl delete namespace "$ns" --timeout=120s

say "Velero restores it with Ceph alive: a PVC from the snapshot (a clone of the RBD snapshot)"
run velero restore create "r-$ns" --from-backup "$backup" --labels lifeboat.io/demo=true --features=EnableCSI --wait
kubectl wait -n "$ns" --for=jsonpath='{.status.phase}'=Bound pvc/shop-db --timeout=120s >/dev/null
run kubectl get pvc -n "$ns" shop-db
got=$(sim sha256 "$ns/shop-db")
echo "restored volume: $got"
echo "before backup:   $want"
[[ $got == "$want" ]] && echo "== Bit-exact: Velero's restore from the CSI snapshot holds the data lifeboat also has in S3."

test/demo-dr.sh
