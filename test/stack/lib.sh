# shellcheck shell=bash disable=SC2034 # settings here are used by the sourcing scripts
# Shared settings and helpers for the lifeboat test stack; sourced by the other scripts.
# Every setting can be overridden from the environment.

LIFEBOAT_CACHE_DIR=${LIFEBOAT_CACHE_DIR:-$HOME/.cache/lifeboat}
LIFEBOAT_STACK_DIR=${LIFEBOAT_STACK_DIR:-/tmp/lifeboat-stack}
# Absolute paths: builds cd around, and paths end up in env files and configs.
[[ $LIFEBOAT_CACHE_DIR == /* ]] || LIFEBOAT_CACHE_DIR=$PWD/$LIFEBOAT_CACHE_DIR
[[ $LIFEBOAT_STACK_DIR == /* ]] || LIFEBOAT_STACK_DIR=$PWD/$LIFEBOAT_STACK_DIR

# Pinned versions. The Go module proxy refuses @latest for some modules, so every
# version is explicit. etcd must be 3.5.x: Debian's 3.4 breaks client-go CRD watches;
# 3.5.25+ can't be verified here (the checksum DB lookups of its deps return 404).
LB_ETCD_VERSION=${LB_ETCD_VERSION:-v3.5.24}
LB_KUBE_VERSION=${LB_KUBE_VERSION:-v1.32.13}
LB_MINIO_VERSION=${LB_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}
LB_SNAPSHOTTER_VERSION=${LB_SNAPSHOTTER_VERSION:-v8.7.0}
LB_PROVISIONER_VERSION=${LB_PROVISIONER_VERSION:-v5.3.0}
LB_VELERO_VERSION=${LB_VELERO_VERSION:-v1.18.3}
LB_VELERO_AWS_VERSION=${LB_VELERO_AWS_VERSION:-v1.14.3}
# Versions the proxy refuses, replaced by a neighbour that builds.
LB_KUBE_ENDPOINTSLICE_VERSION=${LB_KUBE_ENDPOINTSLICE_VERSION:-v0.32.12}
LB_VELERO_CLI_RUNTIME_VERSION=${LB_VELERO_CLI_RUNTIME_VERSION:-v0.33.13}

# Where install.sh puts things. Names carry the version so a bump rebuilds.
# (No ETCD_* names anywhere: etcd reads every ETCD_* variable as a flag.)
LB_ETCD_BIN=$LIFEBOAT_CACHE_DIR/bin/etcd-$LB_ETCD_VERSION
LB_KUBE_APISERVER_BIN=$LIFEBOAT_CACHE_DIR/bin/kube-apiserver-$LB_KUBE_VERSION
LB_MINIO_BIN=$LIFEBOAT_CACHE_DIR/bin/minio-$LB_MINIO_VERSION
LB_KCM_BIN=$LIFEBOAT_CACHE_DIR/bin/kube-controller-manager-$LB_KUBE_VERSION
LB_SNAPSHOT_CONTROLLER_BIN=$LIFEBOAT_CACHE_DIR/bin/snapshot-controller-$LB_SNAPSHOTTER_VERSION
LB_CSI_SNAPSHOTTER_BIN=$LIFEBOAT_CACHE_DIR/bin/csi-snapshotter-$LB_SNAPSHOTTER_VERSION
LB_CSI_PROVISIONER_BIN=$LIFEBOAT_CACHE_DIR/bin/csi-provisioner-$LB_PROVISIONER_VERSION
# The velero binary is the server and the CLI; the env file puts its directory on PATH.
LB_VELERO_DIR=$LIFEBOAT_CACHE_DIR/bin/velero-$LB_VELERO_VERSION
LB_VELERO_BIN=$LB_VELERO_DIR/velero
LB_VELERO_PLUGIN_DIR=$LIFEBOAT_CACHE_DIR/bin/velero-plugins-aws-$LB_VELERO_AWS_VERSION
LB_SNAPSHOT_CRD_DIR=$LIFEBOAT_CACHE_DIR/crd/external-snapshotter-$LB_SNAPSHOTTER_VERSION
LB_KUBECTL=${LB_KUBECTL:-/usr/bin/kubectl}

# Say where a script died: set -e alone exits silently.
set -o errtrace
trap 'echo "ERROR: ${BASH_SOURCE[0]##*/}:$LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# quiet CMD...: run CMD, show its chatter only if it fails.
quiet() {
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  ((rc == 0)) || printf '%s\n' "$out" >&2
  return $rc
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.5 s until it succeeds.
wait_for() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "timed out after ${timeout}s waiting for $what"; return 1; }
    sleep 0.5
  done
}

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_alive PIDFILE MARKER: the pid in PIDFILE is running AND its command line
# contains MARKER (a path only our process has), so a recycled pid never matches.
pid_alive() {
  local pidfile=$1 marker=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$marker"
}

