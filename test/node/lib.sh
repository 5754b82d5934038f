# shellcheck shell=bash disable=SC2034 # settings here are used by the sourcing scripts
# Settings shared by the image and node scripts; sourced after test/stack/lib.sh.

LIFEBOAT_NODE_DIR=${LIFEBOAT_NODE_DIR:-/tmp/lifeboat-node}
[[ $LIFEBOAT_NODE_DIR == /* ]] || LIFEBOAT_NODE_DIR=$PWD/$LIFEBOAT_NODE_DIR
LB_NODE_LOGS=$LIFEBOAT_NODE_DIR/logs
# The image the node runs (test/node/overlay names it too).
LB_IMAGE=${LB_IMAGE:-localhost/lifeboat:test}
# podman with runc (crun refuses this host's mixed cgroup v1/v2 layout) and
# rlimits root may set without CAP_SYS_RESOURCE: our config, not /etc's.
export CONTAINERS_CONF=$HERE/containers.conf

LB_PROMETHEUS_VERSION=${LB_PROMETHEUS_VERSION:-v0.316.0}
LB_KUBELET_BIN=$LIFEBOAT_CACHE_DIR/bin/kubelet-$LB_KUBE_VERSION
LB_KUBE_SCHEDULER_BIN=$LIFEBOAT_CACHE_DIR/bin/kube-scheduler-$LB_KUBE_VERSION
LB_PROMETHEUS_BIN=$LIFEBOAT_CACHE_DIR/bin/prometheus-$LB_PROMETHEUS_VERSION
LB_PROMTOOL_BIN=$LIFEBOAT_CACHE_DIR/bin/promtool-$LB_PROMETHEUS_VERSION

# The host packages the image build and the node need.
NODE_APT_PACKAGES=(podman buildah debootstrap containerd runc containernetworking-plugins)

ensure_root_tools() { apt_install "${NODE_APT_PACKAGES[@]}"; }
