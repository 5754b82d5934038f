package sim

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// DefaultStackDir is where test/stack writes its state when
// $LIFEBOAT_STACK_DIR is unset.
const DefaultStackDir = "/tmp/lifeboat-stack"

// Env is the local stack's env file: KEY=value lines written by
// `make stack-up` (KUBECONFIG, CEPH_CONF, CEPH_FSID, CEPH_MON_HOST_V1,
// CEPH_MON_HOST_V2, CEPH_CSI_USER, CEPH_CSI_KEY, S3_ENDPOINT,
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, KUBE_APISERVER).
type Env map[string]string

// StackDir returns $LIFEBOAT_STACK_DIR or DefaultStackDir.
func StackDir() string {
	if d := os.Getenv("LIFEBOAT_STACK_DIR"); d != "" {
		return d
	}
	return DefaultStackDir
}

// EnvPath is the path of the stack's env file.
func EnvPath() string { return filepath.Join(StackDir(), "env") }

// LoadEnv reads $LIFEBOAT_STACK_DIR/env (default /tmp/lifeboat-stack/env).
func LoadEnv() (Env, error) { return LoadEnvFile(EnvPath()) }

// LoadEnvFile parses KEY=value lines. Blank lines, '#' comments and a leading
// "export " are ignored; values may be wrapped in single or double quotes.
func LoadEnvFile(path string) (Env, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := Env{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: not KEY=value", path, n)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		env[strings.TrimSpace(k)] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return env, nil
}

// Get returns the value of key ("" when absent).
func (e Env) Get(key string) string { return e[key] }

// Require returns an error naming every key of keys that is absent or empty.
func (e Env) Require(keys ...string) error {
	var missing []string
	for _, k := range keys {
		if e[k] == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("stack env lacks %s", strings.Join(missing, ", "))
	}
	return nil
}

// Monitors returns the monitor addresses ceph-csi's config should list:
// CEPH_MON_HOST_V2 then CEPH_MON_HOST_V1, each with its protocol prefix
// (v2:ip:port, v1:ip:port). Without the prefix librados guesses the protocol
// from the port (3300 v2, 6789 v1) and, on the stack's other ports, guesses
// wrong and logs it. Values may themselves be comma separated.
func (e Env) Monitors() []string {
	var mons []string
	for _, k := range []struct{ key, proto string }{{"CEPH_MON_HOST_V2", "v2:"}, {"CEPH_MON_HOST_V1", "v1:"}} {
		for _, m := range strings.Split(e[k.key], ",") {
			if m = strings.TrimSpace(m); m != "" {
				if !strings.HasPrefix(m, "v1:") && !strings.HasPrefix(m, "v2:") {
					m = k.proto + m
				}
				mons = append(mons, m)
			}
		}
	}
	return mons
}

// Options returns DefaultOptions with CephConf and Kubeconfig from the env.
func (e Env) Options() Options {
	o := DefaultOptions()
	o.CephConf = e["CEPH_CONF"]
	o.Kubeconfig = e["KUBECONFIG"]
	if e["CSI_ENDPOINT"] != "" {
		o.LiveDriver, o.CSIConfig = e["CSI_DRIVER"], e["CSI_CONFIG"]
	}
	return o
}

// Reachable dials the first monitor and the Kubernetes API server (when the
// env names them) so that a stale env file of a stopped stack is noticed.
func (e Env) Reachable(timeout time.Duration) error {
	var addrs []string
	if m := strings.Split(e["CEPH_MON_HOST_V2"], ",")[0]; m != "" {
		addrs = append(addrs, strings.TrimPrefix(strings.TrimPrefix(m, "v2:"), "v1:"))
	}
	if a := e["KUBE_APISERVER"]; a != "" {
		if u, err := url.Parse(a); err == nil && u.Host != "" {
			h := u.Host
			if u.Port() == "" {
				h = net.JoinHostPort(u.Hostname(), "443")
			}
			addrs = append(addrs, h)
		}
	}
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, timeout)
		if err != nil {
			return err
		}
		c.Close()
	}
	return nil
}

// RequireEnv loads the stack env for a test. When the env file is missing,
// incomplete or its servers are not answering, the test fails if CI=true (a
// missing stack is a failure under CI) and is skipped otherwise; either way
// the message says to run `make stack-up`.
func RequireEnv(t testing.TB) Env {
	t.Helper()
	env, err := LoadEnv()
	if err == nil {
		err = env.Require("CEPH_CONF", "KUBECONFIG")
	}
	if err == nil {
		err = env.Reachable(3 * time.Second)
	}
	if err != nil {
		msg := fmt.Sprintf("local stack not available (%v): run `make stack-up` (env file %s)", err, EnvPath())
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return env
}
