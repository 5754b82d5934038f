#!/usr/bin/env bash
# The Ceph Reef flavour of the test stack: a Debian trixie chroot (Ceph 18.2.x)
# next to the host's Pacific stack. Only Ceph differs: the Reef env reuses the
# host stack's kube-apiserver and MinIO (127.0.0.1 is shared with the chroot).
#   reef.sh chroot            build the chroot once (cached), print its path
#   reef.sh up                chroot + host stack (up.sh) + a one-node Reef cluster;
#                             writes $LIFEBOAT_REEF_STACK_DIR/env
#   reef.sh exec [--] CMD...  run CMD in the chroot, in the repo, with LIFEBOAT_STACK_DIR
#                             = the Reef stack and LIFEBOAT_GO_TAGS = $LB_REEF_GO_TAGS
#   reef.sh down [--wipe]     stop the Reef cluster (the host stack is never touched)
#   reef.sh status
#
# Paths are the same inside and outside the chroot: the repo, /usr/local/go,
# GOMODCACHE, GOCACHE, the host stack dir and $LIFEBOAT_CACHE_DIR/{bin,crd} are
# bind-mounted at their own paths, and $LIFEBOAT_REEF_STACK_DIR is a real
# directory inside the chroot with a symlink of the same name on the host.
#
# Mounts: every chroot command runs in a private mount namespace (unshare
# --mount) where /proc, /dev and the bind mounts are made. The host never sees
# them and the kernel drops them when the namespace's last process exits, even
# on SIGKILL: nothing to unmount, nothing left behind. Ceph daemons keep their
# namespace (and its mounts) alive until they are stopped.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
# shellcheck source=lib.sh
source "$HERE/lib.sh"

