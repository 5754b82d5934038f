#!/usr/bin/env bash
# Installs everything the local test stack needs (Debian 12, root). Idempotent:
# apt runs only if a package is missing, and each binary built from the Go module
# proxy is cached under $LIFEBOAT_CACHE_DIR keyed by version, so reruns are no-ops.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Ceph daemons + CLIs, the librbd/librados headers go-ceph's cgo needs (and a C
# compiler for it), and the small tools these scripts use (jq edits ceph-csi's
# JSON config).
APT_PACKAGES=(ceph-mon ceph-osd ceph-mgr ceph-common librbd-dev librados-dev gcc libc6-dev
  uuid-runtime openssl curl ca-certificates make jq)

# Builds must not pick up a go.work or vendor dir from wherever we happen to be.
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0

install_apt_packages() { apt_install "${APT_PACKAGES[@]}"; }

check_tools() {
  [[ -x $LB_KUBECTL ]] || die "kubectl not found at $LB_KUBECTL (set LB_KUBECTL); don't install Debian's kubernetes-client"
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

build_kube_apiserver() { build_kube_component kube-apiserver "$LB_KUBE_APISERVER_BIN"; }
build_kube_controller_manager() { build_kube_component kube-controller-manager "$LB_KCM_BIN"; }

# copy_module MODULE@VERSION NAME: a writable copy of a downloaded module in the
# cache, printed. Modules whose go.mod has replace directives (velero,
# external-snapshotter, external-provisioner) can't be `go install`ed; building
# inside a copy keeps their exact dependency versions and replaces.
copy_module() {
  local dir src
  dir=$(mod_dir "$1")
  [[ -f $dir/go.mod ]] || die "$1 not downloadable from the Go module proxy"
  src=$(fresh_src "$2")
  cp -r "$dir/." "$src/"
  chmod -R u+w "$src"
  echo "$src"
}

# The snapshotter's go.mod points its client module at ./client, which is a
# separate module and so not in the download: use the published one instead.
build_external_snapshotter() {
  [[ -x $LB_SNAPSHOT_CONTROLLER_BIN && -x $LB_CSI_SNAPSHOTTER_BIN ]] && return 0
  require_go "external-snapshotter"
  log "building snapshot-controller and csi-snapshotter $LB_SNAPSHOTTER_VERSION from the Go module proxy (one-time, ~5-10 min)"
  local src ld="-s -w -X main.version=$LB_SNAPSHOTTER_VERSION"
  src=$(copy_module "github.com/kubernetes-csi/external-snapshotter/v8@$LB_SNAPSHOTTER_VERSION" \
    "external-snapshotter-$LB_SNAPSHOTTER_VERSION")
  cd "$src"
  logged "$src" "external-snapshotter: replace ./client" go mod edit \
    -replace "github.com/kubernetes-csi/external-snapshotter/client/v8=github.com/kubernetes-csi/external-snapshotter/client/v8@$LB_SNAPSHOTTER_VERSION"
  logged "$src" "external-snapshotter: go mod download" go mod download
  logged "$src" "snapshot-controller build" go build -trimpath -ldflags "$ld" -o "$LB_SNAPSHOT_CONTROLLER_BIN.tmp" ./cmd/snapshot-controller
  logged "$src" "csi-snapshotter build" go build -trimpath -ldflags "$ld" -o "$LB_CSI_SNAPSHOTTER_BIN.tmp" ./cmd/csi-snapshotter
  mv "$LB_SNAPSHOT_CONTROLLER_BIN.tmp" "$LB_SNAPSHOT_CONTROLLER_BIN"
  mv "$LB_CSI_SNAPSHOTTER_BIN.tmp" "$LB_CSI_SNAPSHOTTER_BIN"
}

build_external_provisioner() {
  [[ -x $LB_CSI_PROVISIONER_BIN ]] && return 0
  require_go "csi-provisioner"
  log "building csi-provisioner $LB_PROVISIONER_VERSION from the Go module proxy (one-time, ~5-10 min)"
  local src
  src=$(copy_module "github.com/kubernetes-csi/external-provisioner/v5@$LB_PROVISIONER_VERSION" \
    "external-provisioner-$LB_PROVISIONER_VERSION")
  cd "$src"
  logged "$src" "csi-provisioner build" go build -trimpath \
    -ldflags "-s -w -X main.version=$LB_PROVISIONER_VERSION" -o "$LB_CSI_PROVISIONER_BIN.tmp" ./cmd/csi-provisioner
  mv "$LB_CSI_PROVISIONER_BIN.tmp" "$LB_CSI_PROVISIONER_BIN"
}

# Velero: one binary is both the server and the CLI. Two patches of the copy:
# - k8s.io/cli-runtime v0.33.12 is refused by the proxy here; v0.33.13 builds;
# - controller-runtime's metrics listener has no flag and binds :8080 (all
#   interfaces); the server's manager gets BindAddress 127.0.0.1:0 instead
#   (loopback, a free port: nothing scrapes it, Velero's own metrics are on
#   --metrics-address).
build_velero() {
  [[ -x $LB_VELERO_BIN ]] && return 0
  require_go "velero"
  log "building velero $LB_VELERO_VERSION from the Go module proxy (one-time, ~5-10 min)"
  local src srv=pkg/cmd/server/server.go pkg=github.com/vmware-tanzu/velero/pkg/buildinfo
  src=$(copy_module "github.com/vmware-tanzu/velero@$LB_VELERO_VERSION" "velero-$LB_VELERO_VERSION")
  mkdir -p "$LB_VELERO_DIR"
  cd "$src"
  logged "$src" "velero: replace cli-runtime" go mod edit \
    -replace "k8s.io/cli-runtime=k8s.io/cli-runtime@$LB_VELERO_CLI_RUNTIME_VERSION"
  grep -q '^	ctrl "sigs.k8s.io/controller-runtime"$' "$srv" && grep -q '^			Scheme: scheme,$' "$srv" ||
    die "velero $LB_VELERO_VERSION: $srv changed, update the metrics-listener patch in ${BASH_SOURCE[0]}"
  sed -i -e 's#^	ctrl "sigs.k8s.io/controller-runtime"$#&\n	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"#' \
    -e 's#^			Scheme: scheme,$#&\n			Metrics: metricsserver.Options{BindAddress: "127.0.0.1:0"}, // lifeboat stack: loopback only#' "$srv"
  logged "$src" "velero: go mod tidy" go mod tidy
  logged "$src" "velero build" go build -trimpath -o "$LB_VELERO_BIN.tmp" \
    -ldflags "-s -w -X $pkg.Version=$LB_VELERO_VERSION -X $pkg.GitTreeState=clean" ./cmd/velero
  mv "$LB_VELERO_BIN.tmp" "$LB_VELERO_BIN"
}

# velero-plugin-for-aws has no replace directives: go install keeps its versions.
# Velero runs every executable of its --plugin-dir as a plugin.
build_velero_aws_plugin() {
  [[ -x $LB_VELERO_PLUGIN_DIR/velero-plugin-for-aws ]] && return 0
  require_go "velero-plugin-for-aws"
  log "building velero-plugin-for-aws $LB_VELERO_AWS_VERSION from the Go module proxy (one-time, ~3-6 min)"
  local gobin; gobin=$(fresh_src "velero-plugin-for-aws-$LB_VELERO_AWS_VERSION")
  GOBIN=$gobin logged "$gobin" "velero-plugin-for-aws build" go install -trimpath -ldflags "-s -w" \
    "github.com/vmware-tanzu/velero-plugin-for-aws/velero-plugin-for-aws@$LB_VELERO_AWS_VERSION"
  mkdir -p "$LB_VELERO_PLUGIN_DIR"
  mv "$gobin/velero-plugin-for-aws" "$LB_VELERO_PLUGIN_DIR/velero-plugin-for-aws"
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
  with_lock kube-controller-manager build_kube_controller_manager
  with_lock external-snapshotter build_external_snapshotter
  with_lock external-provisioner build_external_provisioner
  with_lock velero build_velero
  with_lock velero-plugin-for-aws build_velero_aws_plugin
  log "install: ok (cache $LIFEBOAT_CACHE_DIR)"
}

main "$@"