# start_bg NAME MARKER CMD...: start a server in its own session (so it outlives
# this script and the caller's process group), log to $BG_LOGS/NAME.log, record
# its pid in $BG_RUN/NAME.pid (the sourcing script sets both, and BG_WHO to
# prefix its log lines).
start_bg() {
  local name=$1 marker=$2; shift 2
  log "${BG_WHO:-}starting $name (log $BG_LOGS/$name.log)"
  setsid "$@" >>"$BG_LOGS/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$BG_RUN/$name.pid"
  sleep 0.2
  pid_alive "$BG_RUN/$name.pid" "$marker" || { tail -n 20 "$BG_LOGS/$name.log" >&2; die "$name exited at once"; }
}

# need_start NAME MARKER PORT...: true if NAME isn't running; dies if it isn't
# running but something else holds one of its ports.
need_start() {
  local name=$1 marker=$2 port; shift 2
  pid_alive "$BG_RUN/$name.pid" "$marker" && return 1
  for port; do port_free "$port" || die "can't start $name: 127.0.0.1:$port is in use by another process"; done
}

# token_kubeconfig FILE SERVER CA USER TOKEN [NAMESPACE]: write a kubeconfig for a
# bearer token, mode 600 and complete or not at all (the token is a secret: it
# stays out of argv and logs).
token_kubeconfig() {
  local f=$1 server=$2 ca=$3 user=$4 token=$5 ns=${6:-}
  (
    umask 077
    cat >"$f.tmp" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: lifeboat
  cluster: {server: "$server", certificate-authority: "$ca"}
users:
- name: $user
  user: {token: "$token"}
contexts:
- name: lifeboat
  context: {cluster: lifeboat, user: $user${ns:+, namespace: $ns}}
current-context: lifeboat
YAML
  )
  mv "$f.tmp" "$f"
}

# kill_pidfile PIDFILE MARKER [SIGNAL]: stop exactly the process we started and
# wait until it is gone (KILL after 10 s), then drop the pid file.
kill_pidfile() {
  local pidfile=$1 marker=$2 sig=${3:-TERM} pid i
  if pid_alive "$pidfile" "$marker"; then
    pid=$(<"$pidfile")
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      pid_alive "$pidfile" "$marker" || break
      ((i == 50)) && kill -KILL "$pid" 2>/dev/null
      sleep 0.2
    done
    pid_alive "$pidfile" "$marker" && die "pid $pid ($pidfile) would not die"
  fi
  rm -f "$pidfile"
}

# safe_wipe DIR MARKERFILE: rm -rf DIR, but only if it is one of ours (has the
# marker file) or empty — a typo in a DIR argument must never delete real data.
safe_wipe() {
  local dir=$1 marker=$2
  [[ -e $dir ]] || return 0
  [[ -f $dir/$marker || -z "$(ls -A "$dir")" ]] ||
    die "refusing to delete $dir: no $marker in it, it was not created by the lifeboat stack"
  rm -rf -- "$dir"
}

# Building tools from the Go module proxy (install.sh, test/bench/peers.sh).

