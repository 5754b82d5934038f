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

export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0

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
      LB_BUILD_NICE=15 with_lock kubelet build_kube_component kubelet "$LB_KUBELET_BIN"
      LB_BUILD_NICE=15 with_lock kube-scheduler build_kube_component kube-scheduler "$LB_KUBE_SCHEDULER_BIN"
      ;;&
    prometheus | all) with_lock prometheus build_prometheus ;;
    node) ;;
    *) die "usage: $0 [node|prometheus|all]" ;;
  esac
  log "node install: ok (cache $LIFEBOAT_CACHE_DIR)"
}

main "$@"
