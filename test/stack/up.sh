#!/usr/bin/env bash
# Brings up the local test stack: Ceph cluster A, etcd + kube-apiserver (with the
# snapshot CRDs), MinIO, kube-controller-manager, snapshot-controller, our CSI
# driver lbcsi with csi-provisioner and csi-snapshotter, and a Velero server
# (controllers.sh), all on 127.0.0.1, state and logs in $LIFEBOAT_STACK_DIR.
# Idempotent: what already runs and is healthy is left alone. Writes
# $LIFEBOAT_STACK_DIR/env (KEY=value lines) for tests: `set -a; . "$LIFEBOAT_STACK_DIR/env"`.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

CEPH_V2_PORT=${LIFEBOAT_CEPH_V2_PORT:-13300}
CEPH_V1_PORT=${LIFEBOAT_CEPH_V1_PORT:-16789}
LB_ETCD_PORT=${LIFEBOAT_ETCD_PORT:-12379}
LB_ETCD_PEER_PORT=${LIFEBOAT_ETCD_PEER_PORT:-12380}
KUBE_PORT=${LIFEBOAT_KUBE_PORT:-16443}
MINIO_PORT=${LIFEBOAT_MINIO_PORT:-19000}
MINIO_CONSOLE_PORT=${LIFEBOAT_MINIO_CONSOLE_PORT:-19001}

D=$LIFEBOAT_STACK_DIR
KUBE_URL=https://127.0.0.1:$KUBE_PORT
export KUBECONFIG=$D/kubeconfig

BG_LOGS=$D/logs BG_RUN=$D/run  # start_bg, need_start (lib.sh)

start_ceph() {
  "$HERE/ceph-cluster.sh" start "$D/ceph" "$CEPH_V2_PORT" "$CEPH_V1_PORT" 9>&-
}

etcd_healthy() { curl -fsS "http://127.0.0.1:$LB_ETCD_PORT/health" | grep -q '"health":"true"'; }

ensure_etcd() {
  local peer=http://127.0.0.1:$LB_ETCD_PEER_PORT client=http://127.0.0.1:$LB_ETCD_PORT
  if need_start etcd "$D/etcd" "$LB_ETCD_PORT" "$LB_ETCD_PEER_PORT"; then
    # Start empty: the Ceph cluster is new at every start too (memstore), so
    # objects kept from an earlier run would point at nothing, and every one
    # left is retried for ever by snapshot-controller and csi-snapshotter.
    rm -rf "$D/etcd"
    # --unsafe-no-fsync: throwaway test data, and fsync per write makes the API slow on shared disks.
    start_bg etcd "$D/etcd" "$LB_ETCD_BIN" --name lifeboat --data-dir "$D/etcd" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "lifeboat=$peer" --unsafe-no-fsync
  fi
  wait_for 30 etcd etcd_healthy || die "etcd not healthy, see $D/logs/etcd.log"
}

# Keys and certs are made once and kept, so kubeconfigs and tokens stay valid across restarts.
make_kube_secrets() {
  local k=$D/kube
  [[ -f $k/tokens.csv ]] && return 0
  mkdir -p "$k"
  quiet openssl genrsa -out "$k/sa.key" 2048
  quiet openssl rsa -in "$k/sa.key" -pubout -out "$k/sa.pub"
  # Self-signed serving cert: it is its own CA, so the kubeconfig trusts exactly it.
  quiet openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=lifeboat-kube-apiserver \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$k/serving.key" -out "$k/serving.crt"
  # admin: cluster-admin via system:masters. lifeboat-tester: no groups, for RBAC tests.
  printf '%s,admin,admin,system:masters\n%s,lifeboat-tester,lifeboat-tester\n' \
    "$(openssl rand -hex 24)" "$(openssl rand -hex 24)" >"$k/tokens.csv.tmp"
  mv "$k/tokens.csv.tmp" "$k/tokens.csv"
}

token_of() { awk -F, -v u="$1" '$2 == u {print $1}' "$D/kube/tokens.csv"; }

write_kubeconfig() { token_kubeconfig "$KUBECONFIG" "$KUBE_URL" "$D/kube/serving.crt" admin "$(token_of admin)"; }

kube_ready() { "$LB_KUBECTL" get --raw /readyz; }

ensure_kube_apiserver() {
  local k=$D/kube
  make_kube_secrets
  write_kubeconfig
  if need_start kube-apiserver "$k/" "$KUBE_PORT"; then
    start_bg kube-apiserver "$k/" "$LB_KUBE_APISERVER_BIN" \
      --etcd-servers="http://127.0.0.1:$LB_ETCD_PORT" \
      --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$KUBE_PORT" \
      --tls-cert-file="$k/serving.crt" --tls-private-key-file="$k/serving.key" --cert-dir="$k" \
      --service-account-issuer="$KUBE_URL" --service-account-key-file="$k/sa.pub" \
      --service-account-signing-key-file="$k/sa.key" \
      --token-auth-file="$k/tokens.csv" --authorization-mode=RBAC \
      --service-cluster-ip-range=10.96.0.0/24 \
      --endpoint-reconciler-type=none # no kubelets/nodes: don't manage the kubernetes Endpoints
  fi
  wait_for 90 "kube-apiserver /readyz" kube_ready || die "kube-apiserver not ready, see $D/logs/kube-apiserver.log"
}

