//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lifeboat-backup/lifeboat/test/sim"
)

// outageSetup is a world, the deployed ServiceAccount's kubeconfig, a MinIO
// of the test's own with a repository in bucket "agent", and an agent
// config on it.
func outageSetup(t *testing.T) (w *world, kc string, m *ownMinIO, config string) {
	w = newWorld(t)
	kc = saKubeconfig(t, w)
	m = startMinIO(t)
	m.initRepo("agent")
	config = filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, config, fmt.Sprintf("s3: {endpoint: %q, bucket: agent}\nagent:\n  workers: 2\n  verifyInterval: 2s\n", m.endpoint()))
	return w, kc, m, config
}

// agentOutage is how long S3 stays down under the agent.
const agentOutage = 2 * time.Minute

// TestAgentRidesThroughS3Outage: with the agent's MinIO down for two
// minutes while snapshots are taken, no snapshot is marked Failed,
// lifeboat_objectstore_up is 0 while it is down and an Event says so; once
// it is back every pending snapshot is exported, each exactly once.
func TestAgentRidesThroughS3Outage(t *testing.T) {
	w, kc, m, config := outageSetup(t)
	a := startAgentWith(t, m.env(), w, kc, config, "outage", "--log-level", "info")
	phase := func(s *sim.Snapshot) string { return w.annotations(s.ContentName)["lifeboat.io/phase"] }
	metric := func(name string) float64 {
		mf, err := a.scrape()
		if err != nil {
			return -2
		}
		return value(mf, name)
	}
	vol := w.volume("app", 16*MiB)
	first := w.snapshot(vol, "before")
	waitFor(t, "the first snapshot to be exported", 90*time.Second, func() bool { return phase(first) == "Exported" }, a)

	m.kill()
	down := time.Now()
	var pending []*sim.Snapshot
	for i := range 2 {
		if err := vol.Fill(context.Background(), []sim.Region{{Off: 0, Len: 2 * MiB, Kind: sim.Random}}, int64(50+i)); err != nil {
			t.Fatal(err)
		}
		pending = append(pending, w.snapshot(vol, fmt.Sprintf("during-%d", i)))
	}
	waitFor(t, "lifeboat_objectstore_up 0", 60*time.Second, func() bool { return metric("lifeboat_objectstore_up") == 0 }, a)
	for time.Since(down) < agentOutage {
		for _, s := range pending {
			if p := phase(s); p == "Failed" {
				t.Fatalf("snapshot %s marked Failed during the outage: %s", s.ContentName, w.annotations(s.ContentName)["lifeboat.io/error"])
			}
		}
		if a.exited.Load() {
			t.Fatalf("the agent exited during the outage:\n%s", a.log())
		}
		time.Sleep(time.Second)
	}
	m.start()
	back := time.Now()
	for _, s := range pending {
		waitFor(t, "a pending snapshot to be exported after the outage", 3*time.Minute, func() bool { return phase(s) == "Exported" }, a)
	}
	t.Logf("S3 down for %v; every pending snapshot exported %v after it came back",
		back.Sub(down).Round(time.Second), time.Since(back).Round(time.Second))
	waitFor(t, "lifeboat_objectstore_up 1", 10*time.Second, func() bool { return metric("lifeboat_objectstore_up") == 1 }, a)
	mf, err := a.scrape()
	if err != nil {
		t.Fatal(err)
	}
	if got := value(mf, "lifeboat_exports_total", "result", "success"); got != 3 {
		t.Errorf("lifeboat_exports_total{success} = %v, want 3", got)
	}
	r := runEnv(t, m.env(), append([]string{"backups", "list", "-o", "json"}, m.repoFlags("agent")...)...)
	var list []summary
	mustJSON(t, r.stdout, &list)
	per := map[string]int{}
	for _, b := range list {
		per[b.Source["snapshotHandle"]]++
	}
	for _, s := range append([]*sim.Snapshot{first}, pending...) {
		if per[s.Handle] != 1 {
			t.Errorf("snapshot %s has %d backups, want exactly 1", s.ContentName, per[s.Handle])
		}
	}
	events, err := w.sim.Kube.CoreV1().Events("").List(context.Background(), metav1.ListOptions{FieldSelector: "reason=ObjectStoreUnavailable"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range events.Items {
		for _, s := range pending {
			if e.InvolvedObject.Name == s.ContentName && strings.Contains(e.Message, m.addr) {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("no ObjectStoreUnavailable Event naming %s on a pending snapshot", m.addr)
	}
}

// TestAgentStartsDuringS3Outage: an agent (re)started while S3 is down
// waits for it instead of exiting (a pod would crash-loop): it stays up,
// /readyz fails and lifeboat_objectstore_up is 0; once S3 is back it opens
// the repository and exports. A wrong bucket is still an error at once.
func TestAgentStartsDuringS3Outage(t *testing.T) {
	w, kc, m, config := outageSetup(t)
	snap := w.snapshot(w.volume("app", 16*MiB), "nightly")

	m.kill()
	a := startAgentWith(t, m.env(), w, kc, config, "start-in-outage", "--log-level", "info")
	waitFor(t, "lifeboat_objectstore_up 0 while S3 is down", 30*time.Second, func() bool {
		mf, err := a.scrape()
		return err == nil && value(mf, "lifeboat_objectstore_up") == 0
	}, a)
	time.Sleep(10 * time.Second)
	if a.exited.Load() {
		t.Fatalf("the agent exited while S3 was down:\n%s", a.log())
	}
	if resp, err := http.Get("http://" + a.metrics + "/readyz"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz while S3 is down: %v %v, want 503", resp, err)
	} else {
		resp.Body.Close()
	}
	m.start()
	waitFor(t, "the snapshot to be exported once S3 is back", 2*time.Minute, func() bool {
		return w.annotations(snap.ContentName)["lifeboat.io/phase"] == "Exported"
	}, a)

	// A bucket that does not exist is a configuration error: exit 2 now.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	writeFile(t, bad, fmt.Sprintf("s3: {endpoint: %q, bucket: no-such-bucket}\n", m.endpoint()))
	cmd := exec.Command(lifeboat, "run", "--config", bad, "--kubeconfig", kc, "--driver-suffix", w.driver, "--metrics-address", freePort(t))
	cmd.Env = append(os.Environ(), m.env()...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "no-such-bucket") {
		t.Errorf("run with a missing bucket: %v, want exit 2 naming it:\n%s", err, out)
	}
}

// TestExportRidesThroughCephFaults: on a cluster of the test's own, an
// export whose OSD is paused for longer than --ceph-timeout, and one whose
// monitor is killed and restarted, both mid-way, complete on their first
// run and restore bit-exactly. (The OSD runs on memstore, so it is paused,
// not restarted: a restart would lose its data.) Uploads go through a
// throttled proxy so that each export lasts long enough.
func TestExportRidesThroughCephFaults(t *testing.T) {
	s3Creds(t)
	c := newCluster(t, 25300, 28789)
	c.startAsync()
	c.wait(t)
	w, secret := newWorldOn(t, c)
	v := w.volumeWith("ceph-faults", 64*MiB, 9, sim.Region{Off: 0, Len: 64 * MiB, Kind: sim.Random})
	s := w.snapshot(v, "ceph-faults")
	want := rbdSHA256(t, c.conf(), w.snapSpec(s))
	slow := throttle(t, s3Host(t), 8*MiB) // some 8 s for the volume
	pidOf := func(daemon string) int {
		b, err := os.ReadFile(filepath.Join(c.dir, "run", daemon+".pid"))
		pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || perr != nil {
			t.Fatalf("pid of %s: %v %v", daemon, err, perr)
		}
		return pid
	}
	for _, fault := range []struct {
		name  string
		apply func()
	}{
		{"OSD paused 12s", func() {
			pid := pidOf("osd.0")
			syscall.Kill(pid, syscall.SIGSTOP)
			time.Sleep(12 * time.Second)
			syscall.Kill(pid, syscall.SIGCONT)
		}},
		{"monitor restarted", func() {
			syscall.Kill(pidOf("mon.a"), syscall.SIGKILL)
			time.Sleep(5 * time.Second)
			if out, err := exec.Command("ceph-mon", "-c", filepath.Join(c.dir, "ceph.conf"), "-i", "a").CombinedOutput(); err != nil {
				t.Fatalf("restarting the monitor: %v\n%s", err, out)
			}
		}},
	} {
		b := newRepo(t, "1MiB", "")
		p := startLifeboat(t, nil, "--kubeconfig", env.Get("KUBECONFIG"), "--driver-suffix", w.driver, "--ceph-timeout", "5s",
			"export", s.ContentName, "--ceph-secret", secret, "--parallel", "1", "-o", "json",
			"--s3-endpoint", "http://"+slow, "--s3-bucket", b.name)
		if !until(60*time.Second, func() bool { return len(b.objects("data/")) >= 4 || !p.running() }) || !p.running() {
			t.Fatalf("%s: the export ended before the fault: %s", fault.name, p.errb.String())
		}
		fault.apply()
		if !p.running() {
			t.Logf("%s: the export ended during the fault", fault.name)
		}
		r := p.wait(t, "export with "+fault.name, 3*time.Minute)
		if r.code != 0 {
			t.Fatalf("export with %s: exit %d", fault.name, r.code)
		}
		if fault.name == "OSD paused 12s" && !strings.Contains(r.stderr, "Ceph did not answer a read: retrying") {
			t.Errorf("no read timed out while the OSD was paused: the fault missed the export")
		}
		var out exportOut
		mustJSON(t, r.stdout, &out)
		target := "restored-" + strings.ReplaceAll(fault.name, " ", "-")
		rr := runLifeboat(t, append([]string{"restore", out.ID, "--to", w.spec(target), "--ceph-conf", c.conf()}, b.flags()...)...)
		if rr.code != 0 {
			t.Fatalf("restore after %s: %s", fault.name, rr.stderr)
		}
		if got := rbdSHA256(t, c.conf(), w.spec(target)); got != want {
			t.Errorf("export with %s restores to sha256 %s, the snapshot is %s", fault.name, got, want)
		}
	}
}
