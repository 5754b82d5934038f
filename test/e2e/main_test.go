//go:build e2e

// Package e2e runs the lifeboat binary against the real local stack (Ceph,
// kube-apiserver with the snapshot CRDs, MinIO) started by `make stack-up`.
// A missing stack is a failure, never a skip: these tests only build with
// the e2e tag, which `make test` sets after starting the stack.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/lifeboat-backup/lifeboat/test/sim"
)

var (
	env      sim.Env
	lifeboat string // path of the binary under test
)

func TestMain(m *testing.M) {
	var err error
	env, err = sim.LoadEnv()
	if err == nil {
		err = env.Reachable(5 * time.Second)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: the local stack is not up (%v): run `make stack-up` first\n", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "lifeboat-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lifeboat = filepath.Join(dir, "lifeboat")
	if err := build(lifeboat); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building lifeboat:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles the CLI with the tags of the stack's Ceph release, or
// $LIFEBOAT_GO_TAGS when set (the Makefile sets it).
func build(out string) error {
	tags := os.Getenv("LIFEBOAT_GO_TAGS")
	if tags == "" {
		tags = env.Get("LIFEBOAT_CEPH_RELEASE")
	}
	cmd := exec.Command("go", "build", "-tags", tags, "-o", out, "./cmd/lifeboat")
	cmd.Dir = "../.."
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

// world is an isolated ceph-csi deployment inside the shared stack: its own
// clusterID, RADOS namespace and CSI driver name, so that listing all
// snapshots or orphans in one test never sees another test's objects.
type world struct {
	t      testing.TB
	sim    *sim.Sim
	id     string
	driver string
}

var rookMu sync.Mutex // InstallRook read-modify-writes one ConfigMap

func newWorld(t testing.TB) *world {
	t.Helper()
	return newWorldWith(t, env.Get("CEPH_CONF"), env.Monitors(), env.Get("CEPH_CSI_KEY"))
}

// newWorldWith makes a world on the Ceph cluster of conf, whose monitors
// and CSI key go into ceph-csi's config and Secret.
func newWorldWith(t testing.TB, conf string, monitors []string, csiKey string) *world {
	t.Helper()
	id := "t" + strings.ReplaceAll(uuid.NewString(), "-", "")[:10]
	opts := env.Options()
	opts.CephConf = conf
	opts.ClusterID = id
	opts.RadosNamespace = id
	opts.Driver = id + ".rbd.csi.ceph.com"
	opts.StorageClass = id
	opts.SnapshotClass = id
	ctx := context.Background()
	s, err := sim.New(ctx, opts)
	if err != nil {
		t.Fatalf("simulator on %s: %v", conf, err)
	}
	t.Cleanup(s.Close)
	rookMu.Lock()
	err = s.InstallRook(ctx, monitors, env.Get("CEPH_CSI_USER"), csiKey)
	rookMu.Unlock()
	if err != nil {
		t.Fatalf("installing Rook objects: %v", err)
	}
	w := &world{t: t, sim: s, id: id, driver: opts.Driver}
	t.Cleanup(w.cleanup)
	return w
}

// cleanup removes the world's Kubernetes objects and its clusterID from
// ceph-csi's config, so a later `lifeboat verify` of the whole stack (make
// demo) does not see them, and its images: the memstore OSD is small.
func (w *world) cleanup() {
	defer w.purgeImages()
	ctx := context.Background()
	if err := w.sim.PurgeObjects(ctx, w.id); err != nil {
		w.t.Logf("cleanup: %v", err)
	}
	_ = w.sim.DeleteNamespace(ctx, w.id)
	rookMu.Lock()
	_ = w.sim.UninstallRook(ctx)
	rookMu.Unlock()
	_ = w.sim.DeleteClasses(ctx)
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// run runs lifeboat against the stack's API server, scoped to this world's
// driver.
func (w *world) run(args ...string) result {
	w.t.Helper()
	base := []string{"--kubeconfig", env.Get("KUBECONFIG"), "--driver-suffix", w.driver}
	return runLifeboat(w.t, append(base, args...)...)
}

func runLifeboat(t testing.TB, args ...string) result {
	t.Helper()
	return runEnv(t, nil, args...)
}

// ceph runs a Ceph CLI (rbd, rados, ceph) as admin on the stack's cluster,
// in the world's RADOS namespace when ns is true.
func (w *world) ceph(tool string, args ...string) string {
	w.t.Helper()
	cmd := exec.Command(tool, append([]string{"-c", env.Get("CEPH_CONF")}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		w.t.Fatalf("%s %v: %v\n%s", tool, args, err, out)
	}
	return string(out)
}

// spec is pool/namespace/image in this world.
func (w *world) spec(image string) string {
	return w.sim.Options().Pool + "/" + w.id + "/" + image
}

// purgeImages removes every image of the world's RADOS namespace, trash
// included. Clones must go before their parents, so it sweeps a few times.
func (w *world) purgeImages() {
	if w.sim.Options().CephConf != env.Get("CEPH_CONF") {
		return // a test's own cluster is wiped whole (and may be gone already)
	}
	pool := w.sim.Options().Pool
	rbd := func(args ...string) string {
		out, _ := exec.Command("rbd", append([]string{"-c", env.Get("CEPH_CONF")}, args...)...).Output()
		return string(out)
	}
	in := []string{"-p", pool, "--namespace", w.id}
	for pass := 0; pass < 6; pass++ {
		images := strings.Fields(rbd(append([]string{"ls"}, in...)...))
		if len(images) == 0 && strings.TrimSpace(rbd(append([]string{"trash", "ls"}, in...)...)) == "" {
			break
		}
		for _, img := range images {
			spec := pool + "/" + w.id + "/" + img
			var snaps []struct {
				Name      string `json:"name"`
				Protected string `json:"protected"`
			}
			_ = json.Unmarshal([]byte(rbd("snap", "ls", "--format", "json", spec)), &snaps)
			for _, sn := range snaps {
				if sn.Protected == "true" { // a clone v1's parent snapshot
					rbd("snap", "unprotect", spec+"@"+sn.Name)
				}
			}
			rbd("snap", "purge", "--no-progress", spec)
			rbd("rm", "--no-progress", spec)
		}
		rbd(append([]string{"trash", "purge", "--no-progress"}, in...)...)
	}
	rbd("namespace", "remove", pool+"/"+w.id)
}