LB_REEF_SUITE=${LB_REEF_SUITE:-trixie}
LB_REEF_CHROOT_VERSION=${LB_REEF_CHROOT_VERSION:-2} # bump when the build (e.g. fix_mgr) changes
LB_REEF_GO_TAGS=${LB_REEF_GO_TAGS:-reef}
# Below the kernel's ephemeral range (32768-60999), where the local end of any
# client connection may hold the port: once, right after a benchmark, the mon
# could not bind 33300.
REEF_V2_PORT=${LIFEBOAT_REEF_CEPH_V2_PORT:-13340}
REEF_V1_PORT=${LIFEBOAT_REEF_CEPH_V1_PORT:-16829}
REEF_D=${LIFEBOAT_REEF_STACK_DIR:-/tmp/lifeboat-stack-reef}
HOST_D=$LIFEBOAT_STACK_DIR # the host (Pacific) stack: kube-apiserver, MinIO, locks
[[ $REEF_D == /* ]] || REEF_D=$PWD/$REEF_D
[[ $REEF_D != "$HOST_D" ]] || die "LIFEBOAT_REEF_STACK_DIR must differ from LIFEBOAT_STACK_DIR ($HOST_D)"

# Inside the chroot. The ceph CLI's python3 comes with ceph-common.
REEF_PACKAGES=(ceph-mon ceph-osd ceph-mgr ceph-common librbd-dev librados-dev gcc libc6-dev
  uuid-runtime procps)
CHROOT_KEY=$LB_REEF_SUITE-v$LB_REEF_CHROOT_VERSION-$(printf '%s\n' "${REEF_PACKAGES[@]}" | sha256sum | cut -c1-8)
ROOT=$LIFEBOAT_CACHE_DIR/reef-chroot-$CHROOT_KEY
READY=.lifeboat-reef-ready # in ROOT: `ceph --version` of a complete chroot
STACK_MARKER=.lifeboat-stack-reef
CSI_USER=csi-rbd-provisioner

GOROOT_HOST=${LB_REEF_GOROOT:-/usr/local/go}
CHROOT_PATH=$GOROOT_HOST/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

usage() { die "usage: $0 chroot | up | exec [--] CMD... | down [--wipe] | status"; }

# --- the chroot ---------------------------------------------------------------

# The host's Debian mirror, unless LB_REEF_MIRROR (or LB_DEBIAN_MIRROR) is set.
mirror() { LB_DEBIAN_MIRROR=${LB_REEF_MIRROR:-${LB_DEBIAN_MIRROR:-}} debian_mirror; }

ensure_debootstrap() { apt_install debootstrap; }

build_chroot() {
  [[ -f $ROOT/$READY ]] && return 0
  [[ $EUID -eq 0 ]] || die "building the Reef chroot needs root"
  ensure_debootstrap
  local tmp=$ROOT.partial m t0=$SECONDS
  m=$(mirror)
  # A half-built chroot from an interrupted run: start over (never across a mount).
  if [[ -e $tmp ]]; then mounts_clean_or_die "$tmp"; rm -rf --one-file-system -- "$tmp"; fi
  log "reef: debootstrap --variant=minbase $LB_REEF_SUITE from $m into $tmp (one-time, ~1 min)"
  # In its own mount namespace: the /proc and /sys debootstrap mounts die with it.
  unshare --mount -- debootstrap --variant=minbase "$LB_REEF_SUITE" "$tmp" "$m" >"$tmp.log" 2>&1 ||
    { tail -n 30 "$tmp.log" >&2; die "debootstrap failed (log: $tmp.log)"; }
  # No service starts from package scripts inside the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
  chmod 755 "$tmp/usr/sbin/policy-rc.d"
  log "reef: apt-get install ${REEF_PACKAGES[*]} in the chroot"
  unshare --mount -- "$SELF" __ns apt "$tmp" -- /bin/sh -c '
    set -e
    export DEBIAN_FRONTEND=noninteractive
    apt-get -q -o Acquire::Retries=3 update
    apt-get -q -y -o Acquire::Retries=3 install --no-install-recommends "$@"
    apt-get clean' sh "${REEF_PACKAGES[@]}" >>"$tmp.log" 2>&1 ||
    { tail -n 30 "$tmp.log" >&2; die "apt-get in the chroot failed (log: $tmp.log)"; }
  log "reef: patching the chroot's ceph-mgr (lazy bcrypt import)"
  unshare --mount -- "$SELF" __ns apt "$tmp" -- python3 -c "$FIX_MGR_PY" >>"$tmp.log" 2>&1 ||
    { tail -n 30 "$tmp.log" >&2; die "patching ceph-mgr failed (log: $tmp.log)"; }
  grep -q 'rbd_diff_iterate3' "$tmp/usr/include/rbd/librbd.h" ||
    log "reef: WARNING: $tmp/usr/include/rbd/librbd.h has no rbd_diff_iterate3"
  unshare --mount -- "$SELF" __ns apt "$tmp" -- ceph --version >"$tmp/$READY"
  mv "$tmp.log" "$tmp/var/log/lifeboat-reef-build.log"
  mv -T "$tmp" "$ROOT"
  log "reef: chroot ready in $((SECONDS - t0))s: $ROOT ($(<"$ROOT/$READY"))"
}

# Debian's Reef ceph-mgr imports bcrypt (a PyO3 extension) at the top of mgr_util.py,
# which every mgr module imports; PyO3 loads in only one of the mgr's Python
# subinterpreters, so every other module fails ("PyO3 modules do not yet support
# subinterpreters": HEALTH_WARN MGR_MODULE_DEPENDENCY, devicehealth never creates
# .mgr, rbd_support is gone). Upstream Ceph dropped that import after Reef; here
# it becomes an import on first use (only password hashing, which we never do).
# restful (from OpenSSL import crypto, the same problem) is kept off: CEPH_ARGS below.
FIX_MGR_PY='
import py_compile
p = "/usr/share/ceph/mgr/mgr_util.py"
s = open(p).read()
lazy = """# lifeboat test stack (test/stack/reef.sh): bcrypt is a PyO3 module, loadable in only
# one mgr subinterpreter; imported here, every other mgr module would fail to load.
class _LazyBcrypt:
    def __getattr__(self, name):
        import bcrypt as real
        return getattr(real, name)


bcrypt = _LazyBcrypt()
"""
if "_LazyBcrypt" not in s:
    assert s.count("\nimport bcrypt\n") == 1, "no top-level import bcrypt in " + p
    s = s.replace("\nimport bcrypt\n", "\n" + lazy, 1)
    open(p, "w").write(s)
py_compile.compile(p, doraise=True)
print("patched", p)
'

chroot_locked() {
  mkdir -p "$LIFEBOAT_CACHE_DIR/locks"
  (
    flock -w 1800 8 || die "timed out waiting for another reef.sh building the chroot"
    build_chroot
  ) 8>"$LIFEBOAT_CACHE_DIR/locks/reef-chroot.lock"
}

# --- inside the private mount namespace (reef.sh __ns MODE ROOT -- CMD...) ------

# bind SRC DST [ro]: bind-mount SRC at DST (DST inside the chroot is created to match).
bind() {
  local src=$1 dst=$2 opt=${3:-rw}
  [[ -e $src ]] || return 0
  if [[ -d $src ]]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")"; [[ -e $dst ]] || : >"$dst"; fi
  mount --bind "$src" "$dst"
  if [[ $opt == ro ]]; then mount -o remount,bind,ro "$dst"; fi
}

# MODE apt: /proc, /dev, DNS (building). base: + the repo read-only (Ceph daemons, admin
# commands). full: + the repo read-write, Go, its caches and the host stack (tests).
ns_main() {
  local mode=$1 root=$2; shift 2
  [[ ${1:-} == -- ]] && shift
  # Private already (unshare's default); say it anyway: nothing propagates to the host.
  mount --make-rprivate /
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  bind /etc/resolv.conf "$root/etc/resolv.conf" ro
  bind /etc/hosts "$root/etc/hosts" ro
  local gomod gocache
  case $mode in
    apt) ;;
    base) bind "$REPO" "$root$REPO" ro ;;
    full)
      bind "$REPO" "$root$REPO"
      bind "$GOROOT_HOST" "$root$GOROOT_HOST" ro
      gomod=$("$GOROOT_HOST/bin/go" env GOMODCACHE) gocache=$("$GOROOT_HOST/bin/go" env GOCACHE)
      mkdir -p "$gomod" "$gocache"
      bind "$gomod" "$root$gomod"
      bind "$gocache" "$root$gocache"
      # The host stack (kubeconfig, CA, tokens) read-only, its locks dir (shared
      # with host-stack tests, e.g. deploy_test's RBAC lock) read-write.
      mkdir -p "$HOST_D/locks"
      bind "$HOST_D" "$root$HOST_D" ro
      bind "$HOST_D/locks" "$root$HOST_D/locks"
      bind "$LIFEBOAT_CACHE_DIR/bin" "$root$LIFEBOAT_CACHE_DIR/bin" ro
      bind "$LIFEBOAT_CACHE_DIR/crd" "$root$LIFEBOAT_CACHE_DIR/crd" ro
      if [[ -e $LB_KUBECTL ]]; then bind "$(readlink -f "$LB_KUBECTL")" "$root$LB_KUBECTL" ro; fi
      # The host's CA bundle (module proxy through a TLS-inspecting proxy, if any).
      bind /etc/ssl/certs "$root/etc/ssl/certs" ro
      ;;
    *) die "bad namespace mode $mode" ;;
  esac
  local dir=/
  if [[ $mode != apt ]]; then
    dir=$REPO
    if [[ $PWD == "$REPO" || $PWD == "$REPO"/* ]]; then dir=$PWD; fi
  fi
  local -a envs=(HOME=/root LANG=C.UTF-8 PATH="$CHROOT_PATH" TERM="${TERM:-dumb}")
  if [[ $mode != apt ]]; then
    # Every Ceph process in the chroot (our cluster, the clusters tests start with
    # ceph-cluster.sh, the CLIs) reads CEPH_ARGS:
    # - Debian's 18.2.7 build has a RELATIVE default osd_class_dir
    #   (lib/x86_64-linux-gnu/rados-classes): from any cwd but / the OSD finds no
    #   object class, so no cls_rbd (RBD images) and no cls_lock (the mgr's .mgr db);
    # - mgr_initial_modules without restful, which can't load (see FIX_MGR_PY).
    local classdir
    classdir=$(cd "$root" && echo usr/lib/*/rados-classes)
    [[ -d $root/$classdir ]] || die "no rados-classes dir in $root/usr/lib"
    envs+=(CEPH_ARGS="--osd_class_dir=/$classdir --mgr_initial_modules=iostat,nfs")
  fi
  if [[ $mode == full ]]; then
    envs+=(LIFEBOAT_STACK_DIR="$REEF_D" LIFEBOAT_GO_TAGS="$LB_REEF_GO_TAGS" GO_TAGS="$LB_REEF_GO_TAGS"
      LIFEBOAT_CACHE_DIR="$LIFEBOAT_CACHE_DIR" GOMODCACHE="$gomod" GOCACHE="$gocache" GOTOOLCHAIN=local
      GOFLAGS="$("$GOROOT_HOST/bin/go" env GOFLAGS)" GOPROXY="$("$GOROOT_HOST/bin/go" env GOPROXY)"
      GOSUMDB="$("$GOROOT_HOST/bin/go" env GOSUMDB)" GONOSUMDB="$("$GOROOT_HOST/bin/go" env GONOSUMDB)"
      GOPRIVATE="$("$GOROOT_HOST/bin/go" env GOPRIVATE)")
    local v # pass the caller's test knobs through
    for v in FUZZEXECS FUZZMINIMIZE BENCH_SIZE BENCH_TOOLS BENCH_CHUNK_SIZES BENCH_ENCRYPT BENCH_SEED LIFEBOAT LBSIM http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
      if [[ -n ${!v:-} ]]; then envs+=("$v=${!v}"); fi
    done
  fi
  # shellcheck disable=SC2016 # $1 and $@ are for the inner sh
  exec chroot "$root" /usr/bin/env -i "${envs[@]}" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$dir" "$@"
}

