#!/usr/bin/env bash
# Builds lifeboat's container image from the repository's Dockerfile, offline:
# no registry is reachable, so the two base images it names are made here from
# Debian packages and cached, and Go modules come from the host's module cache.
#   image.sh build   base images (cached) + `podman build` + a run as the Deployment runs it
#   image.sh bases   only the base images
#   image.sh check   only the run check of the built image
# Prints the image's name on stdout (last line) and its size and contents on stderr.
#
# - debian:trixie-slim (the runtime stage): `debootstrap --variant=minbase trixie`
#   from the host's Debian mirror, imported with podman. The rootfs tarball is
#   cached in $LIFEBOAT_CACHE_DIR/image/, keyed by suite, script version and package list.
# - golang:<GO_VERSION>-trixie (the build stage): that rootfs + gcc, libc6-dev,
#   pkg-config + the host's Go toolchain, which must be the version the Dockerfile names.
# - Modules: the host's `go env GOMODCACHE`/cache/download is mounted read-only into the
#   build and named by GOPROXY=file://; GOSUMDB=off, go.sum still verifies every module.
#   (TLS to the module proxy is not trusted inside build containers, and no CA is baked
#   into an image.) The build cache persists in buildah's cache mount between builds.
# - podman runs with test/node/containers.conf (CONTAINERS_CONF): runc, not crun, which
#   refuses this host's mixed cgroup v1/v2 layout.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=../stack/lib.sh
source "$REPO/test/stack/lib.sh"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

LB_IMAGE_BASE_VERSION=1 # bump when the way the bases are made changes
SUITE=trixie
BUILDER_PACKAGES=(gcc libc6-dev pkg-config)
GO_VERSION=$(sed -n 's/^ARG GO_VERSION=//p' "$REPO/Dockerfile")
[[ -n $GO_VERSION ]] || die "no ARG GO_VERSION= in $REPO/Dockerfile"
BASE_KEY=$SUITE-v$LB_IMAGE_BASE_VERSION
BUILDER_KEY=$BASE_KEY-go$GO_VERSION-$(printf '%s\n' "${BUILDER_PACKAGES[@]}" | sha256sum | cut -c1-8)
ROOTFS_TAR=$LIFEBOAT_CACHE_DIR/image/debian-$BASE_KEY-minbase.tar
SLIM=localhost/debian:$SUITE-slim
BUILDER=localhost/golang:$GO_VERSION-$SUITE

# image_key NAME: the lifeboat.base-key label of a local image ("" if absent).
image_key() { podman image inspect --format '{{index .Labels "lifeboat.base-key"}}' "$1" 2>/dev/null || true; }

