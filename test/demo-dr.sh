#!/usr/bin/env bash
# The end of `make demo` (test/demo.sh runs it): disaster recovery. Ceph is
# lost; a new Ceph cluster, the same Velero backup, `lifeboat restore
# --velero-backup`, the velero command it prints, and the PVCs are back with
# their bytes. The stack's own Ceph cluster serves everyone else's tests, so
# this story runs on two clusters of its own, A (the lost site) and B (the new
# one), under a clusterID of its own with its own StorageClass,
# VolumeSnapshotClass and Secret.
set -euo pipefail
cd "$(dirname "$0")/.."
stack=${LIFEBOAT_STACK_DIR:-/tmp/lifeboat-stack}
set -a; . "$stack/env"; set +a
for k in CSI_CONFIG CSI_DRIVER VELERO_NAMESPACE; do
  [[ -n ${!k:-} ]] || { echo "demo-dr: $stack/env has no $k: run \`make stack-up\` from this tree" >&2; exit 1; }
done
say() { echo; echo "== $*"; }
run() { echo; echo "\$ $*"; "$@"; }
lb() { echo; echo "\$ lifeboat $*"; ./bin/lifeboat --driver-suffix "$CSI_DRIVER" "$@"; }

ns=dr-$(date +%H%M%S)
id=demo-$ns # the clusterID, StorageClass, VolumeSnapshotClass and Secret
backup=nightly-$ns
work=$(mktemp -d /tmp/lifeboat-demo-dr.XXXXXX)
A=$work/ceph-a B=$work/ceph-b
agent_pid=
free_port() { local p=$1; while (echo >/dev/tcp/127.0.0.1/"$p") 2>/dev/null; do p=$((p + 1)); done; echo "$p"; }
a2=$(free_port 25320) a1=$(free_port 28809) b2=$(free_port 26320) b1=$(free_port 29809)

csi_entry() { # csi_entry CLUSTER_ENV|"" : point $id at a cluster in lbcsi's config.json and Rook's ConfigMap
  local mons='null'
  [[ -n $1 ]] && mons=$(jq -nc --arg a "$(sed -n 's/^CEPH_MON_HOST_V2=//p' "$1")" --arg b "$(sed -n 's/^CEPH_MON_HOST_V1=//p' "$1")" '["v2:"+$a, "v1:"+$b]')
  (
    flock -w 30 8
    cur='[]'; [[ -s $CSI_CONFIG ]] && cur=$(<"$CSI_CONFIG")
    jq --arg id "$id" --argjson m "$mons" 'map(select(.clusterID != $id)) + (if $m then [{clusterID: $id, monitors: $m, rbd: {radosNamespace: ""}}] else [] end)' \
      <<<"$cur" >"$CSI_CONFIG.tmp" && mv "$CSI_CONFIG.tmp" "$CSI_CONFIG"
  ) 8>"$CSI_CONFIG.lock"
  for _ in 1 2 3 4 5; do
    kubectl get configmap -n rook-ceph rook-ceph-csi-config -o json |
      jq --arg id "$id" --argjson m "$mons" '.data["csi-cluster-config-json"] |= ((. // "[]") | fromjson |
        map(select(.clusterID != $id)) + (if $m then [{clusterID: $id, monitors: $m}] else [] end) | tojson)' |
      kubectl replace -f - >/dev/null 2>&1 && break
    sleep 1
  done
  if [[ -n $1 ]]; then
    kubectl create secret generic -n rook-ceph "$id" --from-literal=userID="$(sed -n 's/^CEPH_CSI_USER=//p' "$1")" \
      --from-literal=userKey="$(sed -n 's/^CEPH_CSI_KEY=//p' "$1")" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  fi
}
cleanup() {
  [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  kubectl get volumesnapshotcontents -o json | jq -r --arg ns "$ns" '.items[] | select(.spec.volumeSnapshotRef.namespace == $ns) | .metadata.name' |
    xargs -r kubectl delete volumesnapshotcontent --wait=false >/dev/null 2>&1 || true
  kubectl delete configmap -n "$VELERO_NAMESPACE" "lifeboat-rehydrate-$backup" >/dev/null 2>&1 || true
  kubectl delete storageclass "$id" >/dev/null 2>&1 || true
  kubectl delete volumesnapshotclass "$id" >/dev/null 2>&1 || true
  kubectl delete secret,role,rolebinding -n rook-ceph "$id" >/dev/null 2>&1 || true
  csi_entry "" || true
  test/stack/ceph-cluster.sh stop "$A" --wipe >/dev/null 2>&1 || true
  test/stack/ceph-cluster.sh stop "$B" --wipe >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

say "DISASTER RECOVERY. Site A: a Ceph cluster of its own (the stack's serves other tests), clusterID $id"
test/stack/ceph-cluster.sh start "$A" "$a2" "$a1" >/dev/null
test/stack/ceph-cluster.sh start "$B" "$b2" "$b1" >"$work/b.log" 2>&1 & # the new site, for later
b_pid=$!
csi_entry "$A/cluster.env"
kubectl apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: $id, namespace: rook-ceph}
rules: [{apiGroups: [""], resources: [secrets], resourceNames: [$id], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: $id, namespace: rook-ceph}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: $id}
subjects:
- {kind: ServiceAccount, name: csi-provisioner, namespace: default}
- {kind: ServiceAccount, name: csi-snapshotter, namespace: default}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: $id}
provisioner: $CSI_DRIVER
reclaimPolicy: Delete
parameters:
  clusterID: $id
  pool: replicapool
  imageFeatures: layering
  imageFormat: "2"
  csi.storage.k8s.io/provisioner-secret-name: $id
  csi.storage.k8s.io/provisioner-secret-namespace: rook-ceph
  csi.storage.k8s.io/controller-expand-secret-name: $id
  csi.storage.k8s.io/controller-expand-secret-namespace: rook-ceph
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata: {name: $id}
driver: $CSI_DRIVER
deletionPolicy: Retain
parameters:
  clusterID: $id
  csi.storage.k8s.io/snapshotter-secret-name: $id
  csi.storage.k8s.io/snapshotter-secret-namespace: rook-ceph
