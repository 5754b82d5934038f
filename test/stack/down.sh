#!/usr/bin/env bash
# Stops the processes up.sh started (by pid file, nothing else).
#   down.sh          # stop; data in $LIFEBOAT_STACK_DIR is kept (Ceph's is lost: memstore; etcd's is cleared at the next start)
#   down.sh --wipe   # stop and delete $LIFEBOAT_STACK_DIR
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

D=$LIFEBOAT_STACK_DIR
# shellcheck source=controllers.sh
source "$HERE/controllers.sh"

main() {
  [[ $# -eq 0 || $1 == --wipe ]] || die "usage: $0 [--wipe]"
  if [[ -d $D ]]; then
    # Reverse start order: the controllers, then the API server before its etcd.
    stop_controllers
    kill_pidfile "$D/run/minio.pid" "$D/minio/data"
    kill_pidfile "$D/run/kube-apiserver.pid" "$D/kube/"
    kill_pidfile "$D/run/etcd.pid" "$D/etcd"
    [[ -d $D/ceph ]] && "$HERE/ceph-cluster.sh" stop "$D/ceph"
    log "stack in $D stopped"
  fi
  if [[ ${1:-} == --wipe ]]; then
    safe_wipe "$D" .lifeboat-stack
    log "removed $D"
  fi
}

main "$@"
