# shellcheck shell=bash disable=SC2034 # settings here are used by the sourcing scripts
# Settings shared by the image and node scripts; sourced after test/stack/lib.sh.

LIFEBOAT_NODE_DIR=${LIFEBOAT_NODE_DIR:-/tmp/lifeboat-node}
[[ $LIFEBOAT_NODE_DIR == /* ]] || LIFEBOAT_NODE_DIR=$PWD/$LIFEBOAT_NODE_DIR
LB_NODE_LOGS=$LIFEBOAT_NODE_DIR/logs
# The image the node runs (test/node/overlay names it too).
LB_IMAGE=${LB_IMAGE:-localhost/lifeboat:test}
# podman with runc (crun refuses this host's mixed cgroup v1/v2 layout) and
# rlimits root may set without CAP_SYS_RESOURCE: our config, not /etc's.
export CONTAINERS_CONF=$HERE/containers.conf

LB_PROMETHEUS_VERSION=${LB_PROMETHEUS_VERSION:-v0.316.0}
LB_KUBELET_BIN=$LIFEBOAT_CACHE_DIR/bin/kubelet-$LB_KUBE_VERSION
LB_KUBE_SCHEDULER_BIN=$LIFEBOAT_CACHE_DIR/bin/kube-scheduler-$LB_KUBE_VERSION
LB_PROMETHEUS_BIN=$LIFEBOAT_CACHE_DIR/bin/prometheus-$LB_PROMETHEUS_VERSION
LB_PROMTOOL_BIN=$LIFEBOAT_CACHE_DIR/bin/promtool-$LB_PROMETHEUS_VERSION

# The host packages the image build and the node need.
NODE_APT_PACKAGES=(podman buildah debootstrap containerd runc containernetworking-plugins)

ensure_root_tools() {
  local missing=() p
  for p in "${NODE_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $EUID -eq 0 ]] || die "missing packages ${missing[*]}; run as root to install them"
  log "apt: installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=900 update -q
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q \
    --no-install-recommends "${missing[@]}"
}

# debian_mirror: the host's Debian mirror (deb822 or one-line sources), or $LB_DEBIAN_MIRROR.
debian_mirror() {
  if [[ -n ${LB_DEBIAN_MIRROR:-} ]]; then echo "$LB_DEBIAN_MIRROR"; return; fi
  local m=""
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    m=$(awk -v RS= '!/Suites:[^\n]*-security/ { if (match($0, /URIs:[ \t]*[^ \t\n]+/)) {
          s = substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", s); print s; exit } }' \
      /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z $m && -f /etc/apt/sources.list ]]; then
    m=$(awk '$1 == "deb" && !/security/ { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; exit } }' \
      /etc/apt/sources.list)
  fi
  [[ -n $m ]] || die "no Debian mirror found in /etc/apt/sources.list{,.d/debian.sources}; set LB_DEBIAN_MIRROR"
  echo "$m"
}

# mounts_under DIR: mount points under DIR in this mount namespace.
mounts_under() { awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo; }

mounts_clean_or_die() {
  local m; m=$(mounts_under "$1")
  [[ -z $m ]] || die "mounts under $1 (unmount them first): $m"
}
