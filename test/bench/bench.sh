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
# The markdown report goes to $LIFEBOAT_STACK_DIR/bench/results.md (BENCH_DIR).
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
CEPH_DIR=$OUT_DIR/ceph   # the dedicated cluster (BENCH_CEPH=own)
SIM_ENV=""               # the env file lbsim reads (set by setup_ceph)
SIM=()                   # lbsim with its global flags (set by setup_ceph)
PASSWORD=lifeboat-bench-password  # kopia's and restic's repository password
MiB=1048576

declare -A R=()      # results: R[tool.step.metric]
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

calc() { awk "BEGIN { printf \"%.2f\", $* }"; }
mib() { awk -v b="$1" 'BEGIN { printf (b >= 100 * 1048576 ? "%.0f" : "%.1f"), b / 1048576 }'; }

# s3 usage|mb|rb BUCKET (test/bench/s3tool)
s3() { "$WORK/s3tool" "$@"; }
stored() { s3 usage "$1" | awk '{print $1}'; }
objects() { s3 usage "$1" | awk '{print $2}'; }

# timed_tool CMD...: run the tool whose peak RSS we want (written to $RSS_FILE).
timed_tool() { /usr/bin/time -f '%M' -o "$RSS_FILE" "$@"; }

# step KEY CMD...: run CMD with stdout in logs/KEY.out and stderr in logs/KEY.log;
# R[KEY.s] = wall seconds, R[KEY.rss] = peak RSS in MB of the timed_tool inside.
# A failure stops the benchmark (set -e); on_exit then shows the step's log.
step() {
  local key=$1; shift
  local t0 t1
  CUR_STEP=$key
  RSS_FILE=$WORK/$key.rss
  rm -f "$RSS_FILE"
  t0=$(date +%s.%N)
  "$@" >"$LOG_DIR/$key.out" 2>"$LOG_DIR/$key.log"
  t1=$(date +%s.%N)
  CUR_STEP=""
  R[$key.s]=$(calc "$t1 - $t0")
  if [[ -s $RSS_FILE ]]; then R[$key.rss]=$(tail -n 1 "$RSS_FILE" | awk '{printf "%.0f", $1 / 1000}'); fi
}

load1() { cut -d' ' -f1 /proc/loadavg; }

sha_of() { rbd export --no-progress "$1" - | sha256sum | awk '{print $1}'; }

