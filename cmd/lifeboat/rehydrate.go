package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lifeboat-backup/lifeboat/kube"
	"github.com/lifeboat-backup/lifeboat/kube/backup"
	"github.com/lifeboat-backup/lifeboat/kube/bridge"
	"github.com/lifeboat-backup/lifeboat/objectstore"
	"github.com/lifeboat-backup/lifeboat/rbd"
)

// rehydrateFlags are restore --velero-backup's own flags.
type rehydrateFlags struct {
	velero          string
	veleroNamespace string
	clusterIDMap    []string
	dryRun          bool
	force           bool
	verify          bool
	cluster         string
	noVeleroList    bool
}

// rehydrateResult is the output (-o json).
type rehydrateResult struct {
	VeleroBackup string               `json:"veleroBackup"`
	DryRun       bool                 `json:"dryRun"`
	Volumes      []*backup.VolumePlan `json:"volumes"`
	ConfigMap    string               `json:"resourceModifierConfigMap,omitempty"`
	Modifiers    string               `json:"resourceModifiers,omitempty"`
	Command      string               `json:"veleroRestoreCommand"`
	Notes        []string             `json:"notes"`
	Seconds      float64              `json:"seconds"`
}

const rehydrateHelp = `

With --velero-backup NAME (and no ID), restore brings back every CSI snapshot of Velero backup
NAME that the repository holds, in a NEW Ceph cluster, the way ceph-csi had left it: the image
<csi.imagename> with its snapshot of the same name (features layering,deep-flatten) and the
journal object csi.snap.<uuid> (csi.source, csi.imagename, csi.snapname, csi.imageid), in the
pool of the snapshot's name and the RADOS namespace of the new cluster's ceph-csi config. Then
stock Velero (1.16+) restores the PVCs from them: run the velero command it prints.

When the new cluster's pool has another id than the old (new clusters number pools
themselves), or with --cluster-id-map OLD=NEW, the snapshot gets a new handle; restore writes a
Velero resource-modifier ConfigMap (in --velero-namespace) that rewrites each restored
VolumeSnapshotContent's spec.source.snapshotHandle, and the command it prints names it.

It needs only the repository and the new cluster (--cluster CLUSTERID from ceph-csi's config, or
--ceph-conf). Volumes are restored in parallel (--parallel bounds the chunks in flight over all
volumes), each verified chunk by chunk and against the backup's digest. Running it again skips
what is done (after reading it back and comparing it with the backup) and finishes the rest. An
image of the target name that lifeboat did not write is never touched (exit 1) unless --force.
A volume of the Velero backup with no lifeboat backup (asked of the Velero server, when it
runs) is named with its PVC (exit 1); the others are still restored. --dry-run only plans.`

func addRehydrateFlags(cmd *cobra.Command, rh *rehydrateFlags) {
	f := cmd.Flags()
	f.StringVar(&rh.velero, "velero-backup", "", "restore every CSI snapshot of this Velero backup so that `velero restore` works (see below)")
	f.StringVar(&rh.veleroNamespace, "velero-namespace", "velero", "with --velero-backup: Velero's namespace (for its volume list and the resource-modifier ConfigMap)")
	f.StringArrayVar(&rh.clusterIDMap, "cluster-id-map", nil, "with --velero-backup: OLD=NEW, the new ceph-csi clusterID of an old one (repeatable)")
	f.BoolVar(&rh.dryRun, "dry-run", false, "with --velero-backup: print the plan, change nothing")
	f.BoolVar(&rh.noVeleroList, "no-velero-volumes", false, "with --velero-backup: do not ask the Velero server for the backup's volume list")
}

