//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// cephLogLine is the shape of a line of Ceph's own log: a timestamp, a
// thread id and a level, e.g. "2026-12-07T19:40:01.123+0000 7f3a2 -1 --2- ...".
var cephLogLine = regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+[+-]\d{4} [0-9a-f]+ +-?\d+ `)

// TestLibradosWritesNoLog: librados' own log reaches neither lifeboat's
// stderr nor a file. The monitor is given as ceph-csi configs often give
// it, without a v1:/v2: prefix, on the stack's v1 port (not 6789): librados
// then tries msgr2 there first and logs "_handle_peer_banner ... is using
// msgr V1 protocol" as an error. With --ceph-conf, a ceph.conf that names
// a client log file and admin socket: the agent's root filesystem is read
// only, so neither may be created.
func TestLibradosWritesNoLog(t *testing.T) {
	v1 := strings.TrimPrefix(env.Get("CEPH_MON_HOST_V1"), "v1:")
	if strings.HasSuffix(v1, ":6789") || v1 == "" {
		t.Fatalf("CEPH_MON_HOST_V1=%q: the test needs the stack's v1 monitor on a port other than 6789", v1)
	}
	w := newWorldWith(t, env.Get("CEPH_CONF"), []string{v1}, env.Get("CEPH_CSI_KEY"))
	s := w.snapshot(w.volume("data", 32*MiB), "nightly")

	r := w.run("verify", s.ContentName)
	if r.code != 0 {
		t.Fatalf("verify through monitor %s: exit %d: %s", v1, r.code, r.stderr)
	}
	expectNoCephLog(t, r.stderr)

	dir := t.TempDir()
	conf, err := os.ReadFile(env.Get("CEPH_CONF"))
	if err != nil {
		t.Fatal(err)
	}
	conf = regexp.MustCompile(`(?m)^mon host = .*$`).ReplaceAll(conf, []byte("mon host = "+v1))
	conf = append(conf, []byte("\n[client]\nlog file = "+dir+"/client.log\nadmin socket = "+dir+"/client.asok\n")...)
	confFile := filepath.Join(dir, "ceph.conf")
	writeFile(t, confFile, string(conf))
	r = w.run("verify", s.ContentName, "--ceph-conf", confFile)
	if r.code != 0 {
		t.Fatalf("verify with --ceph-conf %s: exit %d: %s", confFile, r.code, r.stderr)
	}
	expectNoCephLog(t, r.stderr)
	for _, f := range []string{"client.log", "client.asok"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("librados created %s (named in ceph.conf's [client])", f)
		}
	}
}

func expectNoCephLog(t *testing.T, stderr string) {
	t.Helper()
	if cephLogLine.MatchString(stderr) || strings.Contains(stderr, "_handle_peer_banner") {
		t.Errorf("librados logged on lifeboat's stderr:\n%s", stderr)
	}
}
