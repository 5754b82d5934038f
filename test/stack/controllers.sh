# shellcheck shell=bash
# The CSI snapshot control plane, kube-controller-manager, our CSI driver (lbcsi)
# and Velero, started by up.sh after the API server and MinIO are up; stopped
# by down.sh. Sourced (needs lib.sh's start_bg/need_start with up.sh's BG_LOGS,
# BG_RUN and KUBECONFIG).
#
# Every controller runs with its own ServiceAccount's token and the RBAC its
# project ships (applied from the downloaded module, not copied), so a missing
# permission shows up here exactly as it would in a cluster. One addition: the
# sidecars' manifests leave the Secret rule commented out ("uncomment for
# plugins that require secrets"); ceph-csi needs it, so a Role grants `get` on
# Rook's one provisioner Secret.

KCM_PORT=${LIFEBOAT_KCM_PORT:-16257}
VELERO_METRICS_PORT=${LIFEBOAT_VELERO_METRICS_PORT:-18085}

CSI_DRIVER=rook-ceph.rbd.csi.ceph.com
CSI_DIR=$D/csi
CSI_SOCKET=$CSI_DIR/csi.sock
CSI_CONFIG=$CSI_DIR/config.json
VELERO_NS=velero
VELERO_BUCKET=lifeboat-stack-velero
ROOK_NS=rook-ceph
ROOK_SECRET=rook-csi-rbd-provisioner
ROOK_CONFIGMAP=rook-ceph-csi-config
REPO=$(cd "$HERE/../.." && pwd)

kubectl_() { "$LB_KUBECTL" "$@"; }

# sa_kubeconfig NAME NAMESPACE SA: a kubeconfig (mode 600, never in argv or
# logs) holding a fresh token of ServiceAccount NAMESPACE/SA, for controller NAME.
sa_kubeconfig() {
  local ns=$2 sa=$3 f=$D/run/kubeconfig-$1 token
  token=$(kubectl_ create token "$sa" -n "$ns" --duration=8760h) || die "no token for serviceaccount $ns/$sa"
  token_kubeconfig "$f" "$KUBE_URL" "$D/kube/serving.crt" "$ns-$sa" "$token" "$ns"
  echo "$f"
}

# module_file MODULE@VERSION PATH: a file of a downloaded module.
module_file() {
  local dir
  dir=$(GOFLAGS=-mod=mod GOWORK=off go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -f $dir/$2 ]] || die "$1 has no $2"
  echo "$dir/$2"
}

# The RBAC and namespaces the controllers need; server-side apply is idempotent.
apply_controller_rbac() {
  local snap=github.com/kubernetes-csi/external-snapshotter/v8@$LB_SNAPSHOTTER_VERSION
  local prov=github.com/kubernetes-csi/external-provisioner/v5@$LB_PROVISIONER_VERSION f
  for f in "$(module_file "$snap" deploy/kubernetes/snapshot-controller/rbac-snapshot-controller.yaml)" \
    "$(module_file "$snap" deploy/kubernetes/csi-snapshotter/rbac-csi-snapshotter.yaml)" \
    "$(module_file "$prov" deploy/kubernetes/rbac.yaml)"; do
    quiet kubectl_ apply --server-side --force-conflicts --field-manager=lifeboat-stack -f "$f"
  done
  # kube-controller-manager: the bootstrap ClusterRole and leader-election Role
  # Kubernetes binds to the user system:kube-controller-manager, bound to a
  # ServiceAccount instead (we have no client certificates); with
  # --use-service-account-credentials each controller then uses its own
  # bootstrap-RBAC ServiceAccount, as in a kubeadm cluster.
  quiet kubectl_ apply --server-side --field-manager=lifeboat-stack -f - <<YAML
apiVersion: v1
kind: ServiceAccount
metadata: {name: lifeboat-kube-controller-manager, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: lifeboat:kube-controller-manager}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:kube-controller-manager"}
subjects: [{kind: ServiceAccount, name: lifeboat-kube-controller-manager, namespace: kube-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: "lifeboat:leader-locking-kube-controller-manager", namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: "system::leader-locking-kube-controller-manager"}
subjects: [{kind: ServiceAccount, name: lifeboat-kube-controller-manager, namespace: kube-system}]
---
apiVersion: v1
kind: Namespace
metadata: {name: $ROOK_NS}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: lifeboat-stack-csi-secret, namespace: $ROOK_NS}
rules: [{apiGroups: [""], resources: [secrets], resourceNames: [$ROOK_SECRET], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lifeboat-stack-csi-secret, namespace: $ROOK_NS}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: lifeboat-stack-csi-secret}
subjects:
- {kind: ServiceAccount, name: csi-provisioner, namespace: default}
- {kind: ServiceAccount, name: csi-snapshotter, namespace: default}
YAML
}