func runRehydrate(cmd *cobra.Command, g *globals, rf *repoFlags, rh *rehydrateFlags) error {
	start := time.Now()
	ctx := cmd.Context()
	idMap, err := parseIDMap(rh.clusterIDMap)
	if err != nil {
		return err
	}
	b, err := g.bridge()
	if err != nil {
		return err
	}
	defer b.Close()
	openRepo := async(func() (*objectstore.Repository, error) { return rf.open(ctx, cmd) })
	defer openRepo() // before b.Close
	res := &rehydrateResult{VeleroBackup: rh.velero, DryRun: rh.dryRun, Notes: []string{}}
	volumes := veleroVolumes(ctx, b, rh, g.driver, res)
	repo, err := openRepo()
	if err != nil {
		return err
	}
	// A damaged backup is passed over, never fatal: a volume whose only
	// backup it was is then named as missing, the others still restore.
	cat, err := repo.Backups(ctx, false)
	if err != nil {
		return err
	}
	all := cat.Backups
	for _, d := range cat.Damaged {
		res.Notes = append(res.Notes, fmt.Sprintf("backup %s is damaged and was passed over (%s: %s); lifeboat backups check %s", d.ID, d.Object, d.Reason, d.ID))
	}
	clusterName := rh.cluster
	if clusterName == "" {
		clusterName = defaultCluster(all, rh.velero, idMap)
	}
	if clusterName == "" && g.cephConf == "" {
		return fmt.Errorf("the repository holds no backup made for Velero backup %q (lifeboat backups list --velero-backup %s), and no --cluster was named", rh.velero, rh.velero)
	}
	cl, err := cephCluster(ctx, g, b, clusterName)
	if err != nil {
		return err
	}
	pools, err := cl.Pools()
	if err != nil {
		return err
	}
	target := backup.TargetCluster{Pools: pools, ClusterIDs: idMap,
		Namespace: func(id string) (string, bool) { return b.CSINamespace(ctx, id) }}
	res.Volumes = backup.PlanRehydration(rh.velero, all, volumes, target)
	if len(res.Volumes) == 0 {
		return fmt.Errorf("the repository holds no backup made for Velero backup %q, and Velero lists no CSI snapshot in it: nothing to restore (lifeboat backups list shows what there is)", rh.velero)
	}
	if !rh.dryRun {
		rehydrateAll(ctx, cmd, repo, cl, res.Volumes, rf.parallel, rh)
	}
	if err := writeModifiers(ctx, b, rh, res); err != nil {
		return err
	}
	res.Seconds = time.Since(start).Seconds()
	if ok, err := printStructured(cmd.OutOrStdout(), g.output, res); ok {
		if err != nil {
			return err
		}
	} else {
		printRehydration(cmd.OutOrStdout(), res)
	}
	for _, v := range res.Volumes {
		if v.State != backup.StateRehydrated && v.State != backup.StateVerified && v.State != backup.StatePlanned {
			return errProblems
		}
	}
	return nil
}

// veleroVolumes asks Velero which CSI snapshots the backup has, so that
// the ones the repository lacks can be named; without an answer, only the
// repository's are known.
func veleroVolumes(ctx context.Context, b *bridge.Bridge, rh *rehydrateFlags, driverSuffix string, res *rehydrateResult) []backup.VeleroVolume {
	if rh.noVeleroList {
		return nil
	}
	why := "no Kubernetes API server"
	if b.Kube != nil {
		infos, err := b.Kube.VeleroVolumes(ctx, rh.veleroNamespace, rh.velero, 30*time.Second)
		if err == nil {
			var out []backup.VeleroVolume
			for _, in := range infos {
				if in.CSISnapshotInfo != nil && in.CSISnapshotInfo.SnapshotHandle != "" && !in.Skipped &&
					kube.IsRBDDriver(in.CSISnapshotInfo.Driver, driverSuffix) {
					out = append(out, backup.VeleroVolume{PVC: in.PVCNamespace + "/" + in.PVCName, Handle: in.CSISnapshotInfo.SnapshotHandle})
				}
			}
			return out
		}
		why = err.Error()
	}
	res.Notes = append(res.Notes, "Velero's volume list of the backup was not read ("+why+"): only the volumes the repository holds are listed; one never exported would go unnamed")
	return nil
}

// defaultCluster is the (mapped) clusterID of the backup's snapshots,
// when they share one.
func defaultCluster(all []objectstore.Summary, velero string, idMap map[string]string) string {
	ids := map[string]bool{}
	for _, s := range all {
		if s.Source[backup.KeyVeleroBackup] == velero && s.Source[backup.KeyClusterID] != "" {
			id := s.Source[backup.KeyClusterID]
			if n, ok := idMap[id]; ok {
				id = n
			}
			ids[id] = true
		}
	}
	if len(ids) != 1 {
		return ""
	}
	for id := range ids {
		return id
	}
	return ""
}

func parseIDMap(pairs []string) (map[string]string, error) {
	m := map[string]string{}
	for _, p := range pairs {
		old, n, ok := strings.Cut(p, "=")
		if !ok || old == "" || n == "" {
			return nil, fmt.Errorf("--cluster-id-map %q: use OLD=NEW", p)
		}
		m[old] = n
	}
	return m, nil
}

// rehydrateAll restores the planned volumes, several at once: --parallel
// chunks in flight in all, shared out between the volumes.
func rehydrateAll(ctx context.Context, cmd *cobra.Command, repo *objectstore.Repository, cl *rbd.Cluster,
	vols []*backup.VolumePlan, parallel int, rh *rehydrateFlags) {
	if parallel <= 0 {
		parallel = objectstore.DefaultParallel
	}
	var todo []*backup.VolumePlan
	var total int64
	for _, v := range vols {
		if v.State == backup.StatePlanned {
			todo = append(todo, v)
			total += v.Bytes
		}
	}
	at := min(max(len(todo), 1), parallel)
	p := newProgress(cmd.ErrOrStderr(), fmt.Sprintf("restoring %d volumes of Velero backup %s", len(todo), rh.velero))
	defer p.done()
	var written atomic.Int64
	var mu sync.Mutex
	opts := backup.RehydrateOptions{Parallel: max(1, parallel/at), Force: rh.force, InstanceID: rbd.DefaultInstanceID,
		ReadBack: rh.verify, Progress: func(n int64) {
			w := written.Add(n)
			mu.Lock()
			p.restore(w, total)
			mu.Unlock()
		}}
	var eg errgroup.Group
	eg.SetLimit(at)
	for _, v := range todo {
		eg.Go(func() error {
			if err := backup.Rehydrate(ctx, repo, cl, v, opts); err != nil {
				slog.Error("restoring volume", "pvc", v.PVC, "image", v.Image, "err", err)
			}
			return nil // one volume's failure does not stop the others
		})
	}
	_ = eg.Wait()
}

