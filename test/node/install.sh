#!/usr/bin/env bash
# Installs what the node (test/node/node.sh) needs: the host packages (podman,
# buildah, debootstrap, containerd, runc, CNI plugins) and kubelet and
# kube-scheduler from k8s.io/kubernetes $LB_KUBE_VERSION (built like the stack's
# kube-apiserver and kube-controller-manager, so they share the Go build cache),
# plus Prometheus and promtool, built from the Go module proxy (niced: they are
# slow once) and cached under $LIFEBOAT_CACHE_DIR/bin by version.
#   install.sh [node|prometheus|all]   (default all)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=../stack/lib.sh
source "$REPO/test/stack/lib.sh"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

# The proxy refuses k8s.io/endpointslice v0.32.13; v0.32.12 builds.
LB_KUBE_ENDPOINTSLICE_VERSION=${LB_KUBE_ENDPOINTSLICE_VERSION:-v0.32.12}
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0

mod_dir() { go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }

# build_kube NAME BIN: cmd/NAME of k8s.io/kubernetes through a wrapper module that
# maps each staging module to its published k8s.io/X v0.<minor>.<patch>, as
# test/stack/install.sh builds kube-apiserver (same flags: one shared Go build cache).
build_kube() {
  local name=$1 bin=$2
  [[ -x $bin ]] && return 0
  command -v go >/dev/null || die "Go is not installed (needed to build $name)"
  log "building $name $LB_KUBE_VERSION from the Go module proxy (one-time, niced, ~5-10 min on 2 cores)"
  local src kdir main minor=${LB_KUBE_VERSION#v1.} pkg=k8s.io/component-base/version
  minor=${minor%%.*}
  src=$(fresh_src "$name-$LB_KUBE_VERSION")
  kdir=$(mod_dir "k8s.io/kubernetes@$LB_KUBE_VERSION")
  main=$(grep -l '^package main' "$kdir/cmd/$name"/*.go 2>/dev/null | head -n1)
  [[ -n $main ]] || die "k8s.io/kubernetes@$LB_KUBE_VERSION has no cmd/$name main (not downloadable?)"
  cp "$main" "$src/main.go" && chmod u+w "$src/main.go"
  {
    echo "module lifeboat.local/$name"
    echo "go 1.23"
    echo "require k8s.io/kubernetes $LB_KUBE_VERSION"
    sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/src/.*#replace \1 => \1 v0.'"${LB_KUBE_VERSION#v1.}"'#p' "$kdir/go.mod" |
      sed 's#^replace k8s.io/endpointslice => .*#replace k8s.io/endpointslice => k8s.io/endpointslice '"$LB_KUBE_ENDPOINTSLICE_VERSION"'#'
  } >"$src/go.mod"
  cd "$src"
  logged "$src" "$name: go mod tidy" go mod tidy
  logged "$src" "$name build" nice -n 15 go build -trimpath -o "$bin.tmp" -ldflags "-s -w \
    -X $pkg.gitVersion=$LB_KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor \
    -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z" .
  mv "$bin.tmp" "$bin"
}

# Prometheus's go.mod has no replace directives: `go install mod/cmd@version` keeps its
# exact dependency versions. No UI assets (the API and scraping need none).
build_prometheus() {
  [[ -x $LB_PROMETHEUS_BIN && -x $LB_PROMTOOL_BIN ]] && return 0
  command -v go >/dev/null || die "Go is not installed (needed to build Prometheus)"
  log "building prometheus and promtool $LB_PROMETHEUS_VERSION from the Go module proxy (one-time, niced, ~10 min)"
  local gobin; gobin=$(fresh_src "prometheus-$LB_PROMETHEUS_VERSION")
  GOBIN=$gobin logged "$gobin" "prometheus build" nice -n 15 go install -trimpath -ldflags "-s -w" \
    "github.com/prometheus/prometheus/cmd/prometheus@$LB_PROMETHEUS_VERSION" \
    "github.com/prometheus/prometheus/cmd/promtool@$LB_PROMETHEUS_VERSION"
  mv "$gobin/promtool" "$LB_PROMTOOL_BIN"
  mv "$gobin/prometheus" "$LB_PROMETHEUS_BIN"
}

main() {
  mkdir -p "$LIFEBOAT_CACHE_DIR/bin"
  case ${1:-all} in
    node | all)
      ensure_root_tools
      with_lock kubelet build_kube kubelet "$LB_KUBELET_BIN"
      with_lock kube-scheduler build_kube kube-scheduler "$LB_KUBE_SCHEDULER_BIN"
      ;;&
    prometheus | all) with_lock prometheus build_prometheus ;;
    node) ;;
    *) die "usage: $0 [node|prometheus|all]" ;;
  esac
  log "node install: ok (cache $LIFEBOAT_CACHE_DIR)"
}

main "$@"