# in_chroot MODE CMD...: run CMD in the chroot in a fresh private mount namespace.
in_chroot() {
  local mode=$1; shift
  unshare --mount -- "$SELF" __ns "$mode" "$ROOT" -- "$@"
}

# --- the Reef cluster -----------------------------------------------------------

# The Reef stack dir is real inside the chroot; the host gets a symlink to it.
ensure_stack_dir() {
  mkdir -p "$ROOT$REEF_D"
  touch "$ROOT$REEF_D/$STACK_MARKER"
  local target
  if [[ -L $REEF_D ]]; then
    target=$(readlink "$REEF_D")
    if [[ $target != "$ROOT$REEF_D" ]]; then
      [[ ! -f $target/ceph/cluster.env ]] ||
        die "$REEF_D points at another chroot ($target) with a cluster: run '$0 down' with that chroot's settings first"
      rm -f "$REEF_D"
    fi
  elif [[ -e $REEF_D ]]; then
    die "$REEF_D exists and is not reef.sh's symlink into the chroot; move it away or set LIFEBOAT_REEF_STACK_DIR"
  fi
  [[ -L $REEF_D ]] || ln -s "$ROOT$REEF_D" "$REEF_D"
  # deploy_test serializes on $LIFEBOAT_STACK_DIR/locks across every process sharing the
  # API server: share the host stack's (valid in both the chroot and the host).
  ln -sfn "$HOST_D/locks" "$ROOT$REEF_D/locks"
}