// writeModifiers writes Velero's resource-modifier ConfigMap when a
// handle changes, and the velero command.
func writeModifiers(ctx context.Context, b *bridge.Bridge, rh *rehydrateFlags, res *rehydrateResult) error {
	doc, err := backup.ModifierRules(res.Volumes)
	if err != nil {
		return err
	}
	if doc == nil {
		res.Command = backup.VeleroRestoreCommand(rh.velero, rh.veleroNamespace, "")
		res.Notes = append(res.Notes, "every snapshot keeps its handle (same clusterID and pool id): no resource-modifier ConfigMap is needed")
		return nil
	}
	name := backup.ModifierConfigMapName(rh.velero)
	res.Modifiers = string(doc)
	res.Command = backup.VeleroRestoreCommand(rh.velero, rh.veleroNamespace, name)
	switch {
	case rh.dryRun:
		res.Notes = append(res.Notes, fmt.Sprintf("would write ConfigMap %s/%s (Velero resource modifiers rewriting the handles)", rh.veleroNamespace, name))
		return nil
	case b.Kube == nil:
		res.Notes = append(res.Notes, fmt.Sprintf("no Kubernetes API server: create ConfigMap %s/%s yourself, with key %s holding the resourceModifiers of -o json",
			rh.veleroNamespace, name, backup.ModifierDataKey))
		return nil
	}
	if err := applyConfigMap(ctx, b.Kube, rh.veleroNamespace, name, string(doc)); err != nil {
		return err
	}
	res.ConfigMap = rh.veleroNamespace + "/" + name
	res.Notes = append(res.Notes, fmt.Sprintf("wrote ConfigMap %s: Velero 1.16 or later rewrites the restored VolumeSnapshotContents' handles with it (Velero 1.15 and older restore the old handles, and the PVCs stay Pending)", res.ConfigMap))
	return nil
}

func applyConfigMap(ctx context.Context, k *kube.Clients, ns, name, doc string) error {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "lifeboat"}},
		Data:       map[string]string{backup.ModifierDataKey: doc},
	}
	api := k.Kube.CoreV1().ConfigMaps(ns)
	_, err := api.Create(ctx, cm, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		var cur *corev1.ConfigMap
		if cur, err = api.Get(ctx, name, metav1.GetOptions{}); err == nil {
			cur.Data = cm.Data
			_, err = api.Update(ctx, cur, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		return fmt.Errorf("writing Velero's resource-modifier ConfigMap %s/%s: %w", ns, name, err)
	}
	return nil
}

func printRehydration(out io.Writer, res *rehydrateResult) {
	w := newTable(out)
	row(w, "PVC", "VOLUMESNAPSHOT", "BACKUP", "HANDLE (OLD → NEW)", "SIZE", "STATE")
	for _, v := range res.Volumes {
		h := v.OldHandle
		switch {
		case v.Rewritten():
			h += " → " + v.NewHandle
		case v.NewHandle != "":
			h += " (unchanged)"
		}
		row(w, v.PVC, v.VolumeSnapshot, v.BackupID, h, bytesIEC(uint64(v.Bytes)), v.State)
	}
	w.Flush()
	for _, v := range res.Volumes {
		if v.Reason != "" {
			fmt.Fprintf(out, "%s: %s: %s\n", orDash(v.PVC), v.State, v.Reason)
		}
		for _, l := range v.Lacks {
			fmt.Fprintf(out, "%s: older backup %s lacks %s\n", orDash(v.PVC), v.BackupID, l)
		}
	}
	for _, n := range res.Notes {
		fmt.Fprintln(out, "note:", n)
	}
	if res.DryRun {
		fmt.Fprintln(out, "\ndry run: nothing was changed. Without --dry-run, then run:")
	} else {
		fmt.Fprintln(out, "\nNow run:")
	}
	fmt.Fprintln(out, "  "+res.Command)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (p *progress) restore(done, total int64) {
	if p.f == nil || time.Since(p.last) < 200*time.Millisecond {
		return
	}
	p.last = time.Now()
	rate := float64(done) / time.Since(p.start).Seconds()
	fmt.Fprintf(p.f, "\r%s: %s of %s written, %s/s   ", p.what, bytesIEC(uint64(done)), bytesIEC(uint64(total)), bytesIEC(uint64(rate)))
}
