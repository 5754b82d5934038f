#!/usr/bin/env bash
# A one-node Kubernetes worker for the test stack: containerd + runc + kubelet +
# kube-scheduler against the stack's kube-apiserver and kube-controller-manager.
#   node.sh up            start (or check) the node; writes $LIFEBOAT_NODE_DIR/env
#   node.sh load IMAGE    copy a podman image into the node's containerd
#   node.sh down [--wipe] stop what up started, unmount, remove its cgroups,
#                         restore the sysctls kubelet rewrote, delete the Node
#   node.sh status
#
# Only hostNetwork pods: the one CNI network is loopback. Everything listens on
# 127.0.0.1 (kubelet, its healthz, containerd's stream server, kube-scheduler);
# the Node's InternalIP is still the machine's interface address (kubelet refuses
# a loopback node IP), so pods and probes must name 127.0.0.1 themselves.
# Written outside $LIFEBOAT_NODE_DIR (test/node/README.md): cgroups
# /sys/fs/cgroup/*/lifeboat-node, /run/containerd/s/ (shim sockets; removed when
# empty), the Node object, and three
# sysctls for as long as the node runs.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=../stack/lib.sh
source "$REPO/test/stack/lib.sh"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

D=$LIFEBOAT_NODE_DIR
S=$LIFEBOAT_STACK_DIR
NODE_NAME=${LIFEBOAT_NODE_NAME:-lifeboat-node}
KUBELET_PORT=${LIFEBOAT_KUBELET_PORT:-15250}
KUBELET_HEALTHZ_PORT=${LIFEBOAT_KUBELET_HEALTHZ_PORT:-15248}
SCHEDULER_PORT=${LIFEBOAT_SCHEDULER_PORT:-15259}
CGROUP_ROOT=lifeboat-node
MARKER=.lifeboat-node
SOCK=$D/containerd/containerd.sock
PAUSE_IMAGE=localhost/lifeboat-pause:1
# kubelet sets these at start (protectKernelDefaults=false); node.sh puts them back.
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)

kubectl_() { KUBECONFIG=$S/kubeconfig "$LB_KUBECTL" "$@"; }
ctr_() { ctr --address "$SOCK" --namespace k8s.io "$@"; }

BG_LOGS=$LB_NODE_LOGS BG_RUN=$D/run BG_WHO="node: "  # start_bg, need_start (stack/lib.sh)

# --- sysctls and cgroups -------------------------------------------------------

save_sysctls() {
  [[ -s $D/run/sysctls ]] && return 0
  local s
  for s in "${SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$D/run/sysctls.tmp"
  mv "$D/run/sysctls.tmp" "$D/run/sysctls"
}

restore_sysctls() {
  [[ -s $D/run/sysctls ]] || return 0
  local line
  while IFS= read -r line; do sysctl -q -w "$line" >/dev/null; done <"$D/run/sysctls"
}

# v1 hierarchies (and the v2 one mounted next to them on this kernel) where
# kubelet's cgroupfs driver makes /lifeboat-node/kubepods...; it needs the root itself.
cgroup_dirs() { awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts; }

make_cgroups() {
  local h
  for h in $(cgroup_dirs); do
    mkdir -p "$h/$CGROUP_ROOT"
    if [[ -f $h/cpuset.cpus ]]; then
      cat "$h/cpuset.cpus" >"$h/$CGROUP_ROOT/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h/$CGROUP_ROOT/cpuset.mems"
    fi
  done
}

remove_cgroups() {
  local h
  for h in $(cgroup_dirs); do
    [[ -d $h/$CGROUP_ROOT ]] || continue
    # Deepest first; a cgroup with a process left in it stays (and is reported).
    find "$h/$CGROUP_ROOT" -depth -type d -exec rmdir {} + 2>/dev/null ||
      log "node: WARNING: could not remove all of $h/$CGROUP_ROOT (processes left?)"
  done
}

# --- containerd ------------------------------------------------------------------

write_containerd_config() {
  mkdir -p "$D/containerd" "$D/cni/net.d"
  cat >"$D/cni/net.d/10-loopback.conflist" <<'JSON'
{"cniVersion": "0.4.0", "name": "lifeboat-loopback", "plugins": [{"type": "loopback"}]}
JSON
  cat >"$D/containerd/config.toml" <<EOF
version = 2
root = "$D/containerd/root"
state = "$D/containerd/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root here lacks CAP_SYS_RESOURCE: runc must not lower oom_score_adj.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$D/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$D/containerd/runc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$D/containerd/opt"
EOF
}

ensure_containerd() {
  if need_start containerd "$D/containerd/config.toml"; then
    write_containerd_config
    start_bg containerd "$D/containerd/config.toml" containerd --config "$D/containerd/config.toml"
  fi
  wait_for 30 "containerd" ctr_ version || die "containerd not answering on $SOCK, see $LB_NODE_LOGS/containerd.log"
}

