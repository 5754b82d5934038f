#!/usr/bin/env bash
# Side-by-side benchmark: lifeboat vs kopia (the engine of Velero's data mover) vs
# restic, on the local stack's Ceph and MinIO (`make bench` starts the stack and
# builds bin/lifeboat first).
#
# The volume is made the ceph-csi way with bin/lbsim: BENCH_SIZE provisioned, 3/8 of
# it random data, 1/4 non-repeating text, the rest holes (2G: 768 MiB + 512 MiB).
# Snapshot 1, then 1% of the size rewritten in random 1 MiB writes, snapshot 2.
# For each tool, in its own bucket: full backup of snapshot 1, backup of snapshot 2,
# restore of both into new RBD images with a SHA-256 check against `rbd export` of
# the snapshot, stored bytes (sum of object sizes in the bucket) and peak RSS.
# kopia and restic read the snapshot as a raw stream (`rbd export SNAP - | tool`),
# the way Velero's data mover treats a block volume; lifeboat exports the CSI
# VolumeSnapshotContent itself. Then lifeboat's chunk size: 1, 2 and 4 MiB.
# The markdown report goes to $LIFEBOAT_STACK_DIR/bench/results.md (BENCH_DIR),
# written by test/bench/report from the raw figures this script records in
# measurements.tsv beside it (`go run ./test/bench/report render FILE` renders
# them again).
#
# Knobs (environment):
#   BENCH_SIZE=2G            provisioned size (multiple of 8M; 256M for a quick run)
#   BENCH_TOOLS="restic kopia lifeboat"
#   BENCH_CHUNK_SIZES="1MiB 2MiB 4MiB"   ("" skips the chunk-size measurement)
#   BENCH_ENCRYPT=1          lifeboat with --encryption-key-file (kopia and restic
#                            always encrypt); 0 for a plain repository
#   BENCH_LB_PARALLEL=       lifeboat export/restore --parallel N (default: lifeboat's)
#   BENCH_LB_CHUNK_SIZE=     chunk size of lifeboat's repository in the side-by-side
#                            comparison (default: lifeboat's default)
#   BENCH_SEED=1             seed of the data and of the write offsets
#   BENCH_NS=lbbench         namespace, bucket and image name prefix
#   BENCH_DIR=$LIFEBOAT_STACK_DIR/bench   results.md, logs/, the dedicated cluster
#   BENCH_POOL=replicapool   RBD pool
#   BENCH_CEPH=own           own: a dedicated one-node cluster for the benchmark
#                            (test/stack/ceph-cluster.sh, ports BENCH_CEPH_V2_PORT/
#                            BENCH_CEPH_V1_PORT, clusterID lifeboat-$BENCH_NS in Rook's
#                            ConfigMap), so other tests' data can't fill its OSD and
#                            it can't fill theirs; shared: the stack's own cluster
#   BENCH_OSD_TCMALLOC=1     with BENCH_CEPH=own: start the dedicated cluster's daemons
#                            with tcmalloc (LD_PRELOAD) when they are not linked with it
#                            (Debian 12's Pacific; upstream's packages and containers, and
#                            the Reef chroot's, are). With glibc malloc the OSD faults in
#                            fresh pages for every message: ~2x its CPU per restore
#                            (see osd_preload); 0 keeps the daemons as packaged
#   BENCH_KEEP=0             1 keeps the volume, snapshots and buckets at the end
#   LIFEBOAT, LBSIM          binaries (default bin/lifeboat, bin/lbsim)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=../stack/lib.sh
source "$HERE/../stack/lib.sh"

BENCH_SIZE=${BENCH_SIZE:-2G}
BENCH_TOOLS=${BENCH_TOOLS:-restic kopia lifeboat}
BENCH_CHUNK_SIZES=${BENCH_CHUNK_SIZES-1MiB 2MiB 4MiB}
BENCH_ENCRYPT=${BENCH_ENCRYPT:-1}
BENCH_LB_PARALLEL=${BENCH_LB_PARALLEL:-}
BENCH_LB_CHUNK_SIZE=${BENCH_LB_CHUNK_SIZE:-}
BENCH_SEED=${BENCH_SEED:-1}
BENCH_NS=${BENCH_NS:-lbbench}
BENCH_POOL=${BENCH_POOL:-replicapool}
BENCH_CEPH=${BENCH_CEPH:-own}
BENCH_CEPH_V2_PORT=${BENCH_CEPH_V2_PORT:-13320}
BENCH_CEPH_V1_PORT=${BENCH_CEPH_V1_PORT:-16809}
BENCH_CLUSTER_ID=lifeboat-$BENCH_NS
BENCH_OSD_TCMALLOC=${BENCH_OSD_TCMALLOC:-1}
BENCH_KEEP=${BENCH_KEEP:-0}
LIFEBOAT=${LIFEBOAT:-$REPO/bin/lifeboat}
LBSIM=${LBSIM:-$REPO/bin/lbsim}

