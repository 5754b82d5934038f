package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/lifeboat-backup/lifeboat/kube"
	"github.com/lifeboat-backup/lifeboat/rbd"
)

// Statuses of a verified snapshot.
const (
	StatusOK      = "OK"
	StatusProblem = "Problem"
)

// SnapshotReport is verify's verdict on one VolumeSnapshotContent.
type SnapshotReport struct {
	Name           string        `json:"name"`
	VolumeSnapshot string        `json:"volumeSnapshot"`
	SnapshotHandle string        `json:"snapshotHandle"`
	Image          Image         `json:"image"`
	Flattened      bool          `json:"flattened"`
	Status         string        `json:"status"`
	Problems       []rbd.Problem `json:"problems"`
}

// Orphan is a CSI snapshot image no VolumeSnapshotContent points to: left
// behind under a Retain policy, or by a failed deletion.
type Orphan struct {
	ClusterID string `json:"clusterID"`
	Pool      string `json:"pool"`
	Namespace string `json:"namespace"`
	Image     string `json:"image"`
	Size      uint64 `json:"size"`
}

// Report is the result of verify.
type Report struct {
	Snapshots []SnapshotReport `json:"snapshots"`
	Orphans   []Orphan         `json:"orphans"`
}

// OK is true when every snapshot is OK and nothing is orphaned.
func (r *Report) OK() bool {
	for _, s := range r.Snapshots {
		if s.Status != StatusOK {
			return false
		}
	}
	return len(r.Orphans) == 0
}

// verifyParallelism bounds concurrent image inspections; librados
// multiplexes them over the one connection per cluster.
const verifyParallelism = rbd.DefaultParallel

// Verify checks the named VolumeSnapshotContents (or VolumeSnapshots as
// namespace/name), or all RBD ones when names is empty; then it looks for
// orphans. It reads only. An error means it could not check: the API server
// or a Ceph cluster unreachable, or access refused.
func (b *Bridge) Verify(ctx context.Context, names []string) (*Report, error) {
	if b.Kube == nil {
		return nil, errNoKube
	}
	all, err := b.Kube.ListSnapshots(ctx, b.opts.DriverSuffix)
	if err != nil {
		return nil, err
	}
	targets, err := b.pick(ctx, all, names)
	if err != nil {
		return nil, err
	}
	// Orphans (looked for when none is named) need every content's
	// image; named ones need only theirs (other clusters may not even be
	// reachable with the credentials given).
	scope := all
	if len(names) > 0 {
		scope = targets
	}
	checked, err := b.checkAll(ctx, scope)
	if err != nil {
		return nil, err
	}
	rep := &Report{Snapshots: []SnapshotReport{}, Orphans: []Orphan{}}
	for _, s := range targets {
		rep.Snapshots = append(rep.Snapshots, checked[s.Content.Name].report)
	}
	if len(names) == 0 {
		if rep.Orphans, err = b.orphans(ctx, checked); err != nil {
			return nil, err
		}
	}
	slog.Info("verified", "snapshots", len(rep.Snapshots), "orphans", len(rep.Orphans),
		"cephConnectionsOpened", rbd.ConnectionsOpened())
	return rep, nil
}

func (b *Bridge) pick(ctx context.Context, all []kube.Snapshot, names []string) ([]kube.Snapshot, error) {
	if len(names) == 0 {
		return all, nil
	}
	var out []kube.Snapshot
	for _, n := range names {
		s, _, err := b.Find(ctx, n)
		if err != nil && s.Content == nil {
			return nil, err
		}
		if s.Content == nil {
			return nil, fmt.Errorf("no VolumeSnapshotContent has handle %s", n)
		}
		if !kube.IsRBDDriver(s.Content.Spec.Driver, b.opts.DriverSuffix) {
			return nil, fmt.Errorf("VolumeSnapshotContent %s belongs to driver %s, not an RBD driver (*%s)", s.Content.Name, s.Content.Spec.Driver, b.opts.DriverSuffix)
		}
		out = append(out, s)
	}
	return out, nil
}

type checked struct {
	report SnapshotReport
	ref    rbd.Ref // zero when the handle could not be resolved
}