rootfs_tar() {
  [[ -f $ROOTFS_TAR ]] && return 0
  ensure_root_tools
  local tmp=$LIFEBOAT_CACHE_DIR/image/rootfs-$BASE_KEY.partial m t0=$SECONDS
  m=$(debian_mirror)
  mkdir -p "$(dirname "$tmp")"
  if [[ -e $tmp ]]; then mounts_clean_or_die "$tmp"; rm -rf --one-file-system -- "$tmp"; fi
  log "image: debootstrap --variant=minbase $SUITE from $m (one-time, ~1 min)"
  # Its own mount namespace: the /proc and /sys debootstrap mounts die with it.
  unshare --mount -- debootstrap --variant=minbase "$SUITE" "$tmp" "$m" >"$tmp.log" 2>&1 ||
    { tail -n 30 "$tmp.log" >&2; die "debootstrap failed (log: $tmp.log)"; }
  # What docker's debian images do: no apt caches, no service starts.
  rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/*.bin "$tmp"/var/cache/apt/archives/*.deb
  printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d" && chmod 755 "$tmp/usr/sbin/policy-rc.d"
  tar --numeric-owner --xattrs -C "$tmp" -cf "$ROOTFS_TAR.tmp" .
  mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  rm -rf --one-file-system -- "$tmp" "$tmp.log"
  log "image: rootfs cached in $((SECONDS - t0))s: $ROOTFS_TAR"
}

base_slim() {
  [[ $(image_key "$SLIM") == "$BASE_KEY" ]] && return 0
  rootfs_tar
  log "image: importing $SLIM"
  quiet podman import --change "LABEL lifeboat.base-key=$BASE_KEY" \
    --change 'CMD ["bash"]' "$ROOTFS_TAR" "$SLIM"
  quiet podman tag "$SLIM" "localhost/debian:$SUITE"
}

base_builder() {
  [[ $(image_key "$BUILDER") == "$BUILDER_KEY" ]] && return 0
  local goroot have ctx
  goroot=$(go env GOROOT) have=$(go env GOVERSION)
  [[ $have == "go$GO_VERSION" ]] ||
    die "the Dockerfile builds with Go $GO_VERSION but the host has $have: install go$GO_VERSION (the builder image copies the host's toolchain)"
  log "image: building $BUILDER (trixie + ${BUILDER_PACKAGES[*]} + the host's $have)"
  ctx=$(mktemp -d /tmp/lifeboat-builder.XXXXXX)
  # The official golang image's layout: GOROOT /usr/local/go, GOPATH /go.
  cat >"$ctx/Containerfile" <<EOF
FROM $SLIM
RUN apt-get update && apt-get install -y --no-install-recommends ${BUILDER_PACKAGES[*]} \\
 && rm -rf /var/lib/apt/lists/*
COPY go /usr/local/go
ENV GOLANG_VERSION=$GO_VERSION GOPATH=/go GOTOOLCHAIN=local \\
    PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /go
LABEL lifeboat.base-key=$BUILDER_KEY
EOF
  # Only the toolchain, not its test data or the host's caches.
  tar -C "$(dirname "$goroot")" --exclude='go/test' --exclude='go/.git' -cf - "$(basename "$goroot")" |
    tar -C "$ctx" -xf -
  [[ $(basename "$goroot") == go ]] || mv "$ctx/$(basename "$goroot")" "$ctx/go"
  local rc=0
  nice -n 15 podman build --pull=never --network host -t "$BUILDER" "$ctx" >"$ctx.log" 2>&1 || rc=$?
  rm -rf "$ctx"
  ((rc == 0)) || { tail -n 30 "$ctx.log" >&2; die "building $BUILDER failed (log: $ctx.log)"; }
  rm -f "$ctx.log"
  # The Dockerfile names docker.io's images; these local ones stand in for them.
  quiet podman tag "$BUILDER" "docker.io/library/golang:$GO_VERSION-$SUITE"
}

bases() {
  base_slim
  quiet podman tag "$SLIM" "docker.io/library/debian:$SUITE-slim"
  base_builder
}

build() {
  local version gomod t0=$SECONDS
  version=${VERSION:-$(git -C "$REPO" describe --tags --always --dirty 2>/dev/null || echo dev)}
  gomod=$(go env GOMODCACHE)
  # Every module the build needs, in the host's cache (a no-op when it has them).
  (cd "$REPO" && GOFLAGS=-mod=mod go mod download)
  log "image: podman build $LB_IMAGE (version $version; cold ~20 min on 2 busy cores, warm ~10 s to 1 min)"
  nice -n 15 podman build --pull=never --network host \
    --volume "$gomod/cache/download:/goproxy:ro" \
    --build-arg GOPROXY=file:///goproxy --build-arg GOSUMDB=off \
    --build-arg VERSION="$version" \
    -t "$LB_IMAGE" -f "$REPO/Dockerfile" "$REPO" >"$LB_NODE_LOGS/image-build.log" 2>&1 ||
    { tail -n 40 "$LB_NODE_LOGS/image-build.log" >&2; die "podman build failed (log: $LB_NODE_LOGS/image-build.log)"; }
  log "image: built in $((SECONDS - t0))s"
}

# check: run the image as deploy/deployment.yaml runs it (UID 65532, read-only root,
# no capabilities, no privilege escalation, no network) and require Reef's librbd.
check() {
  local out size
  out=$(podman run --rm --read-only --cap-drop ALL --security-opt no-new-privileges \
    --user 65532:65532 --network none "$LB_IMAGE" version) ||
    die "podman run $LB_IMAGE version failed: $out"
  [[ $out == *"librbd 1.18."*"built for Ceph reef"* ]] ||
    die "the image does not run with Reef's librbd (1.18.x): $out"
  size=$(podman image inspect --format '{{.Size}}' "$LB_IMAGE")
  log "image: $LB_IMAGE, $((size / 1000000)) MB: $out"
  log "image: layers: $(podman history --format '{{.Size}} {{.CreatedBy}}' "$LB_IMAGE" |
    awk '!/^0 B / { $0 = substr($0, 1, 90); print }' | paste -sd'|' - | sed 's/|/; /g')"
}

main() {
  [[ $EUID -eq 0 ]] || die "image.sh needs root (podman's storage is /var/lib/containers)"
  mkdir -p "$LB_NODE_LOGS"
  case ${1:-build} in
    bases) with_lock image-bases bases ;;
    build) with_lock image-bases bases; with_lock image-build build; check ;;
    check) check ;;
    *) die "usage: $0 build | bases | check" ;;
  esac
  echo "$LB_IMAGE"
}

main "$@"
