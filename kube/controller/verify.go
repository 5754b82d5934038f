package controller

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/lifeboat-backup/lifeboat/kube/bridge"
	"github.com/lifeboat-backup/lifeboat/rbd"
)

// verifyLoop verifies every snapshot and looks for orphans at start and
// then every VerifyInterval, publishing the results as metrics.
func (c *Controller) verifyLoop(ctx context.Context) {
	if c.cfg.VerifyInterval <= 0 {
		return
	}
	t := time.NewTicker(c.cfg.VerifyInterval)
	defer t.Stop()
	for {
		c.verifyAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// verifyAll publishes what verify finds. Snapshots outside the namespaces
// the agent is told to watch are not counted: their owners' problems are
// not this agent's alerts. Orphans are looked for cluster-wide all the
// same: an orphan has no namespace any more.
func (c *Controller) verifyAll(ctx context.Context) {
	rep, err := c.Checker.Verify(ctx, nil)
	if err != nil {
		slog.Warn("periodic verification could not check", "err", err)
		return
	}
	status := map[string]float64{bridge.StatusOK: 0, bridge.StatusProblem: 0}
	problems := map[rbd.Code]float64{}
	for _, code := range rbd.Codes {
		problems[code] = 0
	}
	clusters := map[string]bool{}
	rep.Snapshots = slices.DeleteFunc(rep.Snapshots, func(s bridge.SnapshotReport) bool {
		ns, _, _ := strings.Cut(s.VolumeSnapshot, "/")
		return !c.inNamespaces(ns)
	})
	for _, s := range rep.Snapshots {
		status[s.Status]++
		for _, p := range s.Problems {
			problems[p.Code]++
		}
		if s.Image.ClusterID != "" {
			clusters[s.Image.ClusterID] = true
		}
	}
	for s, n := range status {
		c.Metrics.Snapshots.WithLabelValues(s).Set(n)
	}
	for code, n := range problems {
		c.Metrics.VerifyProblems.WithLabelValues(string(code)).Set(n)
	}
	var bytes uint64
	for _, o := range rep.Orphans {
		bytes += o.Size
	}
	c.Metrics.OrphanImages.Set(float64(len(rep.Orphans)))
	c.Metrics.OrphanBytes.Set(float64(bytes))
	for cl := range clusters {
		c.Metrics.CephUp.WithLabelValues(cl).Set(1)
	}
	slog.Info("verified", "snapshots", len(rep.Snapshots), "problems", status[bridge.StatusProblem], "orphans", len(rep.Orphans))
}