func (b *Bridge) checkAll(ctx context.Context, all []kube.Snapshot) (map[string]checked, error) {
	var (
		mu  sync.Mutex
		out = map[string]checked{}
		g   errgroup.Group
	)
	g.SetLimit(verifyParallelism)
	for _, s := range all {
		g.Go(func() error {
			c, err := b.check(ctx, s)
			mu.Lock()
			defer mu.Unlock()
			out[s.Content.Name] = c
			return err
		})
	}
	return out, g.Wait()
}

// check verifies one snapshot. Problems go into the report; an error is
// returned only when the check itself could not be made.
func (b *Bridge) check(ctx context.Context, s kube.Snapshot) (c checked, err error) {
	rep := &c.report
	*rep = SnapshotReport{Name: s.Content.Name, VolumeSnapshot: s.VolumeSnapshotName(), SnapshotHandle: s.Handle(), Problems: []rbd.Problem{}}
	add := func(p ...rbd.Problem) { rep.Problems = append(rep.Problems, p...) }
	defer func() {
		rep.Status = StatusOK
		if len(rep.Problems) > 0 {
			rep.Status = StatusProblem
		}
	}()
	if !s.Ready() {
		add(rbd.Problem{Code: rbd.NotReady, Message: fmt.Sprintf("VolumeSnapshotContent %s is not readyToUse%s", s.Content.Name, contentError(s))})
	}
	if rep.SnapshotHandle == "" {
		return c, nil
	}
	ref, cl, err := b.Locate(ctx, rep.SnapshotHandle)
	rep.Image = imageOf(ref)
	if err != nil {
		return c, b.asProblem(err, add)
	}
	c.ref = ref
	if !s.Ready() {
		return c, nil // an unfinished snapshot is only NotReady
	}
	add(rbd.CheckJournal(ref)...)
	info, err := cl.Inspect(ref.Pool, ref.Namespace, ref.Image, false)
	if err != nil {
		return c, b.asProblem(err, add)
	}
	probs, flat := rbd.CheckSnapshotImage(info, ref.Snapshot, s.RestoreSize())
	add(probs...)
	rep.Flattened = flat
	return c, nil
}

// asProblem records a resolution error as a problem when it is one, and
// returns it otherwise.
func (b *Bridge) asProblem(err error, add func(...rbd.Problem)) error {
	if code, ok := problemCode(err); ok {
		add(rbd.Problem{Code: code, Message: err.Error()})
		return nil
	}
	return err
}

func contentError(s kube.Snapshot) string {
	if st := s.Content.Status; st != nil && st.Error != nil && st.Error.Message != nil {
		return ": " + *st.Error.Message
	}
	return ""
}

type poolKey struct{ cluster, pool, ns string }

// orphans lists the CSI snapshot images in the pools in use that no
// VolumeSnapshotContent points to.
func (b *Bridge) orphans(ctx context.Context, checked map[string]checked) ([]Orphan, error) {
	used := map[poolKey]map[string]bool{}
	for _, c := range checked {
		if c.ref.Pool == "" {
			continue
		}
		k := poolKey{c.ref.ClusterID, c.ref.Pool, c.ref.Namespace}
		if used[k] == nil {
			used[k] = map[string]bool{}
		}
		used[k][c.ref.Image] = true
	}
	out := []Orphan{}
	for k, images := range used {
		cl, err := b.Ceph.Get(ctx, k.cluster)
		if err != nil {
			return nil, err
		}
		found, err := cl.SnapshotImages(k.pool, k.ns, b.opts.SnapshotPrefix, b.opts.InstanceID, func(name string) bool { return images[name] })
		if err != nil {
			return nil, err
		}
		for _, img := range found {
			out = append(out, Orphan{ClusterID: k.cluster, Pool: k.pool, Namespace: k.ns, Image: img.Name, Size: img.Size})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return strings.Join([]string{a.ClusterID, a.Pool, a.Namespace, a.Image}, "/") <
			strings.Join([]string{b.ClusterID, b.Pool, b.Namespace, b.Image}, "/")
	})
	return out, nil
}

// Check verifies one snapshot, as Verify does for each.
func (b *Bridge) Check(ctx context.Context, s kube.Snapshot) (SnapshotReport, error) {
	c, err := b.check(ctx, s)
	return c.report, err
}
