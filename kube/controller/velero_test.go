package controller

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lifeboat-backup/lifeboat/kube"
)

// fakeVelero is Velero: its backups, and each one's volume list.
type fakeVelero struct {
	mu      sync.Mutex
	backups []kube.VeleroBackup
	vols    map[string][]kube.VeleroVolumeInfo
	asked   []string // backups whose volume list was asked for
}

func (v *fakeVelero) VeleroBackups(context.Context, string) ([]kube.VeleroBackup, error) {
	return v.backups, nil
}

func (v *fakeVelero) VeleroVolumes(_ context.Context, _, backup string, _ time.Duration) ([]kube.VeleroVolumeInfo, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.asked = append(v.asked, backup)
	return v.vols[backup], nil
}

func veleroVolume(ns, pvc, vsc, handle string) kube.VeleroVolumeInfo {
	v := kube.VeleroVolumeInfo{PVCNamespace: ns, PVCName: pvc, BackupMethod: "CSISnapshot"}
	v.CSISnapshotInfo = &struct {
		SnapshotHandle string `json:"snapshotHandle"`
		Size           int64  `json:"size"`
		Driver         string `json:"driver"`
		VSCName        string `json:"vscName"`
	}{SnapshotHandle: handle, Size: 1 << 30, Driver: "rook-ceph.rbd.csi.ceph.com", VSCName: vsc}
	return v
}

// A Velero backup taken while no agent ran: of its volumes, only the one
// in scope, never exported and without a content left is exported, once,
// recording its PVC and Velero backup; backups not done or older than the
// lookback are not read, and a backup is read once.
func TestCatchUpFromVelero(t *testing.T) {
	now := time.Now()
	v := &fakeVelero{
		backups: []kube.VeleroBackup{
			{Name: "nightly", Phase: "Completed", Completed: now.Add(-time.Hour)},
			{Name: "last-month", Phase: "Completed", Completed: now.Add(-30 * 24 * time.Hour)},
			{Name: "running", Phase: "InProgress"},
		},
		vols: map[string][]kube.VeleroVolumeInfo{"nightly": {
			veleroVolume("apps", "db", "vsc-gone", "handle-gone"),   // to export
			veleroVolume("apps", "live", "c1", "handle-c1"),         // its content is still there
			veleroVolume("apps", "done", "vsc-done", "handle-done"), // exported already
			veleroVolume("other", "x", "vsc-x", "handle-x"),         // out of scope
			{PVCNamespace: "apps", PVCName: "fs", BackupMethod: "PodVolumeBackup"},
		}},
	}
	cfg := Config{Export: true, IncludeNamespaces: []string{"apps"}, VeleroNamespace: "velero", VeleroLookback: 7 * 24 * time.Hour}
	f := newFixture(t, cfg, func(f *fixture) { f.repo.add(summary("b0", "handle-done", "vsc-done", now)) },
		content("c1", "apps", nil), snapshot("c1", "apps"))
	f.c.Velero = v

	if err := f.c.catchUp(f.ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(v.asked, []string{"nightly"}) {
		t.Errorf("volume lists asked for %v, want nightly's only", v.asked)
	}
	s, ok := f.c.gone["vsc-gone"]
	if len(f.c.gone) != 1 || !ok {
		t.Fatalf("queued %v, want vsc-gone only", f.c.gone)
	}
	if s.Handle() != "handle-gone" || s.PVC() != "apps/db" || s.VeleroBackup() != "nightly" || s.RestoreSize() != 1<<30 {
		t.Errorf("rebuilt snapshot: handle %s, PVC %s, Velero backup %s, size %d", s.Handle(), s.PVC(), s.VeleroBackup(), s.RestoreSize())
	}
	for f.c.queue.Len() > 0 { // c1 too, queued by the informer
		if !f.c.next(f.ctx) {
			t.Fatal("the queue shut down")
		}
	}
	slices.Sort(f.ceph.exported)
	if !slices.Equal(f.ceph.exported, []string{"handle-c1", "handle-gone"}) {
		t.Fatalf("exports %v, want handle-c1 (its content) and handle-gone (caught up) once each", f.ceph.exported)
	}
	if got := testutil.ToFloat64(f.c.Metrics.CaughtUp); got != 1 {
		t.Errorf("lifeboat_velero_caught_up_total %v, want 1", got)
	}

	// The next round reads no volume list again and exports nothing.
	if err := f.c.catchUp(f.ctx); err != nil {
		t.Fatal(err)
	}
	if len(v.asked) != 1 || len(f.c.gone) != 0 || len(f.ceph.exported) != 2 {
		t.Errorf("second round: asked %v, queued %v, exported %v", v.asked, f.c.gone, f.ceph.exported)
	}
}
