package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-backup/lifeboat/kube/backup"
	"github.com/lifeboat-backup/lifeboat/kube/bridge"
	"github.com/lifeboat-backup/lifeboat/objectstore"
	"github.com/lifeboat-backup/lifeboat/rbd"
)

func newExportCmd(g *globals) *cobra.Command {
	rf := &repoFlags{}
	var image, cluster string
	var full, wholeSHA bool
	cmd := &cobra.Command{
		Use:   "export NAME | NAMESPACE/NAME | HANDLE | --image POOL[/NS]/IMAGE@SNAP",
		Short: "Export a CSI snapshot's data (or any RBD snapshot) to the S3 repository",
		Long: `export reads a snapshot through its clone and parents (only allocated extents, in parallel)
and stores it in the repository as a new backup. If the repository holds a backup of the same
volume, unchanged chunks are not uploaded again. The backup becomes visible only once all its
data is stored: an interrupted export leaves nothing behind but chunks, and running it again
uploads only what is missing. Prints the backup id (-o json: the counters too).

--image exports a plain RBD snapshot without Kubernetes: name its cluster with --cluster
(ceph-csi's config) or --ceph-conf.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == (image != "") {
				return fmt.Errorf("name one snapshot: a VolumeSnapshotContent, NAMESPACE/VolumeSnapshot, handle, or --image POOL[/NS]/IMAGE@SNAP")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			b, err := g.bridge()
			if err != nil {
				return err
			}
			defer b.Close()
			// Opening the repository (scrypt, a few requests) while the
			// snapshot is resolved and opened starts the export sooner.
			openRepo := async(func() (*objectstore.Repository, error) { return rf.open(ctx, cmd) })
			defer openRepo() // before b.Close
			var src backup.Source
			if image != "" {
				src, err = imageSource(ctx, g, b, cluster, image)
			} else {
				src, err = csiSource(ctx, b, args[0])
			}
			repo, rerr := openRepo()
			if rerr != nil {
				return rerr // the repository's error first, as when it was opened first
			}
			if err != nil {
				return err
			}
			p := newProgress(cmd.ErrOrStderr(), "exporting "+src.Ref.Spec())
			res, err := backup.Export(ctx, repo, src, backup.Options{Parallel: rf.parallel, Full: full, SHA256: wholeSHA, Progress: p.export})
			p.done()
			if err != nil {
				return err
			}
			return printExport(cmd, g, res)
		},
	}
	addRepoFlags(cmd, rf)
	cmd.Flags().StringVar(&image, "image", "", "export POOL[/NAMESPACE]/IMAGE@SNAP instead of a CSI snapshot")
	cmd.Flags().StringVar(&cluster, "cluster", "", "with --image: the ceph-csi clusterID whose monitors and Secret to use")
	cmd.Flags().BoolVar(&full, "full", false, "do not build on the volume's previous backup")
	cmd.Flags().BoolVar(&wholeSHA, "sha256", false, "also record the image's SHA-256 (as `rbd export … - | sha256sum` prints) when every byte is read; costs one more pass")
	return cmd
}

// csiSource resolves a CSI snapshot to its image and Kubernetes identity.
func csiSource(ctx context.Context, b *bridge.Bridge, target string) (backup.Source, error) {
	s, h, err := b.Find(ctx, target)
	if err != nil {
		return backup.Source{}, err
	}
	ref, cl, err := b.Locate(ctx, h)
	if err != nil {
		return backup.Source{}, err
	}
	return backup.CSISource(s, h, ref, cl), nil
}

// imageSource is a plain RBD snapshot named on the command line.
func imageSource(ctx context.Context, g *globals, b *bridge.Bridge, cluster, spec string) (backup.Source, error) {
	ref, err := parseSpec(spec, true)
	if err != nil {
		return backup.Source{}, fmt.Errorf("--image: %w", err)
	}
	cl, err := cephCluster(ctx, g, b, cluster)
	if err != nil {
		return backup.Source{}, err
	}
	ref.ClusterID = cluster
	lineage := rbd.Ref{Pool: ref.Pool, Namespace: ref.Namespace, Image: ref.Image}.Spec()
	return backup.Source{Cluster: cl, Ref: ref, Lineage: lineage}, nil
}

// cephCluster connects to the cluster named by --cluster (through ceph-csi's
// config) or by --ceph-conf.
func cephCluster(ctx context.Context, g *globals, b *bridge.Bridge, cluster string) (*rbd.Cluster, error) {
	if g.cephConf == "" && cluster == "" {
		return nil, fmt.Errorf("name the Ceph cluster: --cluster CLUSTERID (from ceph-csi's config) or --ceph-conf FILE")
	}
	if cluster == "" {
		cluster = "ceph-conf"
	}
	return b.Ceph.Get(ctx, cluster)
}

// parseSpec reads POOL[/NS]/IMAGE[@SNAP].
func parseSpec(spec string, needSnap bool) (rbd.Ref, error) {
	var ref rbd.Ref
	rest, snap, hasSnap := strings.Cut(spec, "@")
	parts := strings.Split(rest, "/")
	switch len(parts) {
	case 2:
		ref.Pool, ref.Image = parts[0], parts[1]
	case 3:
		ref.Pool, ref.Namespace, ref.Image = parts[0], parts[1], parts[2]
	default:
		return ref, fmt.Errorf("%q is not POOL[/NAMESPACE]/IMAGE%s", spec, map[bool]string{true: "@SNAP", false: ""}[needSnap])
	}
	if ref.Pool == "" || ref.Image == "" || (hasSnap && snap == "") {
		return ref, fmt.Errorf("%q has an empty pool, image or snapshot name", spec)
	}
	if needSnap && !hasSnap {
		return ref, fmt.Errorf("%q names no snapshot: add @SNAP (lifeboat exports snapshots, never a live image)", spec)
	}
	if !needSnap && hasSnap {
		return ref, fmt.Errorf("%q: name an image, not a snapshot", spec)
	}
	ref.Snapshot = snap
	return ref, nil
}

type exportJSON struct {
	ID          string  `json:"id"`
	BytesRead   int64   `json:"bytesRead"`
	BytesNew    int64   `json:"bytesNew"`
	BytesStored int64   `json:"bytesStored"`
	Chunks      int64   `json:"chunks"`
	ChunksNew   int64   `json:"chunksNew"`
	Seconds     float64 `json:"seconds"`
	Path        string  `json:"path"`
	Fallback    string  `json:"fallback,omitempty"`
	// Object lock: dates of reused chunks read, and extended.
	LockChecks   int64 `json:"lockChecks,omitempty"`
	LockExtended int64 `json:"lockExtended,omitempty"`
}

func printExport(cmd *cobra.Command, g *globals, res *backup.Result) error {
	s := res.Manifest.Stats
	out := exportJSON{ID: res.Manifest.ID, BytesRead: int64(res.CephBytesRead), BytesNew: s.BytesNew,
		BytesStored: s.BytesStored, Chunks: s.Chunks, ChunksNew: s.ChunksNew, Seconds: res.Seconds,
		Path: res.Path, Fallback: res.Fallback, LockChecks: s.RetentionChecks, LockExtended: s.RetentionExtended}
	if ok, err := printStructured(cmd.OutOrStdout(), g.output, out); ok {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), out.ID)
	how := res.Path
	if res.Fallback != "" {
		how += ", no diff: " + res.Fallback
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s: read %s from Ceph, new %s, stored %s (%d of %d chunks new) in %.1fs\n",
		how, bytesIEC(res.CephBytesRead), bytesIEC(uint64(s.BytesNew)), bytesIEC(uint64(s.BytesStored)),
		s.ChunksNew, s.Chunks, res.Seconds)
	if m := res.Manifest; m.LockedUntil != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "locked until %s (S3 Object Lock); object locks of reused chunks: %d read, %d extended\n",
			m.LockedUntil.UTC().Format(time.RFC3339), s.RetentionChecks, s.RetentionExtended)
	}
	return nil
}

// progress draws one status line on a terminal, and nothing otherwise.
type progress struct {
	f     *os.File
	what  string
	start time.Time
	last  time.Time
}

func newProgress(w any, what string) *progress {
	f, ok := w.(*os.File)
	if !ok {
		return &progress{}
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return &progress{}
	}
	return &progress{f: f, what: what, start: time.Now()}
}

func (p *progress) export(s objectstore.Stats, total uint64) {
	if p.f == nil || time.Since(p.last) < 200*time.Millisecond {
		return
	}
	p.last = time.Now()
	rate := float64(s.BytesRead) / time.Since(p.start).Seconds()
	fmt.Fprintf(p.f, "\r%s: %s of %s read, %s new, %s/s   ", p.what, bytesIEC(uint64(s.BytesRead)), bytesIEC(total),
		bytesIEC(uint64(s.BytesNew)), bytesIEC(uint64(rate)))
}

func (p *progress) done() {
	if p.f != nil {
		fmt.Fprintln(p.f)
	}
}
