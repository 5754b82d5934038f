package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lifeboat-backup/lifeboat/kube/bridge"
)

func newResolveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "resolve NAME | NAMESPACE/NAME | HANDLE",
		Short: "Show the RBD image behind a VolumeSnapshotContent, VolumeSnapshot or ceph-csi handle",
		Long: `resolve finds the RBD image and snapshot behind a CSI snapshot: a VolumeSnapshotContent
by NAME, a VolumeSnapshot by NAMESPACE/NAME, or a raw ceph-csi snapshot handle. It prints the
clusterID, pool, RADOS namespace, image, snapshot, image id, size, features, op_features, parent
(with its trash state), overlap, and the VolumeSnapshot and PVC the snapshot belongs to.`,
		Example: `  lifeboat resolve snapcontent-0d1f...
  lifeboat resolve shop/velero-data-abcde
  lifeboat resolve 0001-0009-rook-ceph-0000000000000002-a0a1af05-a364-11eb-baf1-7a576c7e3674 -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := g.bridge()
			if err != nil {
				return err
			}
			defer b.Close()
			r, err := b.Resolve(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if ok, err := printStructured(cmd.OutOrStdout(), g.output, r); ok {
				return err
			}
			printResolution(cmd, r)
			return nil
		},
	}
}

func printResolution(cmd *cobra.Command, r *bridge.Resolution) {
	w := newTable(cmd.OutOrStdout())
	defer w.Flush()
	kv := func(k string, v any) { row(w, k+":", v) }
	kv("VolumeSnapshotContent", r.VolumeSnapshotContent)
	if len(r.VolumeSnapshotContents) > 1 {
		kv("Shared by", strings.Join(r.VolumeSnapshotContents, ", ")+fmt.Sprintf(" (%d VolumeSnapshotContents have this handle)", len(r.VolumeSnapshotContents)))
	}
	kv("VolumeSnapshot", r.VolumeSnapshot)
	kv("PVC", r.PVC)
	kv("Velero backup", r.VeleroBackup)
	kv("Handle", r.Handle)
	kv("Ceph fsid", r.FSID)
	kv("clusterID", r.Image.ClusterID)
	kv("Pool", r.Image.Pool)
	kv("RADOS namespace", r.Image.Namespace)
	kv("Image", r.Image.Name)
	kv("Snapshot", r.Image.Snapshot)
	kv("Image id", r.ImageID)
	kv("Source volume", r.Source)
	kv("Size", fmt.Sprintf("%s (%d bytes)", bytesIEC(r.Size), r.Size))
	kv("Snapshot size", fmt.Sprintf("%s (%d bytes)", bytesIEC(r.SnapshotSize), r.SnapshotSize))
	kv("Features", strings.Join(r.Features, ", "))
	kv("Op features", strings.Join(r.OpFeatures, ", "))
	if p := r.Parent; p != nil {
		parent := p.Spec()
		if p.SnapNamespace == "trash" {
			parent += fmt.Sprintf(" (snapshot in trash, was %s)", p.SnapTrashName)
		}
		if p.InTrash {
			parent += " (image in RBD trash)"
		}
		if p.Missing != "" {
			parent += " MISSING " + p.Missing
		}
		kv("Parent", parent)
		kv("Overlap", fmt.Sprintf("%s (%d bytes)", bytesIEC(r.Overlap), r.Overlap))
	} else {
		kv("Parent", "none (flattened)")
	}
	if !r.FromJournal {
		kv("Note", "no ceph-csi journal entry; image name from the naming convention")
	}
}