reef_ceph() { in_chroot base timeout 60 ceph -c "$REEF_D/ceph/ceph.conf" "$@"; }

env_get() { sed -n "s/^$1=//p" "$2" | tail -n 1; }

# Every stack on the shared API server writes ITS CSI key into the one shared Secret
# rook-ceph/rook-csi-rbd-provisioner (test/e2e newWorld). Give client.csi-rbd-provisioner
# on Reef the host cluster's key, so Reef and Pacific test runs never fight over it.
share_csi_key() {
  local hostkey f=$ROOT$REEF_D/ceph
  hostkey=$(env_get CEPH_CSI_KEY "$HOST_D/env")
  [[ -n $hostkey ]] || die "no CEPH_CSI_KEY in $HOST_D/env"
  [[ $(reef_ceph auth print-key "client.$CSI_USER") == "$hostkey" ]] && return 0
  log "reef: giving client.$CSI_USER the host cluster's key"
  (
    umask 077
    cat >"$f/csi-import.keyring" <<KEYRING
[client.$CSI_USER]
	key = $hostkey
	caps mgr = "allow rw"
	caps mon = "profile rbd, allow command \"osd blocklist\""
	caps osd = "profile rbd"
KEYRING
  )
  quiet reef_ceph auth import -i "$REEF_D/ceph/csi-import.keyring"
  rm -f "$f/csi-import.keyring"
  quiet reef_ceph auth get "client.$CSI_USER" -o "$REEF_D/ceph/ceph.client.$CSI_USER.keyring"
  sed -i "s|^CEPH_CSI_KEY=.*|CEPH_CSI_KEY=$hostkey|" "$f/cluster.env"
}

