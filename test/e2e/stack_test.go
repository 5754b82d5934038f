//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestStackListensOnLoopbackOnly: every TCP socket a process of the stack
// (pid files under $LIFEBOAT_STACK_DIR/run and ceph/run) or one of its
// children listens on is bound to 127.0.0.1 or ::1, never to all
// interfaces — controller-runtime's default :8080 in Velero, for one.
func TestStackListensOnLoopbackOnly(t *testing.T) {
	dir := env.Get("LIFEBOAT_STACK_DIR")
	pidFiles, _ := filepath.Glob(filepath.Join(dir, "run", "*.pid"))
	cephPids, _ := filepath.Glob(filepath.Join(dir, "ceph", "run", "*.pid"))
	pids := map[int]string{}
	for _, f := range append(pidFiles, cephPids...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			pids[pid] = filepath.Base(f)
		}
	}
	for pid, name := range pids { // the children too (Velero's plugins)
		for _, c := range childrenOf(pid) {
			pids[c] = name + " child"
		}
	}
	if len(pids) < 5 {
		t.Fatalf("only %d stack processes found under %s: is the stack up?", len(pids), dir)
	}
	listening := listeners(t)
	checked := 0
	for pid, name := range pids {
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			link, err := os.Readlink(fd)
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			addr, ok := listening[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")]
			if !ok {
				continue
			}
			checked++
			if !addr.loopback {
				t.Errorf("%s (pid %d) listens on %s", name, pid, addr.text)
			}
		}
	}
	if checked < 5 {
		t.Errorf("only %d listening sockets found for %d stack processes", checked, len(pids))
	}
	t.Logf("%d listening sockets of %d processes, all on loopback", checked, len(pids))
}

type listenAddr struct {
	text     string
	loopback bool
}

// listeners maps socket inodes to the local address of every listening TCP
// socket (/proc/net/tcp and tcp6).
func listeners(t *testing.T) map[string]listenAddr {
	out := map[string]listenAddr{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" { // 0A: LISTEN
				continue
			}
			ip, _, _ := strings.Cut(fs[1], ":")
			out[fs[9]] = listenAddr{text: fs[1] + " (" + f + ")",
				loopback: ip == "0100007F" || ip == "00000000000000000000000001000000"}
		}
	}
	return out
}

// childrenOf lists the pids whose parent is pid.
func childrenOf(pid int) []int {
	var kids []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		fs := strings.Fields(rest)
		if len(fs) > 1 && fs[1] == strconv.Itoa(pid) {
			if c, err := strconv.Atoi(filepath.Base(filepath.Dir(s))); err == nil {
				kids = append(kids, c)
			}
		}
	}
	return kids
}