kcm_healthy() { curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz" | grep -qx ok; }

ensure_kube_controller_manager() {
  local kc
  if need_start kube-controller-manager "$LB_KCM_BIN" "$KCM_PORT"; then
    kc=$(sa_kubeconfig kube-controller-manager kube-system lifeboat-kube-controller-manager)
    mkdir -p "$D/kcm"
    # No kubelets or nodes: the controllers that manage nodes are off. It serves
    # /healthz on loopback only (self-signed cert in $D/kcm).
    start_bg kube-controller-manager "$LB_KCM_BIN" "$LB_KCM_BIN" --kubeconfig="$kc" \
      --use-service-account-credentials=true --root-ca-file="$D/kube/serving.crt" \
      --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$D/kcm" \
      --controllers='*,-nodeipam,-nodelifecycle,-ttl,-taint-eviction-controller,-attachdetach,-bootstrapsigner,-tokencleaner' \
      --leader-elect=true --leader-elect-resource-namespace=kube-system
  fi
  wait_for 60 "kube-controller-manager /healthz" kcm_healthy ||
    die "kube-controller-manager not healthy, see $D/logs/kube-controller-manager.log"
}

ensure_snapshot_controller() {
  local kc
  need_start snapshot-controller "$LB_SNAPSHOT_CONTROLLER_BIN" || return 0
  kc=$(sa_kubeconfig snapshot-controller kube-system snapshot-controller)
  start_bg snapshot-controller "$LB_SNAPSHOT_CONTROLLER_BIN" "$LB_SNAPSHOT_CONTROLLER_BIN" \
    --kubeconfig="$kc" --leader-election=true --leader-election-namespace=kube-system --v=2
}

# The Rook objects of the real path: Rook's Secret with client.csi-rbd-provisioner's
# key, the clusterID rook-ceph in ceph-csi's ConfigMap (other clusterIDs kept: the
# e2e worlds add theirs), and the classes users create from Rook's examples.
# The stack's names are Rook's defaults; the simulator's e2e worlds use random
# clusterIDs, drivers and class names, so the two never share an object (only
# the Secret, which every stack fills with the same key, see reef.sh).
setup_rook_objects() {
  local key monitors
  key=$(sed -n 's/^CEPH_CSI_KEY=//p' "$D/ceph/cluster.env")
  [[ -n $key ]] || die "no CEPH_CSI_KEY in $D/ceph/cluster.env"
  # The Secret goes through stdin: the key never reaches argv or a log.
  printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: %s}\ntype: kubernetes.io/rook\nstringData: {userID: csi-rbd-provisioner, userKey: "%s"}\n' \
    "$ROOK_SECRET" "$ROOK_NS" "$key" | quiet kubectl_ apply --server-side --force-conflicts --field-manager=lifeboat-stack -f -
  monitors=$(ceph_monitors_json)
  local i
  for ((i = 0; i < 20; i++)); do
    set_rook_configmap_entry "$monitors" && break
    sleep 0.3 # a concurrent writer (an e2e world) won: read again
  done
  ((i < 20)) || die "could not update configmap $ROOK_NS/$ROOK_CONFIGMAP"
  quiet kubectl_ apply --server-side --force-conflicts --field-manager=lifeboat-stack -f - <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: rook-ceph-block}
provisioner: $CSI_DRIVER
parameters:
  clusterID: rook-ceph
  pool: replicapool
  imageFormat: "2"
  imageFeatures: layering
  csi.storage.k8s.io/provisioner-secret-name: $ROOK_SECRET
  csi.storage.k8s.io/provisioner-secret-namespace: $ROOK_NS
  csi.storage.k8s.io/controller-expand-secret-name: $ROOK_SECRET
  csi.storage.k8s.io/controller-expand-secret-namespace: $ROOK_NS
  csi.storage.k8s.io/fstype: ext4
