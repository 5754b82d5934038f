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