OUT_DIR=${BENCH_DIR:-$LIFEBOAT_STACK_DIR/bench}
LOG_DIR=$OUT_DIR/logs    # one .log (stderr) and .out (stdout) per step
WORK=$OUT_DIR/work       # tool configs and caches, peak-RSS files; deleted at the end
RESULTS=$OUT_DIR/results.md
MEASUREMENTS=$OUT_DIR/measurements.tsv  # KEY<TAB>VALUE lines, read by test/bench/report
CEPH_DIR=$OUT_DIR/ceph   # the dedicated cluster (BENCH_CEPH=own)
SIM_ENV=""               # the env file lbsim reads (set by setup_ceph)
SIM=()                   # lbsim with its global flags (set by setup_ceph)
PASSWORD=lifeboat-bench-password  # kopia's and restic's repository password
MiB=1048576

declare -A SNAP=()   # SNAP[1], SNAP[2]: pool/image@snap
declare -A VSC=()    # VolumeSnapshotContent names
declare -A SHA=()    # SHA-256 of `rbd export` of each snapshot
declare -A ID=()     # backup ids: ID[tool.N]
CUR_STEP=""          # the step running now, for the failure message
FAILED=()            # checks that failed (restores that differ)

# ---------------------------------------------------------------------------
# helpers

# size_mib SIZE: 2G, 2GiB, 256M, 256MiB -> MiB.
size_mib() {
  local s=${1%iB} ; s=${s%B}
  case $s in
    *[0-9][Gg]) echo $((${s%[Gg]} * 1024)) ;;
    *[0-9][Mm]) echo "${s%[Mm]}" ;;
    *) die "size '$1': want e.g. 2G or 256M" ;;
  esac
}

# rec KEY VALUE: record a raw measurement (or a fact for the report's header)
# for test/bench/report; a later line for a KEY wins, "failed" lines add up.
rec() { printf '%s\t%s\n' "$1" "$2" >>"$MEASUREMENTS"; }
# cell KEY: a recorded figure with its unit as the report shows it (7.10 s, 943 MiB).
cell() { "$WORK/report" cell "$MEASUREMENTS" "$1"; }

# s3 usage|mb|rb BUCKET (test/bench/s3tool)
s3() { "$WORK/s3tool" "$@"; }
# rec_usage KEY BUCKET: KEY.stored = the bytes in BUCKET, KEY.objects = its objects.
rec_usage() {
  local usage bytes objects
  usage=$(s3 usage "$2")
  read -r bytes objects <<<"$usage"
  rec "$1.stored" "$bytes"
  rec "$1.objects" "$objects"
}

# timed_tool CMD...: run the tool whose peak RSS we want (written to $RSS_FILE).
timed_tool() { /usr/bin/time -f '%M' -o "$RSS_FILE" "$@"; }

# step KEY CMD...: run CMD with stdout in logs/KEY.out and stderr in logs/KEY.log;
# records KEY.ns = wall time in ns and KEY.rss_kb = peak RSS in kB of the
# timed_tool inside. A failure stops the benchmark (set -e); on_exit then shows
# the step's log.
step() {
  local key=$1; shift
  local t0 t1
  CUR_STEP=$key
  RSS_FILE=$WORK/$key.rss
  rm -f "$RSS_FILE"
  t0=$(date +%s%N)
  "$@" >"$LOG_DIR/$key.out" 2>"$LOG_DIR/$key.log"
  t1=$(date +%s%N)
  CUR_STEP=""
  rec "$key.ns" $((t1 - t0))
  if [[ -s $RSS_FILE ]]; then rec "$key.rss_kb" "$(tail -n 1 "$RSS_FILE")"; fi
}

load1() { cut -d' ' -f1 /proc/loadavg; }

sha_of() { rbd export --no-progress "$1" - | sha256sum | awk '{print $1}'; }