reclaimPolicy: Delete
allowVolumeExpansion: true
volumeBindingMode: Immediate
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: csi-rbdplugin-snapclass
  labels: {velero.io/csi-volumesnapshot-class: "true"}
driver: $CSI_DRIVER
deletionPolicy: Retain
parameters:
  clusterID: rook-ceph
  csi.storage.k8s.io/snapshotter-secret-name: $ROOK_SECRET
  csi.storage.k8s.io/snapshotter-secret-namespace: $ROOK_NS
YAML
}

# ["v2:127.0.0.1:P2","v1:127.0.0.1:P1"], as test/sim's Env.Monitors writes them.
ceph_monitors_json() {
  local v2 v1
  v2=$(sed -n 's/^CEPH_MON_HOST_V2=//p' "$D/ceph/cluster.env")
  v1=$(sed -n 's/^CEPH_MON_HOST_V1=//p' "$D/ceph/cluster.env")
  printf '["v2:%s","v1:%s"]' "$v2" "$v1"
}

# set_rook_configmap_entry MONITORS_JSON: one optimistic read-modify-write of
# the rook-ceph entry (fails on a conflict; the caller retries).
set_rook_configmap_entry() {
  local cur entry
  entry=$(jq -nc --argjson m "$1" '{clusterID: "rook-ceph", monitors: $m, rbd: {radosNamespace: ""}, namespace: "rook-ceph"}')
  if ! cur=$(kubectl_ get configmap -n "$ROOK_NS" "$ROOK_CONFIGMAP" -o json 2>/dev/null); then
    jq -n --arg ns "$ROOK_NS" --arg n "$ROOK_CONFIGMAP" --argjson e "$entry" \
      '{apiVersion: "v1", kind: "ConfigMap", metadata: {name: $n, namespace: $ns}, data: {"csi-cluster-config-json": ([$e] | tojson)}}' |
      quiet kubectl_ create -f -
    return
  fi
  jq --argjson e "$entry" '.data["csi-cluster-config-json"] |=
      ((. // "[]") | fromjson | map(select(.clusterID != "rook-ceph")) + [$e] | tojson)' <<<"$cur" |
    quiet kubectl_ replace -f - # carries resourceVersion: a concurrent update makes it fail
}

# lbcsi's config.json: the driver reads it on every request (ceph-csi's
# format). The rook-ceph entry is (re)written under the flock the contract
# names; entries tests added for other clusterIDs are kept.
write_csi_config() {
  local monitors=$1
  mkdir -p "$CSI_DIR"
  (
    flock -w 30 8 || die "timed out waiting for $CSI_CONFIG.lock"
    local cur='[]'
    [[ -s $CSI_CONFIG ]] && cur=$(<"$CSI_CONFIG")
    jq --argjson m "$monitors" \
      'map(select(.clusterID != "rook-ceph")) + [{clusterID: "rook-ceph", monitors: $m, rbd: {radosNamespace: ""}}]' \
      <<<"$cur" >"$CSI_CONFIG.tmp"
    mv "$CSI_CONFIG.tmp" "$CSI_CONFIG"
  ) 8>"$CSI_CONFIG.lock"
}

csi_socket_ready() { [[ -S $CSI_SOCKET ]]; }

# lbcsi is built from this tree (with the Ceph release tag) on every up: if the
# binary changed, the running driver is replaced, and with it the sidecars
# (they exit when the socket goes away; restarting them at once is quicker).
ensure_lbcsi() {
  local bin=$CSI_DIR/lbcsi new=$CSI_DIR/lbcsi.new tags
  [[ -d $REPO/test/csidriver/cmd/lbcsi ]] || { log "no test/csidriver in $REPO: CSI driver not started"; return 1; }
  tags=${GO_TAGS:-$(ceph --version | awk '{print $(NF-1)}')}
  mkdir -p "$CSI_DIR"
  (cd "$REPO" && go build -tags "$tags" -o "$new" ./test/csidriver/cmd/lbcsi) || die "building lbcsi failed"
  if [[ -x $bin ]] && cmp -s "$new" "$bin" && pid_alive "$D/run/lbcsi.pid" "$CSI_SOCKET"; then
    rm -f "$new"
  else
    kill_pidfile "$D/run/csi-provisioner.pid" "$CSI_SOCKET"
    kill_pidfile "$D/run/csi-snapshotter.pid" "$CSI_SOCKET"
    kill_pidfile "$D/run/lbcsi.pid" "$CSI_SOCKET"
    mv "$new" "$bin"
    start_bg lbcsi "$CSI_SOCKET" "$bin" --endpoint "unix://$CSI_SOCKET" --drivername "$CSI_DRIVER" --config "$CSI_CONFIG"
  fi
  wait_for 30 "lbcsi socket $CSI_SOCKET" csi_socket_ready || die "lbcsi did not listen, see $D/logs/lbcsi.log"
}

# The sidecars, with the flags of their deployment manifests (leader election
# on; no --http-endpoint: the manifests' :8080 would listen on every interface).
ensure_sidecars() {
  local kc
  if need_start csi-provisioner "$CSI_SOCKET"; then
    kc=$(sa_kubeconfig csi-provisioner default csi-provisioner)
    # Topology=false: there are no Nodes or CSINodes without a kubelet.
    start_bg csi-provisioner "$CSI_SOCKET" "$LB_CSI_PROVISIONER_BIN" --kubeconfig="$kc" \
      --csi-address="$CSI_SOCKET" --leader-election --leader-election-namespace=default \
      --feature-gates=Topology=false --v=2
  fi
  if need_start csi-snapshotter "$CSI_SOCKET"; then
    kc=$(sa_kubeconfig csi-snapshotter default csi-snapshotter)
    start_bg csi-snapshotter "$CSI_SOCKET" "$LB_CSI_SNAPSHOTTER_BIN" --kubeconfig="$kc" \
      --csi-address="$CSI_SOCKET" --leader-election --leader-election-namespace=default --v=2
  fi
}

minio_s3() { # minio_s3 METHOD PATH: a signed S3 call; the key goes through stdin
  printf 'user = "%s:%s"\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" |
    curl -fsS -K - --aws-sigv4 "aws:amz:us-east-1:s3" -X "$1" "http://127.0.0.1:$MINIO_PORT/$2"
}

# Velero's objects come from `velero install --dry-run -o json` (its CRDs,
# namespace, ServiceAccount bound to cluster-admin, the BackupStorageLocation
# on our MinIO, and its Deployment, scaled to 0: the server runs as a process,
# but a restore reads deployments/velero).
setup_velero_objects() {
  mkdir -p "$D/velero"
  minio_s3 HEAD "$VELERO_BUCKET" >/dev/null 2>&1 || minio_s3 PUT "$VELERO_BUCKET" >/dev/null ||
    die "could not create bucket $VELERO_BUCKET on MinIO"
  "$LB_VELERO_BIN" install --dry-run -o json --namespace "$VELERO_NS" --provider aws \
    --plugins "velero/velero-plugin-for-aws:$LB_VELERO_AWS_VERSION" --bucket "$VELERO_BUCKET" --no-secret \
    --backup-location-config "region=us-east-1,s3ForcePathStyle=true,s3Url=http://127.0.0.1:$MINIO_PORT" \
    --use-volume-snapshots=false --features=EnableCSI --use-node-agent=false >"$D/velero/install.json" ||
    die "velero install --dry-run failed"
  # CRDs first (the BackupStorageLocation needs them established); the
  # Deployment is scaled to 0 before it reaches the API server.
  local crd='.kind == "CustomResourceDefinition"'
  jq "{apiVersion, kind, items: [.items[] | select($crd)]}" "$D/velero/install.json" >"$D/velero/crds.json"
  jq "{apiVersion, kind, items: [.items[] | select(($crd) | not)
      | if .kind == \"Deployment\" then .spec.replicas = 0 else . end]}" "$D/velero/install.json" >"$D/velero/objects.json"
  [[ $(jq '[.items[] | select(.kind == "Deployment" and .spec.replicas == 0)] | length' "$D/velero/objects.json") == 1 ]] ||
    die "no velero Deployment in velero install's output ($D/velero/install.json)"
  quiet kubectl_ apply --server-side --force-conflicts --field-manager=lifeboat-stack -f "$D/velero/crds.json"
  quiet kubectl_ wait --for=condition=Established crd -l component=velero --timeout=60s
  quiet kubectl_ apply --server-side --force-conflicts --field-manager=lifeboat-stack -f "$D/velero/objects.json"
}

velero_ready() {
  pid_alive "$D/run/velero.pid" "$LB_VELERO_PLUGIN_DIR" &&
    curl -fsS "http://127.0.0.1:$VELERO_METRICS_PORT/metrics" >/dev/null &&
    [[ $(kubectl_ get backupstoragelocation default -n "$VELERO_NS" -o 'jsonpath={.status.phase}') == Available ]]
}

ensure_velero() {
  local kc v=$D/velero
  mkdir -p "$v/scratch"
  if [[ ! -f $v/credentials ]]; then
    (umask 077 && printf '[default]\naws_access_key_id=%s\naws_secret_access_key=%s\n' \
      "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$v/credentials")
  fi
  if need_start velero "$LB_VELERO_PLUGIN_DIR" "$VELERO_METRICS_PORT"; then
    kc=$(sa_kubeconfig velero "$VELERO_NS" velero)
    # The plugins inherit the environment: AWS credentials from a file, not argv.
    # No profiler (""), metrics on loopback; controller-runtime's listener is
    # patched to 127.0.0.1 at build time (install.sh build_velero). Several
    # tests share this server: backups run side by side, so one waiting out
    # its CSI snapshot timeout does not queue the others behind it.
    start_bg velero "$LB_VELERO_PLUGIN_DIR" env VELERO_NAMESPACE="$VELERO_NS" \
      VELERO_SCRATCH_DIR="$v/scratch" AWS_SHARED_CREDENTIALS_FILE="$v/credentials" \
      "$LB_VELERO_BIN" server --kubeconfig="$kc" --namespace="$VELERO_NS" \
      --plugin-dir="$LB_VELERO_PLUGIN_DIR" --features=EnableCSI \
      --metrics-address="127.0.0.1:$VELERO_METRICS_PORT" --profiler-address= \
      --uploader-type=kopia --log-level=info --concurrent-backups=4
  fi
  wait_for 90 "velero server (BackupStorageLocation default Available)" velero_ready ||
    die "velero server not ready, see $D/logs/velero.log"
}

# ensure_controllers: everything of this file, in order. The CSI parts need a
# tree with test/csidriver; without it the rest still starts.
ensure_controllers() {
  mkdir -p "$D/velero"
  # The API objects are applied when this file, the versions or the Ceph
  # cluster (a new one has a new key) changed since the last apply: warm ups
  # stay quick. etcd keeps them across restarts; `make stack-wipe` drops both.
  local stamp
  stamp=$(cat "$HERE/controllers.sh" "$HERE/lib.sh" "$D/ceph/cluster.env" | sha256sum | cut -c1-16)
  if [[ $(cat "$D/run/objects.stamp" 2>/dev/null) != "$stamp" ]]; then
    apply_controller_rbac
    setup_rook_objects
    setup_velero_objects
    echo "$stamp" >"$D/run/objects.stamp"
  fi
  write_csi_config "$(ceph_monitors_json)"
  ensure_kube_controller_manager
  ensure_snapshot_controller
  if ensure_lbcsi; then
    ensure_sidecars
  fi
  ensure_velero
}

# stop_controllers: reverse order, each exactly by its pid file and marker.
stop_controllers() {
  kill_pidfile "$D/run/velero.pid" "$LB_VELERO_PLUGIN_DIR"
  kill_pidfile "$D/run/csi-snapshotter.pid" "$CSI_SOCKET"
  kill_pidfile "$D/run/csi-provisioner.pid" "$CSI_SOCKET"
  kill_pidfile "$D/run/lbcsi.pid" "$CSI_SOCKET"
  kill_pidfile "$D/run/snapshot-controller.pid" "$LB_SNAPSHOT_CONTROLLER_BIN"
  kill_pidfile "$D/run/kube-controller-manager.pid" "$LB_KCM_BIN"
}
