#!/usr/bin/env bash
# Builds the backup tools the benchmark compares lifeboat with, from the Go module
# proxy, into $LIFEBOAT_CACHE_DIR/bin/ keyed by version:
#   restic-<v>  github.com/restic/restic/cmd/restic
#   kopia-<v>   github.com/kopia/kopia (the engine of Velero's data mover)
# Idempotent (a built binary is never rebuilt) and serialized by a lock per tool, so
# bench.sh can start it in the background early and wait for it later.
#
#   test/bench/peers.sh [restic|kopia]...   (default: both)
#   test/bench/peers.sh --print-paths       print RESTIC_BIN=... KOPIA_BIN=... and exit
set -euo pipefail
# shellcheck source=../stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../stack/lib.sh"

LB_RESTIC_VERSION=${LB_RESTIC_VERSION:-v0.18.1}
LB_KOPIA_VERSION=${LB_KOPIA_VERSION:-v0.22.3}
LB_RESTIC_BIN=$LIFEBOAT_CACHE_DIR/bin/restic-$LB_RESTIC_VERSION
LB_KOPIA_BIN=$LIFEBOAT_CACHE_DIR/bin/kopia-$LB_KOPIA_VERSION

# Wrapper modules live in the cache, never in the repo; no go.work or vendor dir.
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0

build_restic() {
  [[ -x $LB_RESTIC_BIN ]] && return 0
  command -v go >/dev/null || die "Go is needed to build restic"
  log "building restic $LB_RESTIC_VERSION from the Go module proxy (one-time, ~1-2 min)"
  local src; src=$(fresh_src "restic-$LB_RESTIC_VERSION")
  cd "$src"
  # restic's main imports its own internal packages: build it as a dependency
  # of a wrapper module (keeps restic's go.mod versions via go get).
  printf 'package tools\n\nimport _ "github.com/restic/restic/cmd/restic"\n' >tools.go
  logged "$src" "restic: go mod init" go mod init lifeboat.local/restic
  logged "$src" "restic: go get" go get "github.com/restic/restic@$LB_RESTIC_VERSION"
  logged "$src" "restic: go mod tidy" go mod tidy
  logged "$src" "restic build" go build -trimpath -ldflags "-s -w" -o "$LB_RESTIC_BIN.tmp" \
    github.com/restic/restic/cmd/restic
  mv "$LB_RESTIC_BIN.tmp" "$LB_RESTIC_BIN"
  log "restic: $("$LB_RESTIC_BIN" version)"
}

build_kopia() {
  [[ -x $LB_KOPIA_BIN ]] && return 0
  command -v go >/dev/null || die "Go is needed to build kopia"
  log "building kopia $LB_KOPIA_VERSION from the Go module proxy (one-time, ~5-8 min on 2 cores)"
  local src; src=$(fresh_src "kopia-$LB_KOPIA_VERSION")
  cd "$src"
  # kopia's own main imports internal/logfile, which a foreign module may not
  # import; this main is the same minus file logging (none is wanted here).
  cat >main.go <<'GO'
package main

import (
	"os"

	"github.com/alecthomas/kingpin/v2"

	"github.com/kopia/kopia/cli"
	"github.com/kopia/kopia/repo"
)

func main() {
	app := cli.NewApp()
	kp := kingpin.New("kopia", "Kopia - Fast And Secure Open-Source Backup")
	kp.Version(repo.BuildVersion + " build: " + repo.BuildInfo + " from: " + repo.BuildGitHubRepo)
	kp.ErrorWriter(os.Stderr)
	kp.UsageWriter(os.Stdout)
	app.Attach(kp)
	kingpin.MustParse(kp.Parse(os.Args[1:]))
}
GO
  logged "$src" "kopia: go mod init" go mod init lifeboat.local/kopia
  logged "$src" "kopia: go get" go get "github.com/kopia/kopia@$LB_KOPIA_VERSION"
  logged "$src" "kopia: go mod tidy" go mod tidy
  logged "$src" "kopia build" go build -trimpath -o "$LB_KOPIA_BIN.tmp" \
    -ldflags "-s -w -X github.com/kopia/kopia/repo.BuildVersion=${LB_KOPIA_VERSION#v}" .
  mv "$LB_KOPIA_BIN.tmp" "$LB_KOPIA_BIN"
  log "kopia: $("$LB_KOPIA_BIN" --version)"
}

main() {
  if [[ ${1:-} == --print-paths ]]; then
    printf 'RESTIC_BIN=%s\nKOPIA_BIN=%s\n' "$LB_RESTIC_BIN" "$LB_KOPIA_BIN"
    return 0
  fi
  local tools=("$@")
  ((${#tools[@]})) || tools=(restic kopia)
  mkdir -p "$LIFEBOAT_CACHE_DIR/bin"
  local t
  for t in "${tools[@]}"; do
    case $t in
      restic) with_lock restic build_restic ;;
      kopia) with_lock kopia build_kopia ;;
      *) die "unknown peer '$t' (restic, kopia)" ;;
    esac
  done
  log "peers: ok (${tools[*]})"
}

main "$@"