# check_restore TOOL N IMAGE: the restored image must equal snapshot N; then delete it.
check_restore() {
  local tool=$1 n=$2 img=$BENCH_POOL/$3 sha
  sha=$(sha_of "$img")
  if [[ $sha == "${SHA[$n]}" ]]; then
    R[$tool.restore$n.ok]=ok
  else
    R[$tool.restore$n.ok]=MISMATCH
    FAILED+=("$tool restore of snapshot $n: sha256 $sha, want ${SHA[$n]} (image kept: $img)")
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
  local t=$1 bucket=$BENCH_NS-$1 before n
  log "$t: new repository in bucket $bucket (load average $(load1))"
  s3 rb "$bucket"
  s3 mb "$bucket"
  LB_CHUNK_SIZE=$BENCH_LB_CHUNK_SIZE step "$t.init" "${t}_init" "$bucket"

  step "$t.full" "${t}_backup" 1
  ID[$t.1]=$("${t}_id" "$LOG_DIR/$t.full.out")
  R[$t.full.stored]=$(stored "$bucket")
  log "$t: full backup ${R[$t.full.s]} s, $(mib "${R[$t.full.stored]}") MiB stored, peak RSS ${R[$t.full.rss]} MB"

  step "$t.incr" "${t}_backup" 2
  ID[$t.2]=$("${t}_id" "$LOG_DIR/$t.incr.out")
  before=${R[$t.full.stored]}
  R[$t.total.stored]=$(stored "$bucket")
  R[$t.incr.stored]=$((${R[$t.total.stored]} - before))
  R[$t.objects]=$(objects "$bucket")
  log "$t: backup after the 1% change ${R[$t.incr.s]} s, +$(mib "${R[$t.incr.stored]}") MiB stored, peak RSS ${R[$t.incr.rss]} MB"

  for n in 1 2; do
    [[ -n ${ID[$t.$n]} && ${ID[$t.$n]} != null ]] || die "$t: no backup id in $LOG_DIR/$t.$([[ $n == 1 ]] && echo full || echo incr).out"
    step "$t.restore$n" "${t}_restore" "$n" "$BENCH_NS-restore-$t-$n"
    check_restore "$t" "$n" "$BENCH_NS-restore-$t-$n"
    log "$t: restore of snapshot $n ${R[$t.restore$n.s]} s, peak RSS ${R[$t.restore$n.rss]} MB, sha256 ${R[$t.restore$n.ok]}"
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
  R[$key.full.stored]=$(stored "$bucket")
  step "$key.incr" lifeboat_backup 2
  R[$key.total.stored]=$(stored "$bucket")
  R[$key.incr.stored]=$((${R[$key.total.stored]} - ${R[$key.full.stored]}))
  R[$key.objects]=$(objects "$bucket")
  log "lifeboat --chunk-size $cs: full ${R[$key.full.s]} s, $(mib "${R[$key.full.stored]}") MiB;" \
    "after 1% change +$(mib "${R[$key.incr.stored]}") MiB, ${R[$key.objects]} objects"
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
  rm -f "$LOG_DIR"/* "$RESULTS"

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
  (cd "$REPO" && go build -o "$WORK/s3tool" ./test/bench/s3tool) || die "building test/bench/s3tool failed"
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
  ((avail > $1)) || die "the OSD has $(mib "$avail") MiB free, the benchmark needs $(mib "$1") MiB; free space first"
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
  R[size]=$((size_mib * MiB))
  R[random]=$((size_mib * MiB * 3 / 8))
  R[text]=$((size_mib * MiB / 4))
  # Room on the OSD for the volume's data, the change and one restored image, twice over.
  need_osd_space $(((R[random] + R[text]) * 3))

  local sim=("${SIM[@]}")
  "${sim[@]}" rook >"$LOG_DIR/rook.out"
  log "volume $BENCH_NS/vol: ${size_mib} MiB provisioned, $(mib "${R[random]}") MiB random, $(mib "${R[text]}") MiB text, the rest holes"
  "${sim[@]}" volume "$BENCH_NS/vol" "${size_mib}M" --seed "$BENCH_SEED" \
    --fill "random:$((size_mib * 3 / 8))M,text:$((size_mib / 4))M" >"$LOG_DIR/volume.out"

  "${sim[@]}" snapshot "$BENCH_NS/vol" --backup bench-1 >"$LOG_DIR/snapshot1.out"
  VSC[1]=$(sed -n 's/^VSC=//p' "$LOG_DIR/snapshot1.out")
  SNAP[1]=$(sed -n 's/^IMAGE=//p' "$LOG_DIR/snapshot1.out")

  # 1% of the provisioned size in 1 MiB writes at random 4 KiB-aligned offsets.
  n_writes=$((size_mib / 100 > 0 ? size_mib / 100 : 1))
  R[writes]=$n_writes
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

# cell TOOL KEY KIND: one table cell. KIND s (seconds), b (bytes as MiB), mb, raw.
cell() {
  local v=${R[$1.$2]:-}
  [[ -n $v ]] || { echo "—"; return; }
  case $3 in
    s) echo "$v s" ;;
    b) echo "$(mib "$v") MiB" ;;
    +b) echo "+$(mib "$v") MiB" ;;
    mb) echo "$v MB" ;;
    *) echo "$v" ;;
  esac
}
# ratio KEY PEER: lifeboat ÷ PEER for R[*.KEY].
ratio() {
  local a=${R[lifeboat.$1]:-} b=${R[$2.$1]:-}
  local num='^-?[0-9]+([.][0-9]+)?$'
  [[ $a =~ $num && $b =~ $num && $b != 0 && $b != 0.00 ]] || { echo "—"; return; }
  awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f×", a / b }'
}
row() {
  local key=$2 kind=$3 t line="| $1 |"
  for t in lifeboat kopia restic; do line+=" $(cell "$t" "$key" "$kind") |"; done
  for t in kopia restic; do line+=" $(ratio "$key" "$t") |"; done
  echo "$line"
}

report() {
  local lbver cephver lbchunk
  lbver=$("$LIFEBOAT" version 2>/dev/null | head -n 1 || true)
  lbchunk=${BENCH_LB_CHUNK_SIZE:-$("$LIFEBOAT" repo init --help 2>/dev/null | sed -n 's/.*--chunk-size.*(default "\([^"]*\)").*/\1/p')}
  cephver=$(ceph --version | awk '{print $3, $5}')
  {
    echo "# lifeboat side-by-side benchmark"
    echo
    echo "$(date -u +'%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM;" \
      "Ceph $cephver ($([[ $BENCH_CEPH == own ]] && echo "a dedicated one-node cluster" || echo "the stack's cluster"), one memstore OSD$([[ $BENCH_CEPH == own && -n $(osd_preload) ]] && echo ", daemons with tcmalloc preloaded")), MinIO on 127.0.0.1, everything on this machine;" \
      "1-minute load average ${R[load.start]} at the start, ${R[load.end]} at the end (other work on the machine distorts the times)."
    echo "lifeboat: ${lbver:-?}, ${lbchunk:-?} chunks$([[ $BENCH_ENCRYPT == 1 ]] && echo ", encrypted (AES-GCM)" || echo ", not encrypted")$([[ -n $BENCH_LB_PARALLEL ]] && echo ", --parallel $BENCH_LB_PARALLEL");" \
      "kopia ${LB_KOPIA_VERSION:-} and restic ${LB_RESTIC_VERSION:-} with default settings (both encrypt; restic compresses, kopia does not by default)."
    echo
    echo "Volume: $(mib "${R[size]}") MiB provisioned, $(mib "${R[random]}") MiB random + $(mib "${R[text]}") MiB non-repeating text," \
      "the rest holes; a ceph-csi snapshot (clone-v2 child), then ${R[writes]} random 1 MiB writes (1%) and a second snapshot."
    echo "kopia and restic read \`rbd export SNAP - |\` (Velero's data mover treats a block volume as a raw stream);" \
      "lifeboat exports the VolumeSnapshotContent. Stored = sum of object sizes in the tool's bucket." \
      "Peak RSS is the tool's process only (not \`rbd export\`/\`rbd import\`). Ratio = lifeboat ÷ peer: below 1 is better for lifeboat."
    echo
    echo "| step | lifeboat | kopia | restic | lifeboat/kopia | lifeboat/restic |"
    echo "|---|---|---|---|---|---|"
    row "full backup, time" full.s s
    row "full backup, stored" full.stored b
    row "1% change, second backup, time" incr.s s
    row "1% change, second backup, added stored" incr.stored +b
    row "restore snapshot 1 into a new RBD image, time" restore1.s s
    row "restore snapshot 2 into a new RBD image, time" restore2.s s
    row "restored images = snapshots (sha256)" restore_ok raw
    row "objects in the bucket" objects raw
    row "peak RSS, full backup" full.rss mb
    row "peak RSS, second backup" incr.rss mb
    row "peak RSS, restore" restore.rss mb
    echo
    echo "Read limit: \`rbd export SNAP - | cat > /dev/null\` of snapshot 1: ${R[read.s]:-—} s" \
      "($(awk -v b="${R[size]}" -v s="${R[read.s]:-0}" 'BEGIN { if (s > 0) printf "%.0f MiB/s of provisioned size", b / 1048576 / s; else print "—" }'));" \
      "peak RSS of \`rbd export\`: ${R[read.rss]:-—} MB."
    if [[ -n ${R[lifeboat.full.json]:-} ]]; then
      echo
      echo "lifeboat's own report: full \`${R[lifeboat.full.json]}\`; second \`${R[lifeboat.incr.json]}\`"
    fi
    if [[ -n $BENCH_CHUNK_SIZES ]]; then
      echo
      echo "### lifeboat chunk size (same volume, one repository per size)"
      echo
      echo "| chunk size | full export, time | stored after full | second export, time | added by the 1% change | stored after the 1% change | objects |"
      echo "|---|---|---|---|---|---|---|"
      local cs k
      for cs in $BENCH_CHUNK_SIZES; do
        k=chunk${cs,,}
        echo "| $cs | $(cell "$k" full.s s) | $(cell "$k" full.stored b) | $(cell "$k" incr.s s) | $(cell "$k" incr.stored +b) | $(cell "$k" total.stored b) | $(cell "$k" objects raw) |"
      done
    fi
    if ((${#FAILED[@]})); then
      echo
      echo "**FAILED:**"
      printf -- '- %s\n' "${FAILED[@]}"
    fi
  } >"$RESULTS"
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
  R[load.start]=$(load1)
  if awk -v l="${R[load.start]}" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; then
    log "WARNING: load average ${R[load.start]} on $(nproc) cores: other work will distort the times"
  fi
  make_volume

  step read read_limit
  log "read limit: rbd export | cat: ${R[read.s]} s"

  local t
  for t in $BENCH_TOOLS; do
    case $t in
      restic | kopia) wait_peers ;;
      lifeboat) ;;
      *) die "unknown tool '$t' in BENCH_TOOLS (restic, kopia, lifeboat)" ;;
    esac
    bench_tool "$t"
    R[$t.restore.rss]=$(printf '%s\n' "${R[$t.restore1.rss]:-0}" "${R[$t.restore2.rss]:-0}" | sort -n | tail -n 1)
    R[$t.restore_ok]=$([[ ${R[$t.restore1.ok]} == ok && ${R[$t.restore2.ok]} == ok ]] && echo ok || echo MISMATCH)
    if [[ $t == lifeboat ]]; then
      R[lifeboat.full.json]=$(jq -c . "$LOG_DIR/lifeboat.full.out")
      R[lifeboat.incr.json]=$(jq -c . "$LOG_DIR/lifeboat.incr.out")
    fi
  done

  local cs
  for cs in $BENCH_CHUNK_SIZES; do bench_chunk "$cs"; done

  R[load.end]=$(load1)
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
