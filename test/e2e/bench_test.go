//go:build e2e

package e2e

import (
	"context"
	"regexp"
	"sync"
	"testing"
	"time"
)

// BenchmarkVerify200 times `lifeboat verify` of 200 Velero-style snapshots
// and reports how many Ceph connections it opened (one per cluster is the
// promise). Run with `make bench-verify`.
func BenchmarkVerify200(b *testing.B) {
	w := newWorld(b)
	vol := w.volume("bench", 16*MiB)
	// Snapshots are made 8 at a time: each waits on monitor round trips.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := w.sim.CreateSnapshot(context.Background(), vol, "bench"); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	b.ResetTimer()
	var took time.Duration
	var conns string
	for i := 0; i < b.N; i++ {
		r := w.run("verify", "--log-level", "info")
		if r.code != 0 {
			b.Fatalf("verify: exit %d", r.code)
		}
		took += r.took
		m := regexp.MustCompile(`cephConnectionsOpened=(\d+)`).FindStringSubmatch(r.stderr)
		if m == nil {
			b.Fatalf("no connection count in %q", r.stderr)
		}
		conns = m[1]
	}
	b.ReportMetric(took.Seconds()/float64(b.N), "s/verify")
	b.Logf("verify of 200 snapshots: %.2f s, %s Ceph connection(s) opened", took.Seconds()/float64(b.N), conns)
}