# check_restore TOOL N IMAGE: the restored image must equal snapshot N; then delete it.
check_restore() {
  local tool=$1 n=$2 img=$BENCH_POOL/$3 sha
  sha=$(sha_of "$img")
  if [[ $sha == "${SHA[$n]}" ]]; then
    rec "$tool.restore$n.ok" ok
  else
    rec "$tool.restore$n.ok" MISMATCH
    FAILED+=("$tool restore of snapshot $n: sha256 $sha, want ${SHA[$n]} (image kept: $img)")
    rec failed "${FAILED[-1]}"
    log "$tool: restored image $img DIFFERS from snapshot $n (sha256 $sha, want ${SHA[$n]})"
    return 0
  fi
  rbd rm --no-progress "$img" >/dev/null
}

# ---------------------------------------------------------------------------
# the tools. Each has NAME_init BUCKET, NAME_backup N (snapshot N; prints the
# backup id on stdout as ID=...) and NAME_restore N IMAGE.

restic_env() {
  export RESTIC_REPOSITORY=s3:$S3_ENDPOINT/$1 RESTIC_PASSWORD=$PASSWORD RESTIC_CACHE_DIR=$WORK/restic-cache
}
restic_init() { restic_env "$1"; "$RESTIC_BIN" init; }
restic_backup() {
  rbd export --no-progress "${SNAP[$1]}" - |
    timed_tool "$RESTIC_BIN" backup --stdin --stdin-filename vol.img --host "$BENCH_NS" --json
}
restic_id() { jq -r 'select(.message_type == "summary") | .snapshot_id' "$1"; }
restic_restore() {
  timed_tool "$RESTIC_BIN" dump "${ID[restic.$1]}" /vol.img |
    rbd import --no-progress - "$BENCH_POOL/$2"
}