write_env() {
  local release e=$ROOT$REEF_D
  release=$(awk '{print $(NF-1)}' "$ROOT/$READY")
  {
    # The host stack's env (API server, MinIO, tokens, binaries) with Ceph replaced,
    # and without the real CSI path and Velero: their driver talks to the host's
    # cluster, not to this one (make test-reef skips their tests).
    grep -vE '^(CEPH_[A-Z0-9_]*|LIFEBOAT_STACK_DIR|LIFEBOAT_CEPH_RELEASE|LIFEBOAT_HOST_STACK_DIR|LIFEBOAT_REEF_CHROOT|CSI_[A-Z_]*|VELERO[A-Z_]*|PATH)=' "$HOST_D/env"
    cat "$e/ceph/cluster.env"
    cat <<ENV
LIFEBOAT_STACK_DIR=$REEF_D
LIFEBOAT_CEPH_RELEASE=$release
LIFEBOAT_HOST_STACK_DIR=$HOST_D
LIFEBOAT_REEF_CHROOT=$ROOT
ENV
  } >"$e/env.tmp"
  mv "$e/env.tmp" "$e/env"
}

cmd_up() {
  local t0=$SECONDS t
  chroot_locked
  mounts_clean_or_die "$ROOT"
  log "reef: chroot $ROOT ($(<"$ROOT/$READY")) ready after $((SECONDS - t0))s"
  "$HERE/up.sh" >/dev/null # the host stack: API server and MinIO are shared
  ensure_stack_dir
  exec 9>"$ROOT$REEF_D/up.lock"
  flock -w 300 9 || die "another reef.sh up holds $REEF_D/up.lock"
  t=$SECONDS
  # fd 9 closed: the daemons must not hold the lock.
  in_chroot base "$REPO/test/stack/ceph-cluster.sh" start "$REEF_D/ceph" "$REEF_V2_PORT" "$REEF_V1_PORT" 9>&-
  log "reef: cluster up in $((SECONDS - t))s"
  share_csi_key
  write_env
  log "reef: stack up in $((SECONDS - t0))s; env: $REEF_D/env (paths valid in the chroot and on the host)"
  grep -E '^(CEPH_CONF|CEPH_MON_HOST_V[12]|LIFEBOAT_CEPH_RELEASE|KUBECONFIG|S3_ENDPOINT)=' "$ROOT$REEF_D/env"
}

cmd_exec() {
  [[ ${1:-} == -- ]] && shift
  (($# > 0)) || usage
  [[ -f $ROOT/$READY ]] || die "no Reef chroot at $ROOT: run '$0 up' first"
  [[ -f $ROOT$REEF_D/env ]] || log "reef: WARNING: no $REEF_D/env yet ('$0 up' writes it)"
  in_chroot full "$@"
}

cmd_down() {
  [[ $# -eq 0 || $1 == --wipe ]] || usage
  if [[ -f $ROOT/$READY && -d $ROOT$REEF_D/ceph ]]; then
    in_chroot base "$REPO/test/stack/ceph-cluster.sh" stop "$REEF_D/ceph" "$@"
    log "reef: cluster in $REEF_D/ceph stopped"
  fi
  if [[ ${1:-} == --wipe ]]; then
    [[ -L $REEF_D && $(readlink "$REEF_D") == "$ROOT$REEF_D" ]] && rm -f "$REEF_D"
    safe_wipe "$ROOT$REEF_D" "$STACK_MARKER"
    log "reef: removed $REEF_D (the chroot stays cached in $ROOT)"
  fi
  mounts_clean_or_die "$ROOT"
}

cmd_status() {
  [[ -f $ROOT/$READY ]] || { echo "chroot: not built ($ROOT)"; exit 1; }
  echo "chroot: $ROOT ($(<"$ROOT/$READY"), $(du -sh --one-file-system "$ROOT" 2>/dev/null | cut -f1))"
  local m; m=$(mounts_under "$ROOT")
  echo "host mounts under the chroot: ${m:-none}"
  [[ -d $ROOT$REEF_D/ceph ]] || { echo "cluster: none"; exit 1; }
  in_chroot base "$REPO/test/stack/ceph-cluster.sh" status "$REEF_D/ceph"
}

main() {
  local cmd=${1:-}; shift || true
  case $cmd in
    chroot) chroot_locked; echo "$ROOT" ;;
    up) cmd_up ;;
    exec) cmd_exec "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status ;;
    __ns) ns_main "$@" ;;
    *) usage ;;
  esac
}

main "$@"
