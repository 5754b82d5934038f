#!/usr/bin/env bash
# A disposable one-node Ceph cluster (1 mon, 1 mgr, 1 memstore OSD, cephx) in a directory.
#   ceph-cluster.sh start DIR V2PORT V1PORT   # no-op if already running there
#   ceph-cluster.sh stop DIR [--wipe]
#   ceph-cluster.sh status DIR
# Several clusters can run side by side on distinct ports. Data lives in RAM
# (memstore), so a stopped cluster is not restartable: start wipes and recreates it.
set -euo pipefail
# The cluster this script manages is named by DIR alone: a CEPH_CONF left in
# the environment (the stack env exports one) would point its ceph calls elsewhere.
unset CEPH_CONF
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MARKER=.lifeboat-ceph-cluster
DAEMONS=(mon.a mgr.x osd.0)
POOL=replicapool
CSI_USER=csi-rbd-provisioner
OSD_BYTES=$((8 << 30)) # a full OSD blocks even deletes; 8 GiB is safe on our runners

usage() { die "usage: $0 start DIR V2PORT V1PORT | stop DIR [--wipe] | status DIR"; }

abs() { [[ $1 == /* ]] && echo "$1" || echo "$PWD/$1"; }

# The admin CLI for this cluster; always explicit so CEPH_CONF from the caller can't leak in.
c_ceph() { timeout 60 ceph -c "$DIR/ceph.conf" "$@"; }

write_conf() {
  local fsid=$1 v2=$2 v1=$3
  cat >"$DIR/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]
keyring = $DIR/ceph.client.admin.keyring
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
# One OSD: pools of size 1, and don't warn about the missing redundancy.
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# Keep HEALTH_OK reachable: no insecure global_id reclaim, no "disk low" on busy runners.
auth allow insecure global id reclaim = false
mon data avail warn = 2
mon data avail crit = 1

[mon]
# Daemons use their own key, not the admin keyring set in [global].
keyring = $DIR/mon/keyring
mon data = $DIR/mon
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log

[mgr]
keyring = $DIR/mgr/keyring
mgr data = $DIR/mgr
public addr = 127.0.0.1
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log

[osd]
keyring = $DIR/osd/keyring
osd data = $DIR/osd
osd objectstore = memstore
memstore device bytes = $OSD_BYTES
# RBD needs the cls_rbd object class (and ceph-csi needs cls_lock, cls_journal, ...).
osd class load list = *
osd class default list = *
public addr = 127.0.0.1
cluster addr = 127.0.0.1
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log
CONF
}

# ceph-authtool chats on stdout ("creating ...", "importing ..."): keep it quiet.
make_keyrings() {
  ceph-authtool --create-keyring "$DIR/ceph.client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool --create-keyring "$DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$DIR/mon.keyring" --import-keyring "$DIR/ceph.client.admin.keyring" >/dev/null
}

start_mon() {
  local fsid=$1 v2=$2 v1=$3
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]" "$DIR/monmap" >/dev/null
  ceph-mon -c "$DIR/ceph.conf" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/mon.keyring"
  ceph-mon -c "$DIR/ceph.conf" -i a # daemonizes, writes run/mon.a.pid
}

start_mgr() {
  c_ceph auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
    -o "$DIR/mgr/keyring"
  ceph-mgr -c "$DIR/ceph.conf" -i x
}

start_osd() {
  local uuid id
  uuid=$(uuidgen)
  id=$(c_ceph osd new "$uuid")
  [[ $id == 0 ]] || die "expected osd id 0, got '$id'"
  quiet ceph-osd -c "$DIR/ceph.conf" -i 0 --mkfs --mkkey --no-mon-config --osd-uuid "$uuid"
  quiet c_ceph auth add osd.0 osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' \
    -i "$DIR/osd/keyring"
  quiet ceph-osd -c "$DIR/ceph.conf" -i 0
}

setup_rbd() {
  quiet c_ceph osd pool create "$POOL" 8 8
  timeout 60 rbd -c "$DIR/ceph.conf" pool init "$POOL"
  # Least privilege, exactly Rook's provisioner caps: this is what lifeboat runs with.
  c_ceph auth get-or-create "client.$CSI_USER" \
    mon 'profile rbd, allow command "osd blocklist"' mgr 'allow rw' osd 'profile rbd' \
    -o "$DIR/ceph.client.$CSI_USER.keyring"
}

# healthy: HEALTH_OK (reached reliably with the settings above), the OSD up and in,
# the mgr's own pool created (device_health_metrics in Pacific, .mgr later: it
# appears a few seconds after the OSD) and every PG active+clean — i.e. quiescent.
healthy() {
  c_ceph health | grep -q '^HEALTH_OK' &&
    c_ceph osd stat | grep -q '1 up.*1 in' &&
    c_ceph osd pool ls detail | grep -q "application mgr" &&
    c_ceph pg stat | grep -Eq '^([0-9]+) pgs: \1 active\+clean;'
}

write_env() {
  local fsid=$1 v2=$2 v1=$3 key
  key=$(c_ceph auth print-key "client.$CSI_USER")
  cat >"$DIR/cluster.env" <<ENV
CEPH_CONF=$DIR/ceph.conf
CEPH_FSID=$fsid
CEPH_MON_HOST_V2=127.0.0.1:$v2
CEPH_MON_HOST_V1=127.0.0.1:$v1
CEPH_CSI_USER=$CSI_USER
CEPH_CSI_KEY=$key
CEPH_CSI_KEYRING=$DIR/ceph.client.$CSI_USER.keyring
ENV
}

# running: a start completed here (cluster.env) and all its daemons are alive.
running() {
  local d
  [[ -f $DIR/cluster.env ]] || return 1
  for d in "${DAEMONS[@]}"; do pid_alive "$DIR/run/$d.pid" "$DIR/ceph.conf" || return 1; done
}

cmd_start() {
  local v2=$1 v1=$2 fsid
  if running; then
    grep -qx "CEPH_MON_HOST_V2=127.0.0.1:$v2" "$DIR/cluster.env" 2>/dev/null ||
      die "a cluster is already running in $DIR on other ports"
    # Tests may legitimately cause HEALTH_WARN (e.g. a pool without an application):
    # report it, but only an unresponsive mon is an error.
    local health
    health=$(c_ceph health) || die "cluster in $DIR is running but its mon does not answer"
    log "ceph: cluster in $DIR already running: $health"
    return 0
  fi
  # Stale (stopped, or a daemon died): memstore lost the data, so start over.
  [[ -e $DIR ]] && log "ceph: no complete running cluster in $DIR: wiping it"
  cmd_stop --wipe
  if ! port_free "$v2" || ! port_free "$v1"; then die "port $v2 or $v1 on 127.0.0.1 is already in use"; fi
  log "ceph: creating cluster in $DIR (mon on 127.0.0.1:$v2 v2 / :$v1 v1)"
  mkdir -p "$DIR"/{mon,mgr,osd,run,log}
  touch "$DIR/$MARKER"
  fsid=$(uuidgen)
  write_conf "$fsid" "$v2" "$v1"
  make_keyrings
  start_mon "$fsid" "$v2" "$v1"
  wait_for 30 "ceph mon" c_ceph mon stat || die "mon did not come up, see $DIR/log/mon.a.log"
  start_mgr
  start_osd
  setup_rbd
  wait_for 60 "HEALTH_OK" healthy || { c_ceph -s >&2; die "cluster in $DIR not healthy, logs in $DIR/log"; }
  write_env "$fsid" "$v2" "$v1"
  log "ceph: cluster $fsid ready, env in $DIR/cluster.env"
}

# Memstore keeps nothing worth flushing and a stopped cluster is wiped on the next
# start, so KILL right away: fast, and no memstore dump of up to 8 GiB to disk.
cmd_stop() {
  local d
  for d in "${DAEMONS[@]}"; do kill_pidfile "$DIR/run/$d.pid" "$DIR/ceph.conf" KILL; done
  if [[ ${1:-} == --wipe ]]; then safe_wipe "$DIR" "$MARKER"; fi
}

cmd_status() {
  local d rc=0
  for d in "${DAEMONS[@]}"; do
    if pid_alive "$DIR/run/$d.pid" "$DIR/ceph.conf"; then echo "$d: running (pid $(<"$DIR/run/$d.pid"))"
    else echo "$d: not running"; rc=1; fi
  done
  ((rc == 0)) || exit 1
  c_ceph -s
}

main() {
  local cmd=${1:-}; [[ -n ${2:-} ]] || usage
  DIR=$(abs "$2")
  case $cmd in
    start) [[ $# -eq 4 ]] || usage; cmd_start "$3" "$4" ;;
    stop) cmd_stop "${3:-}" ;;
    status) cmd_status ;;
    *) usage ;;
  esac
}

main "$@"
