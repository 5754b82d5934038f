# lifeboat Makefile. The two commands a newcomer needs:
#   make demo   start the local stack and show lifeboat at work
#   make test   every test, starting the stack they need
# Both work as root on a fresh Debian 12 machine: the stack installs itself.

# go-ceph needs a build tag naming the Ceph release of the librbd it builds
# against (pacific on Debian 12; reef, squid, ... elsewhere). Recursive (=) so
# it is read after stack-install has installed Ceph.
CEPH_RELEASE = $(shell ceph --version 2>/dev/null | awk '{print $$5}')
GO_TAGS = $(CEPH_RELEASE)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO ?= go
GOFLAGS_BUILD = -tags '$(GO_TAGS)' -ldflags '-X main.version=$(VERSION)'
# FUZZEXECS: inputs per fuzz target. A count, not a duration: with -fuzztime
# as a duration Go 1.26's coordinator can fail a target that found nothing
# when the deadline lands mid-call (go.dev/issue/75804, fixed in Go 1.27).
# FUZZMINIMIZE bounds the minimizing of each new interesting input.
FUZZEXECS ?= 200000
FUZZMINIMIZE ?= 5s
export GO_TAGS

.PHONY: build test test-pacific fuzz demo bench-verify deploy-check vet clean

## build: ./bin/lifeboat against the host's Ceph libraries
build:
	$(GO) build $(GOFLAGS_BUILD) -o bin/lifeboat ./cmd/lifeboat
	$(GO) build -tags '$(GO_TAGS)' -o bin/lbsim ./test/sim/cmd/lbsim
	$(GO) build -tags '$(GO_TAGS)' -o bin/lbcsi ./test/csidriver/cmd/lbcsi

## test: every test, against Ceph Pacific (the host's packages) and then Ceph Reef (a cached chroot)
test: test-pacific test-node test-reef

## test-pacific: vet, unit/integration, end-to-end and a bounded fuzz run against the host's Ceph
test-pacific: stack-up vet build
	LIFEBOAT_GO_TAGS='$(GO_TAGS)' $(GO) test -tags '$(GO_TAGS)' -count=1 -timeout 20m ./...
	LIFEBOAT_GO_TAGS='$(GO_TAGS)' $(GO) test -tags 'e2e $(GO_TAGS)' -count=1 -timeout 40m ./test/e2e/
	$(MAKE) fuzz

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet -tags '$(GO_TAGS)' ./...
	$(GO) vet -tags 'e2e $(GO_TAGS)' ./test/e2e/

## fuzz: every fuzz target for $(FUZZEXECS) inputs each (about two minutes in all): the handle decoder, and the decoders of what
## comes from S3 (config, manifest v1-v3, extents page, lock, chunk; seeds in objectstore/testdata/fuzz)
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $$(( $(FUZZEXECS) * 5 ))x -fuzzminimizetime $(FUZZMINIMIZE) ./rbd/handle/
	for f in FuzzConfig FuzzManifest FuzzPage FuzzLock FuzzChunk; do \
		$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZEXECS)x -fuzzminimizetime $(FUZZMINIMIZE) ./objectstore/ || exit 1; \
	done

## demo: start the stack, make a volume and Velero-style snapshots, resolve and verify them
demo: stack-up build
	test/demo.sh

## bench-verify: time verify of 200 snapshots and count Ceph connections
bench-verify: stack-up
	LIFEBOAT_GO_TAGS='$(GO_TAGS)' $(GO) test -tags 'e2e $(GO_TAGS)' -run '^$$' -bench Verify200 -benchtime 3x -timeout 30m ./test/e2e/

## deploy-check: apply deploy/ to the stack's API server; pod security, RBAC (the agent's own token), alerts vs metrics
deploy-check: stack-up
	LIFEBOAT_GO_TAGS='$(GO_TAGS)' $(GO) test -tags 'e2e $(GO_TAGS)' -count=1 -run '^TestDeploy$$' -timeout 10m ./test/e2e/

clean:
	rm -rf bin

# ---------------------------------------------------------------------------
# Local test stack (test/stack/): real Ceph, etcd + kube-apiserver, MinIO on
# 127.0.0.1. Override on the command line or in the environment, e.g.
#   make stack-up LIFEBOAT_STACK_DIR=/tmp/other-stack
# Ports: LIFEBOAT_CEPH_V2_PORT, LIFEBOAT_CEPH_V1_PORT, LIFEBOAT_ETCD_PORT,
# LIFEBOAT_ETCD_PEER_PORT, LIFEBOAT_KUBE_PORT, LIFEBOAT_MINIO_PORT,
# LIFEBOAT_MINIO_CONSOLE_PORT, LIFEBOAT_KCM_PORT, LIFEBOAT_VELERO_METRICS_PORT
# (environment). Tests read $(LIFEBOAT_STACK_DIR)/env.
# ---------------------------------------------------------------------------
LIFEBOAT_STACK_DIR ?= /tmp/lifeboat-stack
LIFEBOAT_CACHE_DIR ?= $(HOME)/.cache/lifeboat
export LIFEBOAT_STACK_DIR LIFEBOAT_CACHE_DIR

