package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lifeboat-backup/lifeboat/kube/bridge"
)

func newVerifyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify [NAME | NAMESPACE/NAME ...]",
		Short: "Check that CSI snapshots' RBD images are what ceph-csi promises, and find orphans",
		Long: `verify checks each RBD VolumeSnapshotContent (all of them when none is named; a
VolumeSnapshot may be named as NAMESPACE/NAME): the handle decodes, the cluster is in ceph-csi's
config, the pool, image and snapshot exist, the image is format 2 with layering and deep-flatten,
a clone v2 whose parent image and snapshot still exist (a flattened clone is fine), and the
snapshot's size equals status.restoreSize.

Problem codes: MalformedHandle, UnknownCluster, PoolNotFound, ImageNotFound, SnapshotNotFound,
NotReady, FeatureMissing, NotCloneChild, ParentMissing, SizeMismatch, JournalIncomplete (the
ceph-csi journal entry lacks csi.source: ceph-csi cannot restore a volume from it).

When verifying all, it also lists orphans: CSI snapshot images in the pools in use that no
VolumeSnapshotContent points to (typically left behind under a Retain policy).

It never changes anything. Exit 0 when all is OK and there are no orphans, 1 when there is any
problem or orphan, 2 when it could not check.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := g.bridge()
			if err != nil {
				return err
			}
			defer b.Close()
			rep, err := b.Verify(cmd.Context(), args)
			if err != nil {
				return err
			}
			if ok, err := printStructured(cmd.OutOrStdout(), g.output, rep); ok && err != nil {
				return err
			} else if !ok {
				printReport(cmd, rep)
			}
			if !rep.OK() {
				return errProblems
			}
			return nil
		},
	}
}

func printReport(cmd *cobra.Command, rep *bridge.Report) {
	out := cmd.OutOrStdout()
	w := newTable(out)
	row(w, "NAME", "VOLUMESNAPSHOT", "IMAGE", "STATUS", "PROBLEMS")
	for _, s := range rep.Snapshots {
		img := ""
		if s.Image.Name != "" {
			img = s.Image.Pool + "/"
			if s.Image.Namespace != "" {
				img += s.Image.Namespace + "/"
			}
			img += s.Image.Name + "@" + s.Image.Snapshot
		}
		status := s.Status
		if s.Flattened && s.Status == bridge.StatusOK {
			status += " (flattened)"
		}
		codes := ""
		for i, p := range s.Problems {
			if i > 0 {
				codes += ","
			}
			codes += string(p.Code)
		}
		row(w, s.Name, s.VolumeSnapshot, img, status, codes)
	}
	w.Flush()
	for _, s := range rep.Snapshots {
		for _, p := range s.Problems {
			fmt.Fprintf(out, "%s: %s: %s\n", s.Name, p.Code, p.Message)
		}
	}
	if len(rep.Orphans) > 0 {
		fmt.Fprintf(out, "\nOrphaned snapshot images (no VolumeSnapshotContent points to them):\n")
		w = newTable(out)
		row(w, "CLUSTERID", "POOL", "NAMESPACE", "IMAGE", "SIZE")
		for _, o := range rep.Orphans {
			row(w, o.ClusterID, o.Pool, o.Namespace, o.Image, bytesIEC(o.Size))
		}
		w.Flush()
	}
	ok := 0
	for _, s := range rep.Snapshots {
		if s.Status == bridge.StatusOK {
			ok++
		}
	}
	fmt.Fprintf(out, "\n%d snapshots, %d OK, %d with problems, %d orphans\n", len(rep.Snapshots), ok, len(rep.Snapshots)-ok, len(rep.Orphans))
}