# load IMAGE: podman image -> the node's containerd (k8s.io namespace), replacing an older copy.
load_image() {
  local img=$1 tar=$D/run/image-load.tar
  podman image exists "$img" || die "no podman image $img (make image builds localhost/lifeboat:test)"
  rm -f "$tar"
  quiet podman save --format docker-archive -o "$tar" "$img"
  quiet ctr_ images import "$tar" || die "ctr images import of $img failed"
  rm -f "$tar"
  log "node: $img loaded into containerd"
}

# A static pause binary in a one-file image (no registry is reachable).
ensure_pause_image() {
  local have; have=$(ctr_ images ls -q) # not piped into grep -q: pipefail + SIGPIPE
  grep -qxF "$PAUSE_IMAGE" <<<"$have" && return 0
  if ! podman image exists "$PAUSE_IMAGE"; then
    local ctx; ctx=$(mktemp -d /tmp/lifeboat-pause.XXXXXX)
    (cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ctx/pause" ./test/node/pause)
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Containerfile"
    quiet podman build --pull=never -t "$PAUSE_IMAGE" "$ctx"
    rm -rf "$ctx"
  fi
  load_image "$PAUSE_IMAGE"
}

# --- credentials -----------------------------------------------------------------

# sa_kubeconfig NAME SA CLUSTERROLE...: kube-system/SA bound to the ClusterRoles, and a
# kubeconfig (mode 600; the token never in argv or a log) with a year's token of it.
sa_kubeconfig() {
  local name=$1 sa=$2 f=$D/run/kubeconfig-$1 role token; shift 2
  {
    printf 'apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: %s, namespace: kube-system}\n' "$sa"
    # Reading the API server's client-CA ConfigMap (delegated authentication), as kubeadm grants.
    printf -- '---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n'
    printf 'metadata: {name: "lifeboat-node:%s:auth-reader", namespace: kube-system}\n' "$sa"
    printf 'roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}\n'
    printf 'subjects: [{kind: ServiceAccount, name: %s, namespace: kube-system}]\n' "$sa"
    for role; do
      printf -- '---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n'
      printf 'metadata: {name: "lifeboat-node:%s:%s"}\n' "$sa" "$role"
      printf 'roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "%s"}\n' "$role"
      printf 'subjects: [{kind: ServiceAccount, name: %s, namespace: kube-system}]\n' "$sa"
    done
  } | quiet kubectl_ apply --server-side --field-manager=lifeboat-node -f -
  token=$(kubectl_ create token "$sa" -n kube-system --duration=8760h) || die "no token for serviceaccount kube-system/$sa"
  token_kubeconfig "$f" "$KUBE_APISERVER" "$KUBE_CA_FILE" "$sa" "$token"
  echo "$f"
}

# --- kubelet, kube-scheduler -------------------------------------------------------------

write_kubelet_config() {
  cat >"$D/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
failSwapOn: false
podLogsDir: $D/pod-logs
resolvConf: /etc/resolv.conf
staticPodPath: ""
serializeImagePulls: false
imageMinimumGCAge: 87600h
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
registerNode: true
# Lowering it needs CAP_SYS_RESOURCE, which root lacks here.
oomScoreAdj: 0
EOF
}

kubelet_healthy() { curl -fsS "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"; }
node_ready() {
  [[ $(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

ensure_kubelet() {
  local kc
  if need_start kubelet "$D/kubelet/config.yaml" "$KUBELET_PORT" "$KUBELET_HEALTHZ_PORT"; then
    mkdir -p "$D/kubelet" "$D/pod-logs"
    write_kubelet_config
    kc=$(sa_kubeconfig kubelet lifeboat-node system:node)
    start_bg kubelet "$D/kubelet/config.yaml" "$LB_KUBELET_BIN" --config="$D/kubelet/config.yaml" \
      --kubeconfig="$kc" --root-dir="$D/kubelet" --cert-dir="$D/kubelet/pki" \
      --hostname-override="$NODE_NAME" --v=1
  fi
  wait_for 90 "kubelet /healthz" kubelet_healthy || die "kubelet not healthy, see $LB_NODE_LOGS/kubelet.log"
  wait_for 120 "node $NODE_NAME Ready" node_ready || die "node $NODE_NAME not Ready, see $LB_NODE_LOGS/kubelet.log"
  # kubelet registers the Node with the not-ready taint; the node lifecycle
  # controller that would lift it is off (no node monitoring on this stack).
  kubectl_ taint node "$NODE_NAME" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
  restore_sysctls
}

scheduler_healthy() { curl -fsSk "https://127.0.0.1:$SCHEDULER_PORT/healthz"; }

ensure_scheduler() {
  local kc
  if need_start kube-scheduler "$D/run/kubeconfig-kube-scheduler" "$SCHEDULER_PORT"; then
    kc=$(sa_kubeconfig kube-scheduler lifeboat-kube-scheduler system:kube-scheduler system:volume-scheduler)
    mkdir -p "$D/kube-scheduler"
    start_bg kube-scheduler "$kc" "$LB_KUBE_SCHEDULER_BIN" --kubeconfig="$kc" \
      --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
      --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --cert-dir="$D/kube-scheduler" \
      --leader-elect=false
  fi
  wait_for 60 "kube-scheduler /healthz" scheduler_healthy || die "kube-scheduler not healthy, see $LB_NODE_LOGS/kube-scheduler.log"
}

# Deployments, ReplicaSets, Jobs, endpoints and kube-root-ca.crt need the stack's
# kube-controller-manager: it holds kube-system/kube-controller-manager and renews it
# every few seconds.
kcm_running() {
  local renew
  renew=$(kubectl_ get lease -n kube-system kube-controller-manager -o jsonpath='{.spec.renewTime}' 2>/dev/null) || return 1
  [[ -n $renew ]] && (($(date +%s) - $(date -d "$renew" +%s) < 60))
}

write_env() {
  cat >"$D/env.tmp" <<ENV
LIFEBOAT_NODE_DIR=$D
LIFEBOAT_NODE_NAME=$NODE_NAME
LIFEBOAT_NODE_CONTAINERD=$SOCK
LIFEBOAT_NODE_IMAGE=$LB_IMAGE
LIFEBOAT_NODE_SCRIPT=$HERE/node.sh
LIFEBOAT_NODE_PROMETHEUS=$LB_PROMETHEUS_BIN
ENV
  mv "$D/env.tmp" "$D/env"
}

up() {
  [[ $EUID -eq 0 ]] || die "the node needs root"
  [[ -f $S/env ]] || die "no $S/env: run make stack-up first"
  eval "$(grep -E '^(KUBE_APISERVER|KUBE_CA_FILE)=' "$S/env")"
  "$HERE/install.sh" node
  mkdir -p "$D"/{logs,run} && touch "$D/$MARKER"
  exec 9>"$D/run/up.lock"
  flock -w 300 9 || die "another node.sh holds $D/run/up.lock"
  save_sysctls
  make_cgroups
  ensure_containerd
  ensure_pause_image
  kcm_running || die "no kube-controller-manager renews kube-system/kube-controller-manager: the stack's up.sh starts it (make stack-up)"
  ensure_kubelet
  ensure_scheduler
  write_env
  log "node: $NODE_NAME Ready in ${SECONDS}s; env: $D/env"
}

# --- down --------------------------------------------------------------------------

# Every container and sandbox the kubelet left: killed and deleted, so their shims exit.
remove_containers() {
  ctr_ version >/dev/null 2>&1 || return 0
  local id
  for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  sleep 1
  for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
  for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
}

unmount_all() {
  local m
  # Deepest first (sort -r); lazy, so a busy one still leaves the namespace.
  for m in $(mounts_under "$D" | sort -r); do umount -l "$m" 2>/dev/null || true; done
  m=$(mounts_under "$D")
  [[ -z $m ]] || die "still mounted under $D: $m"
}

down() {
  [[ -d $D ]] || return 0
  [[ -f $D/$MARKER ]] || die "$D is not a node directory (no $MARKER)"
  kill_pidfile "$D/run/kube-scheduler.pid" "$D/run/kubeconfig-kube-scheduler"
  kill_pidfile "$D/run/kubelet.pid" "$D/kubelet/config.yaml"
  remove_containers
  kill_pidfile "$D/run/containerd.pid" "$D/containerd/config.toml"
  unmount_all
  # The shims' socket dir is fixed in containerd 1.6: remove it if it is empty (never another's).
  rmdir /run/containerd/s /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd 2>/dev/null || true
  remove_cgroups
  restore_sysctls
  if [[ -f $S/kubeconfig ]]; then
    kubectl_ delete node "$NODE_NAME" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  rm -f "$D/env" "$D/run/sysctls"
  if [[ ${1:-} == --wipe ]]; then safe_wipe "$D" "$MARKER"; fi
  log "node: down"
}

status() {
  local n
  for n in containerd kubelet kube-scheduler; do
    if [[ -f $D/run/$n.pid ]] && kill -0 "$(<"$D/run/$n.pid")" 2>/dev/null; then echo "$n: running"; else echo "$n: -"; fi
  done
}

[[ ${BASH_SOURCE[0]} == "$0" ]] || return 0 # sourced (to call one step by hand)
case ${1:-} in
  up) up ;;
  load) [[ -n ${2:-} ]] || die "usage: $0 load IMAGE"; load_image "$2" ;;
  down) down "${2:-}" ;;
  status) status ;;
  *) die "usage: $0 up | load IMAGE | down [--wipe] | status" ;;
esac