YAML
kubectl create namespace "$ns" >/dev/null
for pvc in db:128Mi files:64Mi; do
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: ${pvc%%:*}
  namespace: $ns
  annotations: {velero.io/csi-volumesnapshot-class: $id}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: $id
  resources: {requests: {storage: ${pvc#*:}}}
YAML
done
kubectl wait -n "$ns" --for=jsonpath='{.status.phase}'=Bound pvc/db pvc/files --timeout=90s >/dev/null
run kubectl get pvc -n "$ns"
{ cat "$stack/env"; cat "$A/cluster.env"; } >"$work/env-a" # lbsim writes into A
sim() { ./bin/lbsim --env "$work/env-a" --cluster-id "$id" "$@"; }
sim write "$ns/db" --offset 0 --length 96M --kind random --seed 11 >/dev/null
sim write "$ns/db" --offset 96M --length 32M --kind text --seed 12 >/dev/null
sim write "$ns/files" --offset 4M --length 8M --kind text --seed 13 >/dev/null # the rest of files: holes
sim write "$ns/files" --offset 40M --length 6M --kind random --seed 14 >/dev/null
declare -A want
for pvc in db files; do want[$pvc]=$(sim sha256 "$ns/$pvc" | sed "s/^SHA256=//"); echo "sha256 of $ns/$pvc: ${want[$pvc]}"; done

say "Velero backs the namespace up (CSI snapshots in A); lifeboat's agent exports both snapshots to S3"
head -c 32 /dev/urandom | base64 >"$work/repository.key"
s3=(--s3-endpoint "$S3_ENDPOINT" --s3-bucket "$ns" --encryption-key-file "$work/repository.key")
./bin/lifeboat repo init "${s3[@]}" --s3-create-bucket
./bin/lifeboat run --driver-suffix "$CSI_DRIVER" --ceph-secret "$id" "${s3[@]}" --include-namespaces "$ns" \
  --identity demo-dr --lease-namespace "$ns" --metrics-address 127.0.0.1:0 --verify-interval 0 >"$work/agent-a.log" 2>&1 &
agent_pid=$!
run velero backup create "$backup" --include-namespaces "$ns" --features=EnableCSI --wait
for _ in $(seq 180); do
  [[ $(./bin/lifeboat backups list "${s3[@]}" --velero-backup "$backup" -o json | jq length) == 2 ]] && break
  sleep 1
done
lb backups list "${s3[@]}" --velero-backup "$backup"
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=
pools_a=$(ceph -c "$A/ceph.conf" osd lspools | tr '\n' ' ')

say "Disaster: the namespace is deleted, and Ceph cluster A is destroyed (daemons killed, data wiped)"
run kubectl delete namespace "$ns" --timeout=120s
run test/stack/ceph-cluster.sh stop "$A" --wipe

say "The new site: Ceph cluster B (new fsid). Its pools are numbered anew: replicapool gets another id than in A"
wait "$b_pid" || { cat "$work/b.log"; exit 1; }
ceph -c "$B/ceph.conf" osd pool create scratch 8 8 >/dev/null 2>&1 # another pool first, as a real new site may
ceph -c "$B/ceph.conf" osd pool rm replicapool replicapool --yes-i-really-really-mean-it >/dev/null 2>&1
ceph -c "$B/ceph.conf" osd pool create replicapool 8 8 >/dev/null 2>&1
rbd -c "$B/ceph.conf" pool init replicapool
echo "pools in A were: $pools_a"
echo "pools in B are:  $(ceph -c "$B/ceph.conf" osd lspools | tr '\n' ' ')"
echo "The CSI driver and lifeboat now find clusterID $id in B (ceph-csi's config and Secret updated)"
csi_entry "$B/cluster.env"

say "Velero still has the backup; restoring it now would leave every PVC Pending (its snapshots are gone with A). First, what lifeboat would do:"
lb restore --velero-backup "$backup" --velero-namespace "$VELERO_NAMESPACE" --ceph-secret "$id" "${s3[@]}" --dry-run

say "lifeboat puts the snapshots back into B, as ceph-csi had left them, from the repository alone"
lb restore --velero-backup "$backup" --velero-namespace "$VELERO_NAMESPACE" --ceph-secret "$id" "${s3[@]}" | tee "$work/restore.out"
cmd=$(grep -E '^  velero restore create ' "$work/restore.out" | sed 's/^  //')

say "Safe to run again: nothing is rewritten (each image is read back and compared with its backup)"
lb restore --velero-backup "$backup" --velero-namespace "$VELERO_NAMESPACE" --ceph-secret "$id" "${s3[@]}"

say "The command lifeboat printed: stock Velero restores the namespace"
run $cmd
kubectl wait -n "$ns" --for=jsonpath='{.status.phase}'=Bound pvc/db pvc/files --timeout=120s >/dev/null
run kubectl get pvc -n "$ns"
ok=1
for pvc in db files; do
  pv=$(kubectl get pvc -n "$ns" "$pvc" -o jsonpath='{.spec.volumeName}')
  img=$(kubectl get pv "$pv" -o jsonpath='{.spec.csi.volumeAttributes.imageName}')
  got=$(rbd -c "$B/ceph.conf" export "replicapool/$img" - 2>/dev/null | sha256sum | cut -c1-64)
  echo "$ns/$pvc in B: sha256 $got (before the disaster: ${want[$pvc]})"
  [[ $got == "${want[$pvc]}" ]] || ok=0
done
((ok)) && echo "== Bit-exact: both volumes are back, in a new Ceph cluster, through Velero's own restore."

say "lifeboat's agent in the new site: the restored snapshots are backed up already (nothing exported again)"
./bin/lifeboat run --driver-suffix "$CSI_DRIVER" --ceph-secret "$id" "${s3[@]}" --include-namespaces "$ns" \
  --identity demo-dr-b --lease-namespace "$ns" --metrics-address 127.0.0.1:0 --verify-interval 0 >"$work/agent-b.log" 2>&1 &
agent_pid=$!
sleep 5
kubectl get volumesnapshotcontents -o json | jq -r --arg ns "$ns" '.items[] | select(.spec.volumeSnapshotRef.namespace == $ns) |
  "\(.metadata.name)  phase=\(.metadata.annotations["lifeboat.io/phase"] // "-")  backup=\(.metadata.annotations["lifeboat.io/backup-id"] // "-")"'
echo "backups in the repository: $(./bin/lifeboat backups list "${s3[@]}" -o json | jq length) (2 before the disaster)"
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=
((ok))
