# lifeboat Makefile.
#
# Build / test / demo targets: owned by the lead, to be added here
# (build, test, demo, ...).

# ---------------------------------------------------------------------------
# Local test stack (test/stack/): real Ceph, etcd + kube-apiserver, MinIO on
# 127.0.0.1. Override on the command line or in the environment, e.g.
#   make stack-up LIFEBOAT_STACK_DIR=/tmp/other-stack
# Ports: LIFEBOAT_CEPH_V2_PORT, LIFEBOAT_CEPH_V1_PORT, LIFEBOAT_ETCD_PORT,
# LIFEBOAT_ETCD_PEER_PORT, LIFEBOAT_KUBE_PORT, LIFEBOAT_MINIO_PORT,
# LIFEBOAT_MINIO_CONSOLE_PORT (environment). Tests read $(LIFEBOAT_STACK_DIR)/env.
# ---------------------------------------------------------------------------
LIFEBOAT_STACK_DIR ?= /tmp/lifeboat-stack
LIFEBOAT_CACHE_DIR ?= $(HOME)/.cache/lifeboat
export LIFEBOAT_STACK_DIR LIFEBOAT_CACHE_DIR

STACK_SCRIPTS := test/stack

.PHONY: stack-install stack-up stack-down stack-wipe

## stack-install: install apt packages and build/cache etcd, kube-apiserver, MinIO (slow once)
stack-install:
	$(STACK_SCRIPTS)/install.sh

## stack-up: start (or check) the whole stack and write $(LIFEBOAT_STACK_DIR)/env
stack-up:
	$(STACK_SCRIPTS)/up.sh

## stack-down: stop the stack's processes, keep its directory
stack-down:
	$(STACK_SCRIPTS)/down.sh

## stack-wipe: stop the stack and delete $(LIFEBOAT_STACK_DIR)
stack-wipe:
	$(STACK_SCRIPTS)/down.sh --wipe
