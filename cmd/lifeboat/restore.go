package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lifeboat-backup/lifeboat/kube/backup"
	"github.com/lifeboat-backup/lifeboat/objectstore"
	"github.com/lifeboat-backup/lifeboat/rbd"
)

func newRestoreCmd(g *globals) *cobra.Command {
	rf := &repoFlags{}
	var to, cluster string
	var opts backup.RestoreOptions
	rh := &rehydrateFlags{}
	cmd := &cobra.Command{
		Use: "restore ID --to POOL[/NS]/IMAGE (--cluster CLUSTERID | --ceph-conf FILE)\n" +
			"  lifeboat restore --velero-backup NAME [--cluster CLUSTERID | --ceph-conf FILE] [--cluster-id-map OLD=NEW] [--dry-run]",
		Short: "Restore a backup into a new RBD image, in any Ceph cluster",
		Long: `restore creates POOL[/NAMESPACE]/IMAGE with the backup's size and features and writes its
data (sparse: holes are not written) in parallel, checking every chunk's hash and, at the end,
the SHA-256 of the whole image. It refuses an existing image unless --force. On failure it
removes the image it created (unless --keep-partial) and names the chunk and offset that failed.

The target cluster is named by --cluster (a clusterID in ceph-csi's config, with its Secret) or
by --ceph-conf [--ceph-user] [--ceph-keyring]: a brand-new cluster after the old one is gone.` + rehydrateHelp,
		Args: func(cmd *cobra.Command, args []string) error {
			if rh.velero != "" {
				if len(args) > 0 || to != "" || opts.Snapshot != "" || opts.Features != "" || opts.KeepPartial {
					return fmt.Errorf("--velero-backup restores every snapshot of a Velero backup: name no backup ID, --to, --snapshot, --features or --keep-partial")
				}
				return nil
			}
			if rh.dryRun || len(rh.clusterIDMap) > 0 || cmd.Flags().Changed("velero-namespace") || rh.noVeleroList {
				return fmt.Errorf("--dry-run, --cluster-id-map, --velero-namespace and --no-velero-volumes go with --velero-backup")
			}
			if len(args) != 1 || to == "" {
				return fmt.Errorf("name a backup ID and --to POOL[/NAMESPACE]/IMAGE, or --velero-backup NAME")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if rh.velero != "" {
				rh.cluster, rh.force, rh.verify = cluster, opts.Force, opts.ReadBack
				return runRehydrate(cmd, g, rf, rh)
			}
			ctx := cmd.Context()
			ref, err := parseSpec(to, false)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			b, err := g.bridge()
			if err != nil {
				return err
			}
			defer b.Close()
			// Connecting to Ceph and opening the repository (scrypt, a few
			// GETs) are independent: done together, the restore starts sooner.
			connect := async(func() (*rbd.Cluster, error) { return cephCluster(ctx, g, b, cluster) })
			defer connect() // before b.Close
			repo, err := rf.open(ctx, cmd)
			if err != nil {
				return err
			}
			m, err := repo.LoadBackup(ctx, args[0])
			if err != nil {
				return err
			}
			cl, err := connect()
			if err != nil {
				return err
			}
			opts.Parallel = rf.parallel
			t := backup.Target{Cluster: cl, Pool: ref.Pool, Namespace: ref.Namespace, Image: ref.Image}
			if err := backup.Restore(ctx, repo, m, t, opts); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored backup %s (%s, %s) into %s\n", m.ID, bytesIEC(uint64(m.Size)), checksum(m), to)
			return nil
		},
	}
	addRepoFlags(cmd, rf)
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "target image POOL[/NAMESPACE]/IMAGE (required with an ID)")
	f.StringVar(&cluster, "cluster", "", "target cluster: a clusterID of ceph-csi's config")
	f.BoolVar(&opts.Force, "force", false, "overwrite the target image if it exists")
	f.BoolVar(&opts.KeepPartial, "keep-partial", false, "keep the image a failed restore created")
	f.StringVar(&opts.Snapshot, "snapshot", "", "create this snapshot on the restored image")
	f.BoolVar(&opts.ReadBack, "verify", false, "read the restored image back from Ceph and compare it chunk by chunk with the backup")
	f.StringVar(&opts.Features, "features", "", "image features instead of the backup's, e.g. layering,exclusive-lock")
	addRehydrateFlags(cmd, rh)
	return cmd
}

func newCatCmd(g *globals) *cobra.Command {
	rf := &repoFlags{}
	var format string
	cmd := &cobra.Command{
		Use:   "cat ID --format raw|rbd-diff",
		Short: "Stream a backup to stdout, for Ceph's own rbd import / import-diff",
		Long: `cat writes a backup to standard output, verifying every chunk on the way and the image's
SHA-256 at the end (a mismatch fails loudly and, for raw, holds back the last piece):

  lifeboat cat ID --format raw | rbd import - POOL/IMAGE
  rbd create --size BYTES POOL/IMAGE && lifeboat cat ID --format rbd-diff | rbd import-diff - POOL/IMAGE

Use set -o pipefail so a failed cat fails the pipeline.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != backup.FormatRaw && format != backup.FormatRBDDiff {
				return fmt.Errorf("--format %q: use raw or rbd-diff", format)
			}
			repo, err := rf.open(cmd.Context(), cmd)
			if err != nil {
				return err
			}
			m, err := repo.LoadBackup(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return backup.Cat(cmd.Context(), repo, m, cmd.OutOrStdout(), format, rf.parallel)
		},
	}
	addRepoFlags(cmd, rf)
	cmd.Flags().StringVar(&format, "format", backup.FormatRaw, "raw or rbd-diff")
	return cmd
}

// checksum names what a restore was proven against.
func checksum(m *objectstore.Manifest) string {
	if m.SHA256 != "" {
		return "sha256 " + m.SHA256
	}
	return "extents digest " + m.Digest
}