kopia_init() {
  export KOPIA_PASSWORD=$PASSWORD KOPIA_CONFIG_PATH=$WORK/kopia/repository.config KOPIA_CHECK_FOR_UPDATES=false
  mkdir -p "$WORK/kopia/src"
  local tls=()
  [[ $S3_ENDPOINT == https://* ]] || tls=(--disable-tls)
  "$KOPIA_BIN" repository create s3 --bucket="$1" --endpoint="${S3_ENDPOINT#*://}" \
    "${tls[@]}" --region="${AWS_REGION:-us-east-1}" \
    --access-key="$AWS_ACCESS_KEY_ID" --secret-access-key="$AWS_SECRET_ACCESS_KEY" \
    --cache-directory="$WORK/kopia/cache"
}
kopia_backup() {
  # The snapshot's source is the working directory: keep it fixed so that the
  # second backup is of the same source.
  rbd export --no-progress "${SNAP[$1]}" - |
    (cd "$WORK/kopia/src" && timed_tool "$KOPIA_BIN" snapshot create --stdin-file=vol.img - --json)
}
kopia_id() { jq -r '.rootEntry.obj' "$1"; }
kopia_restore() {
  timed_tool "$KOPIA_BIN" show "${ID[kopia.$1]}/vol.img" |
    rbd import --no-progress - "$BENCH_POOL/$2"
}

LB_BUCKET=""
lb_s3() {
  printf '%s\n' --s3-endpoint "$S3_ENDPOINT" --s3-bucket "$LB_BUCKET" --s3-region "${AWS_REGION:-us-east-1}"
  if [[ $BENCH_ENCRYPT == 1 ]]; then printf '%s\n' --encryption-key-file "$WORK/lifeboat.key"; fi
}
lifeboat_init() {
  LB_BUCKET=$1
  local args; mapfile -t args < <(lb_s3)
  "$LIFEBOAT" repo init "${args[@]}" ${LB_CHUNK_SIZE:+--chunk-size "$LB_CHUNK_SIZE"}
}
lifeboat_backup() {
  local args; mapfile -t args < <(lb_s3)
  timed_tool "$LIFEBOAT" export "${VSC[$1]}" --kubeconfig "$KUBECONFIG" "${args[@]}" \
    ${BENCH_LB_PARALLEL:+--parallel "$BENCH_LB_PARALLEL"} -o json
}
lifeboat_id() { jq -r '.id' "$1"; }
lifeboat_restore() {
  local args; mapfile -t args < <(lb_s3)
  timed_tool "$LIFEBOAT" restore "${ID[lifeboat.$1]}" --to "$BENCH_POOL/$2" --ceph-conf "$CEPH_CONF" "${args[@]}" \
    ${BENCH_LB_PARALLEL:+--parallel "$BENCH_LB_PARALLEL"}
}

# bench_tool TOOL: both backups and both restores of TOOL in a fresh bucket.
# Buckets are kept until the end of the run (cleanup): MinIO deletes a bucket's
# objects in the background, at up to a core's worth of CPU and much disk I/O,
# which would slow whichever tool ran next. Restored images are deleted at once
# (the OSD holds one restore at a time).
bench_tool() {
  local t=$1 bucket=$BENCH_NS-$1 n
  log "$t: new repository in bucket $bucket (load average $(load1))"
  s3 rb "$bucket"
  s3 mb "$bucket"
  LB_CHUNK_SIZE=$BENCH_LB_CHUNK_SIZE step "$t.init" "${t}_init" "$bucket"

  step "$t.full" "${t}_backup" 1
  ID[$t.1]=$("${t}_id" "$LOG_DIR/$t.full.out")
  rec_usage "$t.full" "$bucket"
  log "$t: full backup $(cell "$t.full.s"), $(cell "$t.full.stored") stored, peak RSS $(cell "$t.full.rss")"

  step "$t.incr" "${t}_backup" 2
  ID[$t.2]=$("${t}_id" "$LOG_DIR/$t.incr.out")
  rec_usage "$t.total" "$bucket"
  log "$t: backup after the 1% change $(cell "$t.incr.s"), $(cell "$t.incr.stored") stored, peak RSS $(cell "$t.incr.rss")"

  for n in 1 2; do
    [[ -n ${ID[$t.$n]} && ${ID[$t.$n]} != null ]] || die "$t: no backup id in $LOG_DIR/$t.$([[ $n == 1 ]] && echo full || echo incr).out"
    step "$t.restore$n" "${t}_restore" "$n" "$BENCH_NS-restore-$t-$n"
    check_restore "$t" "$n" "$BENCH_NS-restore-$t-$n"
    log "$t: restore of snapshot $n $(cell "$t.restore$n.s"), peak RSS $(cell "$t.restore$n.rss"), sha256 $(cell "$t.restore$n.ok")"
  done
  rm -rf "$WORK/restic-cache" "$WORK/kopia"
}

# bench_chunk SIZE: lifeboat with chunk size SIZE: full export, stored bytes
# after the 1% change, object count.
bench_chunk() {
  local cs=$1 key bucket
  key=chunk${cs,,}
  bucket=$BENCH_NS-lifeboat-$key
  log "lifeboat --chunk-size $cs: bucket $bucket (load average $(load1))"
  s3 rb "$bucket"
  s3 mb "$bucket"
  LB_CHUNK_SIZE=$cs step "$key.init" lifeboat_init "$bucket"
  step "$key.full" lifeboat_backup 1
  rec_usage "$key.full" "$bucket"
  step "$key.incr" lifeboat_backup 2
  rec_usage "$key.total" "$bucket"
  log "lifeboat --chunk-size $cs: full $(cell "$key.full.s"), $(cell "$key.full.stored");" \
    "after 1% change $(cell "$key.incr.stored"), $(cell "$key.total.objects") objects"
}

# ---------------------------------------------------------------------------
# setup

has_tool() { [[ " $BENCH_TOOLS " == *" $1 "* ]]; }

preflight() {
  [[ -f $LIFEBOAT_STACK_DIR/env ]] || die "no $LIFEBOAT_STACK_DIR/env: run make stack-up first"
  set -a
  # shellcheck source=/dev/null
  . "$LIFEBOAT_STACK_DIR/env"
  set +a
  mkdir -p "$LOG_DIR" "$WORK"
  rm -f "$LOG_DIR"/* "$RESULTS" "$MEASUREMENTS"

  # Cold kopia builds take minutes on 2 cores: start them before anything else.
  PEERS_PID=""
  if has_tool restic || has_tool kopia; then
    "$HERE/peers.sh" >"$LOG_DIR/peers.log" 2>&1 6>&- 7>&- &
    PEERS_PID=$!
  fi

  local missing=()
  [[ -x /usr/bin/time ]] || missing+=(time) # peak RSS
  command -v jq >/dev/null || missing+=(jq)
  if ((${#missing[@]})); then
    [[ $EUID -eq 0 ]] || die "missing packages: ${missing[*]} (apt-get install ${missing[*]})"
    log "apt: installing ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=900 update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
  [[ -x $LBSIM ]] || die "no $LBSIM: run make build"
  if has_tool lifeboat || [[ -n $BENCH_CHUNK_SIZES ]]; then
    local c
    for c in "repo init" export restore; do
      # shellcheck disable=SC2086 # split "repo init"
      "$LIFEBOAT" $c --help >/dev/null 2>&1 || die "$LIFEBOAT has no '$c' command (run make build)"
    done
    head -c 32 /dev/urandom >"$WORK/lifeboat.key"
  fi
  (cd "$REPO" && go build -o "$WORK/" ./test/bench/s3tool ./test/bench/report) ||
    die "building test/bench/s3tool and test/bench/report failed"
}

# acquire_lock: one benchmark at a time per stack. Two runs would share buckets,
# namespace, images and the dedicated cluster, and each one's cleanup would wreck
# the other. fd 7 stays open for the whole run; daemons we start must not inherit it.
acquire_lock() {
  mkdir -p "$OUT_DIR"
  exec 7>"$OUT_DIR/.lock"
  if ! flock -n 7; then
    log "another benchmark is running on this stack ($OUT_DIR/.lock); waiting for it to finish (up to 1 h)"
    flock -w 3600 7 || die "timed out waiting for $OUT_DIR/.lock"
  fi
}

# setup_ceph: the cluster the volume lives on and restores go to. BENCH_CEPH=own
# starts a dedicated one: its csi-rbd-provisioner user gets the stack's key, so the
# shared Secret rook-csi-rbd-provisioner (which lbsim rook rewrites with the same
# data) serves both clusters; lbsim adds the clusterID lifeboat-$BENCH_NS to Rook's
# ConfigMap, which lifeboat export follows. CEPH_CONF then names that cluster
# (admin) for rbd, ceph and lifeboat restore.
setup_ceph() {
  if [[ $BENCH_CEPH == shared ]]; then
    SIM_ENV=$LIFEBOAT_STACK_DIR/env
    SIM=("$LBSIM" -env "$SIM_ENV" -pool "$BENCH_POOL")
    return 0
  fi
  [[ $BENCH_CEPH == own ]] || die "BENCH_CEPH=$BENCH_CEPH: want own or shared"
  local preload; preload=$(osd_preload)
  log "ceph: dedicated cluster in $CEPH_DIR (ports $BENCH_CEPH_V2_PORT, $BENCH_CEPH_V1_PORT)${preload:+, daemons with LD_PRELOAD=$preload}"
  LD_PRELOAD=$preload "$REPO/test/stack/ceph-cluster.sh" start "$CEPH_DIR" "$BENCH_CEPH_V2_PORT" "$BENCH_CEPH_V1_PORT" >"$LOG_DIR/ceph-cluster.log" 2>&1 6>&- 7>&- ||
    { tail -n 20 "$LOG_DIR/ceph-cluster.log" >&2; die "starting the dedicated Ceph cluster failed"; }
  local conf=$CEPH_DIR/ceph.conf user=${CEPH_CSI_USER:-csi-rbd-provisioner} keyring=$CEPH_DIR/bench-csi.keyring
  ceph-authtool --create-keyring "$keyring" -n "client.$user" --add-key "$CEPH_CSI_KEY" >/dev/null
  ceph -c "$conf" auth rm "client.$user" >/dev/null 2>&1 || true
  ceph -c "$conf" auth add "client.$user" -i "$keyring" \
    mon 'profile rbd, allow command "osd blocklist"' mgr 'allow rw' osd 'profile rbd' >/dev/null 2>&1
  forget_csi_config
  SIM_ENV=$WORK/stack.env
  {
    grep -v '^CEPH_' "$LIFEBOAT_STACK_DIR/env"
    grep '^CEPH_' "$CEPH_DIR/cluster.env" | grep -v '^CEPH_CSI_KEY'
    echo "CEPH_CSI_KEY=$CEPH_CSI_KEY"
    echo "CEPH_CSI_KEYRING=$keyring"
    echo "LIFEBOAT_CEPH_RELEASE=${LIFEBOAT_CEPH_RELEASE:-}"
  } >"$SIM_ENV"
  export CEPH_CONF=$conf
  SIM=("$LBSIM" -env "$SIM_ENV" -pool "$BENCH_POOL" -cluster-id "$BENCH_CLUSTER_ID")
}

# osd_preload: the tcmalloc to preload into the dedicated cluster's daemons, or
# nothing (BENCH_OSD_TCMALLOC=0, ceph-osd already linked with it, or no tcmalloc;
# ceph-common depends on libgoogle-perftools4, so Debian has it). Measured
# 2026-12-07 (AMD EPYC, 2 cores): Debian 12's ceph-osd 16.2.15 uses glibc malloc
# and spends half its CPU clearing freshly mapped pages for incoming writes
# (perf: clear_page_erms under _copy_to_iter); a 1280 MiB restore cost it
# 1.1-1.7 CPU-s, with tcmalloc 0.44-0.50, as Reef's OSD (linked with it).
osd_preload() {
  [[ $BENCH_OSD_TCMALLOC == 1 ]] || return 0
  local osd lib
  osd=$(command -v ceph-osd) || return 0
  ldd "$osd" 2>/dev/null | grep -q tcmalloc && return 0
  lib=$(ldconfig -p 2>/dev/null | awk '$1 == "libtcmalloc.so.4" {print $NF; exit}')
  [[ -n $lib ]] && echo "$lib"
  return 0
}

# forget_csi_config: drop our clusterID from lbcsi's config file ($CSI_CONFIG),
# so that lbsim writes this run's monitors: it only adds a missing clusterID, and
# an earlier run (other BENCH_CEPH_*_PORTs, or one killed before its cleanup)
# may have left the entry naming monitors nothing listens on any more.
forget_csi_config() {
  [[ -n ${CSI_CONFIG:-} && -f $CSI_CONFIG ]] || return 0
  (
    flock 9
    jq --arg id "$BENCH_CLUSTER_ID" 'map(select(.clusterID != $id))' "$CSI_CONFIG" >"$CSI_CONFIG.bench" &&
      mv "$CSI_CONFIG.bench" "$CSI_CONFIG"
  ) 9>"$CSI_CONFIG.lock" || log "could not remove clusterID $BENCH_CLUSTER_ID from $CSI_CONFIG"
}

# forget_cluster: drop our clusterID from Rook's ConfigMap again
# (read-modify-replace: a concurrent writer makes replace fail, then we retry).
forget_cluster() {
  local i cm="kubectl -n rook-ceph get configmap rook-ceph-csi-config -o json"
  for i in 1 2 3 4 5; do
    $cm 2>/dev/null | jq --arg id "$BENCH_CLUSTER_ID" \
      '.data["csi-cluster-config-json"] |= (fromjson | map(select(.clusterID != $id)) | tojson)' |
      kubectl replace -f - >/dev/null 2>&1 && return 0
    sleep 1
  done
  log "could not remove clusterID $BENCH_CLUSTER_ID from rook-ceph/rook-ceph-csi-config"
}

# need_osd_space BYTES: the memstore OSD must have room (a full OSD blocks even deletes).
need_osd_space() {
  local avail
  avail=$(ceph df -f json | jq '.stats.total_avail_bytes')
  ((avail > $1)) || die "the OSD has $((avail / MiB)) MiB free, the benchmark needs $(($1 / MiB)) MiB; free space first"
}

cleanup() {
  local img
  for img in $(rbd ls "$BENCH_POOL" 2>/dev/null | grep "^$BENCH_NS-restore-" || true); do
    if printf '%s\n' "${FAILED[@]}" | grep -qF "$BENCH_POOL/$img"; then continue; fi  # kept for inspection
    rbd rm --no-progress "$BENCH_POOL/$img" >/dev/null 2>&1 || log "could not delete image $BENCH_POOL/$img"
  done
  if [[ -x $WORK/s3tool ]]; then
    local b
    local buckets=(restic kopia lifeboat) cs
    for cs in $BENCH_CHUNK_SIZES; do buckets+=("lifeboat-chunk${cs,,}"); done
    for b in "${buckets[@]}"; do
      s3 rb "$BENCH_NS-$b" 2>/dev/null || log "could not delete bucket $BENCH_NS-$b"
    done
  fi
  if ((${#SIM[@]})); then "${SIM[@]}" cleanup "$BENCH_NS" >/dev/null 2>&1 || true; fi
}

on_exit() {
  local rc=$?
  exec 2>&6
  ((rc == 0)) || log "benchmark stopped (exit status $rc); cleaning up"
  if ((rc != 0)) && [[ -n $CUR_STEP ]]; then
    log "step '$CUR_STEP' failed; its stderr ($LOG_DIR/$CUR_STEP.log):"
    tail -n 25 "$LOG_DIR/$CUR_STEP.log" >&2 || true
    if [[ -s $LOG_DIR/$CUR_STEP.out ]]; then
      log "its stdout ($LOG_DIR/$CUR_STEP.out):"
      tail -n 10 "$LOG_DIR/$CUR_STEP.out" >&2 || true
    fi
  fi
  if [[ -n ${PEERS_PID:-} ]]; then wait "$PEERS_PID" 2>/dev/null || true; fi
  if [[ $BENCH_KEEP == 1 ]]; then
    log "BENCH_KEEP=1: volume, snapshots and buckets kept (namespace $BENCH_NS)"
  else
    cleanup
    if [[ $BENCH_CEPH == own && -d $CEPH_DIR ]]; then
      forget_cluster
      forget_csi_config
      "$REPO/test/stack/ceph-cluster.sh" stop "$CEPH_DIR" --wipe >>"$LOG_DIR/ceph-cluster.log" 2>&1 ||
        log "could not stop the dedicated cluster in $CEPH_DIR (see $LOG_DIR/ceph-cluster.log)"
    fi
  fi
  rm -rf "$WORK"
}

# make_volume: the volume, snapshot 1, the 1% change, snapshot 2 (ceph-csi's way).
make_volume() {
  local size_mib n_writes offsets off i
  size_mib=$(size_mib "$BENCH_SIZE")
  ((size_mib >= 64 && size_mib % 8 == 0)) || die "BENCH_SIZE=$BENCH_SIZE: want a multiple of 8 MiB, at least 64M"
  local random_mib=$((size_mib * 3 / 8)) text_mib=$((size_mib / 4))
  rec size $((size_mib * MiB))
  rec random $((random_mib * MiB))
  rec text $((text_mib * MiB))
  # Room on the OSD for the volume's data, the change and one restored image, twice over.
  need_osd_space $(((random_mib + text_mib) * MiB * 3))

  local sim=("${SIM[@]}")
  "${sim[@]}" rook >"$LOG_DIR/rook.out"
  log "volume $BENCH_NS/vol: ${size_mib} MiB provisioned, $random_mib MiB random, $text_mib MiB text, the rest holes"
  "${sim[@]}" volume "$BENCH_NS/vol" "${size_mib}M" --seed "$BENCH_SEED" \
    --fill "random:${random_mib}M,text:${text_mib}M" >"$LOG_DIR/volume.out"

  "${sim[@]}" snapshot "$BENCH_NS/vol" --backup bench-1 >"$LOG_DIR/snapshot1.out"
  VSC[1]=$(sed -n 's/^VSC=//p' "$LOG_DIR/snapshot1.out")
  SNAP[1]=$(sed -n 's/^IMAGE=//p' "$LOG_DIR/snapshot1.out")

  # 1% of the provisioned size in 1 MiB writes at random 4 KiB-aligned offsets.
  n_writes=$((size_mib / 100 > 0 ? size_mib / 100 : 1))
  rec writes "$n_writes"
  # The offsets come from awk's rand(): keep it, so that a seed makes the same volume as before.
  offsets=$(awk -v seed="$BENCH_SEED" -v n="$n_writes" -v blocks=$(((size_mib - 1) * 256)) \
    'BEGIN { srand(seed); for (i = 0; i < n; i++) printf "%d\n", int(rand() * blocks) * 4096 }')
  log "the 1% change: $n_writes random 1 MiB writes"
  i=0
  for off in $offsets; do
    "${sim[@]}" write "$BENCH_NS/vol" --offset "$off" --length 1M --seed $((BENCH_SEED * 1000 + i)) >>"$LOG_DIR/writes.out"
    i=$((i + 1))
  done

  "${sim[@]}" snapshot "$BENCH_NS/vol" --backup bench-2 >"$LOG_DIR/snapshot2.out"
  VSC[2]=$(sed -n 's/^VSC=//p' "$LOG_DIR/snapshot2.out")
  SNAP[2]=$(sed -n 's/^IMAGE=//p' "$LOG_DIR/snapshot2.out")
  for n in 1 2; do
    [[ -n ${VSC[$n]} && ${SNAP[$n]} == *@* ]] || die "lbsim snapshot printed no VSC/IMAGE (see $LOG_DIR/snapshot$n.out)"
    SHA[$n]=$(sha_of "${SNAP[$n]}")
    log "snapshot $n: VSC ${VSC[$n]}, image ${SNAP[$n]}, sha256 ${SHA[$n]:0:16}…"
  done
}

# bench_read_limit: how fast Ceph hands out snapshot 1 (`rbd export | cat`).
read_limit() { timed_tool rbd export --no-progress "${SNAP[1]}" - | cat >/dev/null; }

wait_peers() {
  [[ -n $PEERS_PID ]] || return 0
  if ! kill -0 "$PEERS_PID" 2>/dev/null || [[ ! -x $RESTIC_BIN || ! -x $KOPIA_BIN ]]; then
    log "waiting for the restic/kopia builds (test/bench/peers.sh, log $LOG_DIR/peers.log)"
  fi
  wait "$PEERS_PID" || { tail -n 20 "$LOG_DIR/peers.log" >&2; die "building the peers failed"; }
  PEERS_PID=""
}

# ---------------------------------------------------------------------------
# report

# report: record what the report's header says of this run, then let
# test/bench/report write results.md (complete or not at all).
report() {
  rec date "$(date -u +%s)"
  rec cores "$(nproc)"
  rec cpu "$(sed -n '/^model name/{s/^[^:]*: //p;q}' /proc/cpuinfo)"
  rec mem_kib "$(sed -n 's/^MemTotal: *\([0-9]*\) kB$/\1/p' /proc/meminfo)"
  rec ceph_version "$(ceph --version)"
  rec ceph "$BENCH_CEPH"
  rec tcmalloc "$(osd_preload)"
  rec lifeboat_version "$("$LIFEBOAT" version 2>/dev/null | head -n 1 || true)"
  rec lifeboat_chunk "${BENCH_LB_CHUNK_SIZE:-$("$LIFEBOAT" repo init --help 2>/dev/null | sed -n 's/.*--chunk-size.*(default "\([^"]*\)").*/\1/p')}"
  rec encrypt "$BENCH_ENCRYPT"
  rec parallel "$BENCH_LB_PARALLEL"
  rec kopia_version "${LB_KOPIA_VERSION:-}"
  rec restic_version "${LB_RESTIC_VERSION:-}"
  rec chunk_sizes "$BENCH_CHUNK_SIZES"
  "$WORK/report" render "$MEASUREMENTS" >"$RESULTS.tmp"
  mv "$RESULTS.tmp" "$RESULTS"
}

# ---------------------------------------------------------------------------

main() {
  acquire_lock
  exec 6>&2  # the terminal's stderr, for on_exit (a step may have redirected 2)
  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  preflight
  eval "$("$HERE/peers.sh" --print-paths)"  # RESTIC_BIN, KOPIA_BIN
  LB_RESTIC_VERSION=$(basename "$RESTIC_BIN" | sed 's/^restic-//')
  LB_KOPIA_VERSION=$(basename "$KOPIA_BIN" | sed 's/^kopia-//')
  log "benchmark: BENCH_SIZE=$BENCH_SIZE, tools: $BENCH_TOOLS, chunk sizes: ${BENCH_CHUNK_SIZES:-none}; logs in $LOG_DIR"
  setup_ceph
  cleanup  # leftovers of an interrupted run
  local load; load=$(load1)
  rec load.start "$load"
  # /proc/loadavg has two decimals: load > nproc/2 is load*100 > nproc*50.
  if ((10#${load/./} > $(nproc) * 50)); then
    log "WARNING: load average $load on $(nproc) cores: other work will distort the times"
  fi
  make_volume

  step read read_limit
  log "read limit: rbd export | cat: $(cell read.s)"

  local t
  for t in $BENCH_TOOLS; do
    case $t in
      restic | kopia) wait_peers ;;
      lifeboat) ;;
      *) die "unknown tool '$t' in BENCH_TOOLS (restic, kopia, lifeboat)" ;;
    esac
    bench_tool "$t"
    if [[ $t == lifeboat ]]; then
      rec lifeboat.full.json "$(jq -c . "$LOG_DIR/lifeboat.full.out")"
      rec lifeboat.incr.json "$(jq -c . "$LOG_DIR/lifeboat.incr.out")"
    fi
  done

  local cs
  for cs in $BENCH_CHUNK_SIZES; do bench_chunk "$cs"; done

  rec load.end "$(load1)"
  report
  echo
  cat "$RESULTS"
  echo
  log "results saved to $RESULTS (logs: $LOG_DIR)"
  if ((${#FAILED[@]})); then
    printf 'FAILED: %s\n' "${FAILED[@]}" >&2
    exit 1
  fi
}

main "$@"
