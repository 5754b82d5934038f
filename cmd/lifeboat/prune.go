package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lifeboat-backup/lifeboat/objectstore"
)

// newForgetCmd is `backups forget ID...`.
func newForgetCmd() *cobra.Command {
	rf := &repoFlags{}
	var force bool
	cmd := &cobra.Command{
		Use:   "forget ID...",
		Short: "Delete backups (their manifests); `repo prune` then frees the data only they used",
		Long: `forget deletes each backup's manifest, one object, so the backup is gone at once and for good.
Chunks and extents pages stay until ` + "`lifeboat repo prune`" + ` finds that no remaining backup uses them.
Other backups never depend on a forgotten one: each lists all of its own chunks, so forgetting
the parent of an incremental backup leaves the incremental whole. A manifest that cannot be read
(damaged) is deleted only with --force; prune refuses to run while one is there.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, err := rf.open(cmd.Context(), cmd)
			if err != nil {
				return err
			}
			for _, id := range args {
				if err := repo.Forget(cmd.Context(), id, force); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "forgot backup %s\n", id)
			}
			return nil
		},
	}
	addRepoFlags(cmd, rf)
	cmd.Flags().BoolVar(&force, "force", false, "also delete a manifest that cannot be read (damaged)")
	return cmd
}

// newPruneCmd is `repo prune`.
func newPruneCmd(g *globals) *cobra.Command {
	rf := &repoFlags{}
	var opt objectstore.PruneOptions
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Delete the chunks and extents pages no backup references (after backups forget)",
		Long: `prune reads every backup's chunk list, then deletes the chunks and extents pages none of them
references: what forgotten backups and interrupted exports left. If any backup cannot be read,
it deletes nothing.

It takes an exclusive lock: it refuses to start while an export runs, and exports (and the
agent's) fail with "repository is locked" until it ends. Locks not refreshed for 30 minutes
belong to processes that died; prune removes them. --dry-run takes no lock and deletes nothing,
stale locks included. Hosts sharing a repository need clocks that agree within 5 minutes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			repo, err := rf.open(cmd.Context(), cmd)
			if err != nil {
				return err
			}
			opt.Parallel = rf.parallel // deletes in flight
			st, err := repo.Prune(cmd.Context(), opt)
			if err != nil {
				return err
			}
			if ok, err := printStructured(cmd.OutOrStdout(), g.output, st); ok {
				return err
			}
			verb, locks := "deleted", "removed"
			if st.DryRun {
				verb, locks = "would delete", "would remove"
			}
			for _, l := range st.StaleLocks {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s stale %s\n", locks, l)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d backups: kept %d chunks and %d pages; %s %d chunks and %d pages (%s)\n",
				st.Backups, st.ChunksKept, st.PagesKept, verb, st.ChunksDeleted, st.PagesDeleted, bytesIEC(uint64(st.BytesDeleted)))
			return nil
		},
	}
	addRepoFlags(cmd, rf)
	cmd.Flags().BoolVar(&opt.DryRun, "dry-run", false, "count what would be deleted, delete nothing")
	return cmd
}
