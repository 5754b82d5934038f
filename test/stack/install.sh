#!/usr/bin/env bash
# Installs everything the local test stack needs (Debian 12, root). Idempotent:
# apt runs only if a package is missing, and each binary built from the Go module
# proxy is cached under $LIFEBOAT_CACHE_DIR keyed by version, so reruns are no-ops.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Ceph daemons + CLIs, the librbd/librados headers go-ceph's cgo needs (and a C
# compiler for it), and the small tools these scripts use.
APT_PACKAGES=(ceph-mon ceph-osd ceph-mgr ceph-common librbd-dev librados-dev gcc libc6-dev
  uuid-runtime openssl curl ca-certificates make)

# Builds must not pick up a go.work or vendor dir from wherever we happen to be.
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0

install_apt_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $EUID -eq 0 ]] || die "missing packages ${missing[*]}; run as root to install them"
  log "apt: installing ${missing[*]}"
  # Wait for a concurrent apt/dpkg instead of failing on its lock.
  apt-get -o DPkg::Lock::Timeout=900 update -q
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q \
    --no-install-recommends "${missing[@]}"
}

# Go is only needed when something has to be built.
require_go() {
  command -v go >/dev/null || die "Go is not installed (need a go toolchain >= 1.24 on PATH to build $1)"
}

check_tools() {
  [[ -x $LB_KUBECTL ]] || die "kubectl not found at $LB_KUBECTL (set LB_KUBECTL); don't install Debian's kubernetes-client"
}

# mod_dir MODULE@VERSION: download a module from the proxy, print its directory.
mod_dir() {
  go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

build_etcd() {
  [[ -x $LB_ETCD_BIN ]] && return 0
  require_go "etcd"
  log "building etcd $LB_ETCD_VERSION from the Go module proxy (one-time, ~30 s-1 min)"
  local src; src=$(fresh_src "etcd-$LB_ETCD_VERSION")
  # `go install go.etcd.io/etcd/server/v3@v` fails on etcd's replace directives,
  # so a wrapper module calls etcdmain.Main itself.
  cat >"$src/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  cd "$src"
  logged "$src" "etcd: go mod init" go mod init lifeboat.local/etcd
  logged "$src" "etcd: go get" go get "go.etcd.io/etcd/server/v3@$LB_ETCD_VERSION"
  logged "$src" "etcd: go mod tidy" go mod tidy
  logged "$src" "etcd build" go build -trimpath -ldflags "-s -w" -o "$LB_ETCD_BIN.tmp" .
  mv "$LB_ETCD_BIN.tmp" "$LB_ETCD_BIN"
}

build_kube_apiserver() {
  [[ -x $LB_KUBE_APISERVER_BIN ]] && return 0
  require_go "kube-apiserver"
  log "building kube-apiserver $LB_KUBE_VERSION from the Go module proxy (one-time, ~4 min on 2 cores; no prebuilt binary is reachable)"
  local src kdir minor=${LB_KUBE_VERSION#v1.}
  minor=${minor%%.*}
  src=$(fresh_src "kube-apiserver-$LB_KUBE_VERSION")
  kdir=$(mod_dir "k8s.io/kubernetes@$LB_KUBE_VERSION")
  [[ -f $kdir/cmd/kube-apiserver/apiserver.go ]] || die "k8s.io/kubernetes@$LB_KUBE_VERSION not downloadable"
  cp "$kdir/cmd/kube-apiserver/apiserver.go" "$src/main.go"
  chmod u+w "$src/main.go"
  # k8s.io/kubernetes points its staging modules at ./staging/...; a wrapper must
  # map each one to the published k8s.io/X v0.<minor>.<patch> instead.
  {
    echo "module lifeboat.local/kube-apiserver"
    echo "go 1.23"
    echo "require k8s.io/kubernetes $LB_KUBE_VERSION"
    sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/src/.*#replace \1 => \1 v0.'"${LB_KUBE_VERSION#v1.}"'#p' "$kdir/go.mod"
  } >"$src/go.mod"
  grep -q '^replace k8s.io/api ' "$src/go.mod" || die "no staging replaces found in k8s.io/kubernetes go.mod"
  local pkg=k8s.io/component-base/version
  cd "$src"
  logged "$src" "kube-apiserver: go mod tidy" go mod tidy
  logged "$src" "kube-apiserver build" go build -trimpath -o "$LB_KUBE_APISERVER_BIN.tmp" -ldflags "-s -w \
    -X $pkg.gitVersion=$LB_KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor \
    -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z" .
  mv "$LB_KUBE_APISERVER_BIN.tmp" "$LB_KUBE_APISERVER_BIN"
}

build_minio() {
  [[ -x $LB_MINIO_BIN ]] && return 0
  require_go "MinIO"
  log "building MinIO $LB_MINIO_VERSION from the Go module proxy (one-time, ~2-4 min)"
  # minio's go.mod has no replace directives, so `go install mod@version` works and
  # keeps its exact dependency versions.
  local gobin; gobin=$(fresh_src "minio-$LB_MINIO_VERSION")
  GOBIN=$gobin logged "$gobin" "MinIO build" go install -trimpath -ldflags "-s -w" \
    "github.com/minio/minio@$LB_MINIO_VERSION"
  mv "$gobin/minio" "$LB_MINIO_BIN"
}

fetch_snapshot_crds() {
  [[ -f $LB_SNAPSHOT_CRD_DIR/.complete ]] && return 0
  require_go "the snapshot CRDs"
  log "fetching snapshot CRDs from external-snapshotter/client/v8@$LB_SNAPSHOTTER_VERSION"
  local dir
  dir=$(mod_dir "github.com/kubernetes-csi/external-snapshotter/client/v8@$LB_SNAPSHOTTER_VERSION")
  [[ -d $dir/config/crd ]] || die "no config/crd in external-snapshotter client module"
  rm -rf "$LB_SNAPSHOT_CRD_DIR" && mkdir -p "$LB_SNAPSHOT_CRD_DIR"
  # Only the CRDs: kustomization.yaml would break `kubectl apply -f DIR`.
  cp "$dir"/config/crd/*storage.k8s.io_*.yaml "$LB_SNAPSHOT_CRD_DIR/"
  chmod u+w "$LB_SNAPSHOT_CRD_DIR"/*.yaml
  touch "$LB_SNAPSHOT_CRD_DIR/.complete"
}

main() {
  install_apt_packages
  check_tools
  mkdir -p "$LIFEBOAT_CACHE_DIR/bin"
  with_lock etcd build_etcd
  with_lock kube-apiserver build_kube_apiserver
  with_lock minio build_minio
  with_lock crds fetch_snapshot_crds
  log "install: ok (cache $LIFEBOAT_CACHE_DIR)"
}

main "$@"