setup_kube_objects() {
  quiet "$LB_KUBECTL" apply -f "$LB_SNAPSHOT_CRD_DIR"
  quiet "$LB_KUBECTL" wait --for=condition=Established crd --all --timeout=60s
  "$LB_KUBECTL" get namespace rook-ceph >/dev/null 2>&1 || quiet "$LB_KUBECTL" create namespace rook-ceph
}

# shellcheck source=controllers.sh
source "$HERE/controllers.sh"

minio_ready() { curl -fsS "http://127.0.0.1:$MINIO_PORT/minio/health/ready"; }

ensure_minio() {
  local m=$D/minio
  mkdir -p "$m/data"
  if [[ ! -f $m/credentials ]]; then
    printf 'AWS_ACCESS_KEY_ID=lifeboat%s\nAWS_SECRET_ACCESS_KEY=%s\n' \
      "$(openssl rand -hex 6)" "$(openssl rand -hex 24)" >"$m/credentials"
  fi
  # shellcheck source=/dev/null
  source "$m/credentials"
  if need_start minio "$m/data" "$MINIO_PORT" "$MINIO_CONSOLE_PORT"; then
    # Credentials go through the environment, not argv, so `ps` doesn't show them.
    start_bg minio "$m/data" env MINIO_ROOT_USER="$AWS_ACCESS_KEY_ID" \
      MINIO_ROOT_PASSWORD="$AWS_SECRET_ACCESS_KEY" MINIO_UPDATE=off \
      "$LB_MINIO_BIN" server "$m/data" --quiet \
      --address "127.0.0.1:$MINIO_PORT" --console-address "127.0.0.1:$MINIO_CONSOLE_PORT"
  fi
  wait_for 30 "MinIO ready" minio_ready || die "MinIO not ready, see $D/logs/minio.log"
}

write_env() {
  local release
  release=$(ceph --version | awk '{print $(NF-1)}')
  {
    cat "$D/ceph/cluster.env" "$D/minio/credentials"
    cat <<ENV
LIFEBOAT_STACK_DIR=$D
LIFEBOAT_CEPH_RELEASE=$release
KUBECONFIG=$KUBECONFIG
KUBE_APISERVER=$KUBE_URL
KUBE_CA_FILE=$D/kube/serving.crt
KUBE_ADMIN_TOKEN=$(token_of admin)
KUBE_TESTER_USER=lifeboat-tester
KUBE_TESTER_TOKEN=$(token_of lifeboat-tester)
S3_ENDPOINT=http://127.0.0.1:$MINIO_PORT
AWS_REGION=us-east-1
LB_ETCD_ENDPOINT=http://127.0.0.1:$LB_ETCD_PORT
LB_ETCD_BIN=$LB_ETCD_BIN
LB_KUBE_APISERVER_BIN=$LB_KUBE_APISERVER_BIN
LB_MINIO_BIN=$LB_MINIO_BIN
LB_SNAPSHOT_CRD_DIR=$LB_SNAPSHOT_CRD_DIR
LB_KUBECTL=$LB_KUBECTL
LB_KCM_BIN=$LB_KCM_BIN
CSI_DRIVER=$CSI_DRIVER
CSI_ENDPOINT=unix://$CSI_SOCKET
CSI_CONFIG=$CSI_CONFIG
VELERO=$LB_VELERO_BIN
VELERO_NAMESPACE=$VELERO_NS
VELERO_FEATURES=EnableCSI
VELERO_BUCKET=$VELERO_BUCKET
ENV
    # For shells (`set -a; . env`): the velero CLI on PATH. Go tests use VELERO.
    printf 'PATH=%s:$PATH\n' "$LB_VELERO_DIR"
  } >"$D/env.tmp"
  mv "$D/env.tmp" "$D/env"
}

main() {
  "$HERE/install.sh"
  mkdir -p "$D"/{logs,run}
  touch "$D/.lifeboat-stack"
  # Two up.sh at once would both start the same servers: take turns. (Servers are
  # started with fd 9 closed, or they would hold this lock forever.)
  exec 9>"$D/run/up.lock"
  flock -w 120 9 || die "another up.sh holds $D/run/up.lock"
  # Ceph takes ~10 s to form; bring up the rest meanwhile.
  start_ceph &
  local ceph_job=$!
  ensure_etcd
  ensure_kube_apiserver
  setup_kube_objects
  ensure_minio
  wait "$ceph_job" || die "Ceph cluster failed to start, see $D/ceph/log"
  ensure_controllers
  write_env
  log "stack up in ${SECONDS}s; env: $D/env (load it with: set -a; . $D/env; set +a)"
  # Print the endpoints, never the keys and tokens.
  grep -E '^(CEPH_CONF|CEPH_MON_HOST_V[12]|KUBECONFIG|KUBE_APISERVER|S3_ENDPOINT|CSI_ENDPOINT|VELERO)=' "$D/env"
}

main "$@"