STACK_SCRIPTS := test/stack

.PHONY: stack-install stack-up stack-down stack-wipe

## stack-install: install apt packages and build/cache etcd, kube-apiserver, MinIO, kube-controller-manager, the CSI sidecars and Velero (slow once)
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

# ---------------------------------------------------------------------------
# Side-by-side benchmark (test/bench/): lifeboat vs kopia and restic (built once
# from the Go module proxy into $(LIFEBOAT_CACHE_DIR)/bin) on the stack's Ceph and
# MinIO. Report: $(LIFEBOAT_STACK_DIR)/bench/results.md, written by test/bench/report
# from the raw figures in measurements.tsv beside it. Quick run:
#   make bench BENCH_SIZE=256M
# More knobs (BENCH_TOOLS, BENCH_CHUNK_SIZES, BENCH_ENCRYPT, ...): test/bench/bench.sh.
# ---------------------------------------------------------------------------
BENCH_SIZE ?= 2G
export BENCH_SIZE

.PHONY: bench

## bench: time, stored bytes, restore check and peak memory of lifeboat, kopia and restic
bench: stack-up build
	test/bench/bench.sh

# ---------------------------------------------------------------------------
# Ceph Reef flavour (test/stack/reef.sh): a cached Debian trixie chroot with Ceph
# 18.2.x, a one-node Reef cluster started in it (127.0.0.1:13340/16829), and the
# host stack's kube-apiserver and MinIO. Env: $(LIFEBOAT_REEF_STACK_DIR)/env.
# The suites run inside the chroot, built against Reef's librbd. Part of
# `make test`, after test-pacific and test-node.
# ---------------------------------------------------------------------------
LIFEBOAT_REEF_STACK_DIR ?= /tmp/lifeboat-stack-reef
REEF_GO_TAGS ?= reef
# Tests of the real CSI path (our driver lbcsi, csi-provisioner, csi-snapshotter,
# Velero) talk to the host stack's Ceph through lbcsi, not to the Reef cluster:
# they run in test-pacific only (e2e: TestVelero*; test/sim: TestLivePath). The
# loopback check of the stack's listeners runs there too (the Reef flavour starts only Ceph).
REEF_SKIP ?= ^(TestVelero|TestLivePath|TestStackListensOnLoopbackOnly)
export LIFEBOAT_REEF_STACK_DIR
REEF := $(STACK_SCRIPTS)/reef.sh

.PHONY: reef-up test-reef bench-reef test-reef-down

## reef-up: build the Reef chroot (once) and start the Reef flavour of the stack
reef-up:
	$(REEF) up

## test-reef: vet, unit/integration and end-to-end tests against Ceph Reef
test-reef: reef-up
	LB_REEF_GO_TAGS='$(REEF_GO_TAGS)' $(REEF) exec $(GO) vet -tags '$(REEF_GO_TAGS)' ./...
	LB_REEF_GO_TAGS='$(REEF_GO_TAGS)' $(REEF) exec $(GO) vet -tags 'e2e $(REEF_GO_TAGS)' ./test/e2e/
	LB_REEF_GO_TAGS='$(REEF_GO_TAGS)' $(REEF) exec $(GO) test -tags '$(REEF_GO_TAGS)' -count=1 -timeout 20m -skip '$(REEF_SKIP)' ./...
	LB_REEF_GO_TAGS='$(REEF_GO_TAGS)' $(REEF) exec $(GO) test -tags 'e2e $(REEF_GO_TAGS)' -count=1 -timeout 40m -skip '$(REEF_SKIP)' ./test/e2e/

## bench-reef: make bench against Ceph Reef, where incrementals diff by snapshot id
bench-reef: reef-up
	test/bench/peers.sh
	LB_REEF_GO_TAGS='$(REEF_GO_TAGS)' $(REEF) exec $(GO) build -tags '$(REEF_GO_TAGS)' -o bin/reef/lifeboat ./cmd/lifeboat
	LB_REEF_GO_TAGS='$(REEF_GO_TAGS)' $(REEF) exec $(GO) build -tags '$(REEF_GO_TAGS)' -o bin/reef/lbsim ./test/sim/cmd/lbsim
	LIFEBOAT=$(CURDIR)/bin/reef/lifeboat LBSIM=$(CURDIR)/bin/reef/lbsim LB_REEF_GO_TAGS='$(REEF_GO_TAGS)' $(REEF) exec test/bench/bench.sh

## test-reef-down: stop the Reef cluster (the host stack and the cached chroot stay)
test-reef-down:
	$(REEF) down

include test/node/node.mk
