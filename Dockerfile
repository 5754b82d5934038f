# syntax=docker/dockerfile:1
#
# lifeboat's container image: `lifeboat run` (the agent, deploy/) and every
# CLI command. lifeboat links librbd/librados (go-ceph, cgo), so the binary
# is built against, and runs with, the Ceph libraries of one Debian release:
# trixie ships Ceph 18.2 Reef, whose go-ceph build tag is `reef`. Changing
# DEBIAN_RELEASE means changing CEPH_RELEASE to the release it ships.
#
# Supported Ceph releases (what decides the features is the librbd lifeboat
# is built against):
#   - Reef 18.2 and later librbd (this image): everything, including
#     incremental exports of CSI snapshots that read only what Ceph's diff
#     between the parent volume's trash snapshots reports (diff-by-id).
#   - A Pacific 16.2 librbd (`-tags pacific` on Debian 12): everything but
#     diff-by-id: incrementals of CSI snapshots read every allocated chunk
#     and upload only the changed ones (hash path); plain RBD snapshots
#     (`export --image`) diff by snapshot name on both.
# Tested (`make test`): a Pacific 16.2.15 build against a Pacific cluster,
# a Reef 18.2.7 build against a Reef cluster, and this image (Reef librbd)
# as a pod against the Pacific cluster.
#
# Built and tested here (`make image`, `make test-node`; test/node/README.md):
# podman builds this file unchanged and offline, from base images made with
# debootstrap and Go modules from the host's cache (GOPROXY=file://...,
# GOSUMDB=off), runs it as UID 65532 with a read-only root, no capabilities
# and no-new-privileges, then runs deploy/ with it as a real pod on a
# one-node kubelet (test/node/overlay).
#
#   docker build -t ghcr.io/lifeboat-backup/lifeboat:$(git describe --tags --always) \
#     --build-arg VERSION=$(git describe --tags --always --dirty) .

ARG GO_VERSION=1.26.8
ARG DEBIAN_RELEASE=trixie

FROM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS build
ARG CEPH_RELEASE=reef
# The golang image has gcc, libc6-dev and pkg-config; add Ceph's headers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends librbd-dev librados-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Where modules come from. Defaults are Go's; an offline build names a local
# copy of a module cache (test/node/image.sh: GOPROXY=file://..., GOSUMDB=off;
# go.sum still verifies every module).
ARG GOPROXY=https://proxy.golang.org,direct
ARG GOSUMDB=sum.golang.org
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 go build -trimpath -buildvcs=false -tags "${CEPH_RELEASE}" \
      -ldflags "-s -w -X main.version=${VERSION}" -o /out/lifeboat ./cmd/lifeboat \
 && /out/lifeboat version

FROM debian:${DEBIAN_RELEASE}-slim
# Only the runtime libraries (and CAs for S3 over TLS): no Ceph CLI, no shell tools.
RUN apt-get update \
 && apt-get install -y --no-install-recommends librbd1 librados2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# Below the apt step: a new version does not re-run apt.
ARG VERSION=dev
LABEL org.opencontainers.image.title="lifeboat" \
      org.opencontainers.image.description="Backups of Ceph RBD CSI snapshots to S3 that survive the loss of Ceph" \
      org.opencontainers.image.source="https://github.com/lifeboat-backup/lifeboat" \
      org.opencontainers.image.version="${VERSION}" \
      io.lifeboat.ceph-librbd="reef" \
      io.lifeboat.features="diff-by-id incrementals of CSI snapshots (Reef librbd)"
COPY --from=build /out/lifeboat /usr/local/bin/lifeboat
# Fails the build if a shared library is missing from this stage.
RUN ["/usr/local/bin/lifeboat", "version"]
# 65532: the conventional "nonroot" uid/gid (distroless); deploy/ runs as it too.
USER 65532:65532
ENV HOME=/tmp
ENTRYPOINT ["/usr/local/bin/lifeboat"]
CMD ["--help"]
