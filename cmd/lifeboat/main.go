// Command lifeboat makes Ceph RBD snapshots taken through Kubernetes CSI
// real backups: its admin CLI (resolve, verify, export, restore, backups,
// repo) and its agent (`lifeboat run`).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// Exit codes shared by every command: 0 all good, 1 the command worked and
// found problems, 2 it could not do its job (unreachable servers, bad
// credentials, bad flags).
const (
	exitOK       = 0
	exitProblems = 1
	exitError    = 2
)

// errProblems tells main to exit 1 after a command printed its findings.
var errProblems = errors.New("problems found")

// memoryLimit and gcPercent bound the Go heap unless GOMEMLIMIT and GOGC
// say otherwise: lifeboat's working set is a fixed number of chunk
// buffers, garbage turns over a chunk at a time, so without them the
// collector's slack, not the data, would set the RSS. Against GOGC=50,
// GOGC=25 cost no measurable time on the benchmark's export and restore
// and saved 10-15 MB of peak RSS: the heap is mostly big []byte
// buffers, which a collection need not scan.
const (
	memoryLimit = 64 << 20
	gcPercent   = 25
)

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errProblems):
		return exitProblems
	default:
		fmt.Fprintln(os.Stderr, "lifeboat:", err)
		return exitError
	}
}