# with_lock NAME CMD...: one build of NAME at a time across concurrent runs.
with_lock() {
  local name=$1; shift
  mkdir -p "$LIFEBOAT_CACHE_DIR/locks"
  (
    if ! flock -n 9; then
      log "waiting for another build of $name"
      flock -w 3600 9 || die "timed out waiting for the $name build lock"
    fi
    "$@"
  ) 9>"$LIFEBOAT_CACHE_DIR/locks/$name.lock"
}

# fresh_src NAME: an empty wrapper-module directory in the cache (never in the repo).
fresh_src() {
  local d=$LIFEBOAT_CACHE_DIR/src/$1
  rm -rf "$d" && mkdir -p "$d" && echo "$d"
}

# logged SRC WHAT CMD...: run a build step with its output in SRC/build.log,
# shown only when it fails.
logged() {
  local src=$1 what=$2; shift 2
  "$@" >>"$src/build.log" 2>&1 && return 0
  tail -n 30 "$src/build.log" >&2
  die "$what failed (full log: $src/build.log)"
}

# Go is only needed when something has to be built.
require_go() {
  command -v go >/dev/null || die "Go is not installed (need a go toolchain >= 1.24 on PATH to build $1)"
}

# mod_dir MODULE@VERSION: download a module from the proxy, print its directory.
mod_dir() {
  go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

# build_kube_component NAME BIN: a k8s.io/kubernetes $LB_KUBE_VERSION command
# (cmd/NAME) through a wrapper module, like kube-apiserver and kube-controller-manager.
build_kube_component() {
  local name=$1 bin=$2
  [[ -x $bin ]] && return 0
  require_go "$name"
  log "building $name $LB_KUBE_VERSION from the Go module proxy (one-time, ~4-10 min on 2 cores; no prebuilt binary is reachable)"
  local src kdir main minor=${LB_KUBE_VERSION#v1.}
  minor=${minor%%.*}
  src=$(fresh_src "$name-$LB_KUBE_VERSION")
  kdir=$(mod_dir "k8s.io/kubernetes@$LB_KUBE_VERSION")
  main=$(grep -l '^package main' "$kdir/cmd/$name"/*.go 2>/dev/null | head -n1)
  [[ -n $main ]] || die "k8s.io/kubernetes@$LB_KUBE_VERSION has no cmd/$name main (not downloadable?)"
  cp "$main" "$src/main.go"
  chmod u+w "$src/main.go"
  # k8s.io/kubernetes points its staging modules at ./staging/...; a wrapper must
  # map each one to the published k8s.io/X v0.<minor>.<patch> instead. The proxy
  # refuses k8s.io/endpointslice v0.32.13; v0.32.12 builds (kube-controller-manager).
  {
    echo "module lifeboat.local/$name"
    echo "go 1.23"
    echo "require k8s.io/kubernetes $LB_KUBE_VERSION"
    sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/src/.*#replace \1 => \1 v0.'"${LB_KUBE_VERSION#v1.}"'#p' "$kdir/go.mod" |
      sed 's#^replace k8s.io/endpointslice => .*#replace k8s.io/endpointslice => k8s.io/endpointslice '"$LB_KUBE_ENDPOINTSLICE_VERSION"'#'
  } >"$src/go.mod"
  grep -q '^replace k8s.io/api ' "$src/go.mod" || die "no staging replaces found in k8s.io/kubernetes go.mod"
  local pkg=k8s.io/component-base/version
  cd "$src" || die "cannot enter $src"
  logged "$src" "$name: go mod tidy" go mod tidy
  logged "$src" "$name build" nice -n "${LB_BUILD_NICE:-0}" go build -trimpath -o "$bin.tmp" -ldflags "-s -w \
    -X $pkg.gitVersion=$LB_KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor \
    -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z" .
  mv "$bin.tmp" "$bin"
}

# apt_install PKG...: install those of the Debian packages that are missing
# (root only), waiting for a concurrent apt/dpkg instead of failing on its lock.
apt_install() {
  local missing=() p
  for p in "$@"; do
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
