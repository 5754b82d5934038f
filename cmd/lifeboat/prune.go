package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-backup/lifeboat/kube/backup"
	"github.com/lifeboat-backup/lifeboat/objectstore"
)

// newForgetCmd is `backups forget ID... | --keep-...`.
func newForgetCmd(g *globals) *cobra.Command {
	rf := &repoFlags{}
	var force, dryRun, prune bool
	var pvc, velero string
	var p objectstore.Policy
	cmd := &cobra.Command{
		Use:   "forget ID... | --keep-last N [--keep-daily N ...] [--pvc NS/NAME] [--dry-run] [--prune]",
		Short: "Delete backups (their manifests), by id or by a retention policy; `repo prune` then frees their data",
		Long: `forget deletes each backup's manifest, one object, so the backup is gone at once and for good.
Chunks and extents pages stay until ` + "`lifeboat repo prune`" + ` (or --prune) finds that no remaining backup
uses them. Other backups never depend on a forgotten one: each lists all of its own chunks, so
forgetting the parent of an incremental backup leaves the incremental whole. A manifest that cannot
be read (damaged) is deleted only with --force; prune refuses to run while one is there.

With --keep-* rules instead of ids, forget applies a retention policy to each volume's backups on
its own (a volume: one PVC's source image, or one --image, in one Ceph cluster) and forgets what no
rule keeps: the newest N (--keep-last), the newest of each of the N most recent hours, days, ISO
weeks, months and years that have a backup (UTC), and all taken within a duration of the volume's
newest. Backups rank by when Ceph took their snapshot. Every rule keeps a volume's newest backup,
so no volume loses its last one. --pvc and --velero-backup narrow the backups considered;
--dry-run shows the decisions and forgets nothing.`,
		RunE: func(cmd *cobra.Command, ids []string) error {
			policy := p != (objectstore.Policy{})
			switch {
			case policy == (len(ids) > 0):
				return errors.New("name backup ids or give --keep-* rules (not both)")
			case !policy && (pvc != "" || velero != "" || dryRun):
				return errors.New("--pvc, --velero-backup and --dry-run go with --keep-* rules")
			case dryRun && prune:
				return errors.New("--prune with --dry-run: a dry run forgets nothing, so there is nothing more to prune; run `repo prune --dry-run` to see what is already unreferenced")
			}
			if policy {
				if err := p.Validate(); err != nil {
					return err
				}
			}
			repo, err := rf.open(cmd.Context(), cmd)
			if err != nil {
				return err
			}
			if policy {
				if ids, err = applyPolicy(cmd, g, repo, p, pvc, velero, dryRun); err != nil || dryRun {
					return err
				}
			}
			for _, id := range ids {
				f, err := repo.ForgetBackup(cmd.Context(), id, force)
				if err != nil {
					return err
				}
				printForgotten(cmd, f)
			}
			if !prune {
				return nil
			}
			st, err := repo.Prune(cmd.Context(), objectstore.PruneOptions{Parallel: rf.parallel})
			if err != nil {
				return err
			}
			printPruned(cmd, st)
			return nil
		},
	}
	addRepoFlags(cmd, rf)
	f := cmd.Flags()
	f.BoolVar(&force, "force", false, "also delete a manifest that cannot be read (damaged)")
	f.IntVar(&p.Last, "keep-last", 0, "keep the newest N backups of each volume")
	f.IntVar(&p.Hourly, "keep-hourly", 0, "keep the newest backup of each of the last N hours that have one")
	f.IntVar(&p.Daily, "keep-daily", 0, "keep the newest backup of each of the last N days that have one")
	f.IntVar(&p.Weekly, "keep-weekly", 0, "keep the newest backup of each of the last N ISO weeks that have one")
	f.IntVar(&p.Monthly, "keep-monthly", 0, "keep the newest backup of each of the last N months that have one")
	f.IntVar(&p.Yearly, "keep-yearly", 0, "keep the newest backup of each of the last N years that have one")
	f.DurationVar(&p.Within, "keep-within", 0, "keep every backup taken within this long of the volume's newest (e.g. 720h)")
	f.StringVar(&pvc, "pvc", "", "with --keep-*: only backups of this PVC (NAMESPACE/NAME)")
	f.StringVar(&velero, "velero-backup", "", "with --keep-*: only backups made for this Velero backup")
	f.BoolVar(&dryRun, "dry-run", false, "with --keep-*: show what would be kept and forgotten, forget nothing")
	f.BoolVar(&prune, "prune", false, "then delete the data no remaining backup uses (repo prune)")
	return cmd
}

// applyPolicy prints p's decisions on the selected backups and returns
// the ids it forgets.
func applyPolicy(cmd *cobra.Command, g *globals, repo *objectstore.Repository, p objectstore.Policy, pvc, velero string, dryRun bool) ([]string, error) {
	cat, err := repo.Backups(cmd.Context(), true)
	if err != nil {
		return nil, err
	}
	if len(cat.Damaged) > 0 {
		// Never counted as kept: the policy keeps intact ones in its place.
		warnDamaged(cmd, cat.Damaged)
	}
	decisions := p.Apply(selectBackups(cat.Backups, pvc, velero), backup.Volume, backup.Taken)
	var forget []string
	for _, d := range decisions {
		if !d.Keep {
			forget = append(forget, d.ID)
		}
	}
	if ok, err := printStructured(cmd.OutOrStdout(), g.output, decisions); ok {
		return forget, err
	}
	w := newTable(cmd.OutOrStdout())
	row(w, "ID", "TAKEN", "VOLUME", "PVC", "DECISION", "KEPT BY")
	for _, d := range decisions {
		decision := "keep"
		switch {
		case !d.Keep && dryRun:
			decision = "would forget"
		case !d.Keep:
			decision = "forget"
		}
		row(w, d.ID, d.Taken.UTC().Format("2006-01-02 15:04:05"), d.Source[backup.KeyLineage], d.Source[backup.KeyPVC],
			decision, strings.Join(d.Reasons, ","))
	}
	return forget, w.Flush()
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
			printPruned(cmd, st)
			return nil
		},
	}
	addRepoFlags(cmd, rf)
	cmd.Flags().BoolVar(&opt.DryRun, "dry-run", false, "count what would be deleted, delete nothing")
	return cmd
}

// printForgotten says what forget did with one backup.
func printForgotten(cmd *cobra.Command, f objectstore.Forgotten) {
	switch {
	case !f.Marked:
		fmt.Fprintf(cmd.ErrOrStderr(), "forgot backup %s\n", f.ID)
	case !f.Until.IsZero():
		fmt.Fprintf(cmd.ErrOrStderr(), "backup %s is locked until %s (S3 Object Lock): marked forgotten, "+
			"the first repo prune after then deletes it\n", f.ID, f.Until.UTC().Format(time.RFC3339))
	default:
		fmt.Fprintf(cmd.ErrOrStderr(), "backup %s: %s: marked forgotten, repo prune (with credentials that may delete) deletes it\n",
			f.ID, f.Reason)
	}
}

// printPruned reports what a prune did.
func printPruned(cmd *cobra.Command, st objectstore.PruneStats) {
	verb, locks := "deleted", "removed"
	if st.DryRun {
		verb, locks = "would delete", "would remove"
	}
	for _, l := range st.StaleLocks {
		fmt.Fprintf(cmd.ErrOrStderr(), "%s stale %s\n", locks, l)
	}
	for _, b := range st.BackupsLocked {
		fmt.Fprintf(cmd.ErrOrStderr(), "backup %s, marked forgotten, is locked until %s (S3 Object Lock): kept\n",
			b.ID, b.Until.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%d backups: kept %d chunks and %d pages; %s %d chunks and %d pages (%s)\n",
		st.Backups, st.ChunksKept, st.PagesKept, verb, st.ChunksDeleted, st.PagesDeleted, bytesIEC(uint64(st.BytesDeleted)))
	if st.ObjectsLocked > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "%d unreferenced chunks and pages are locked (S3 Object Lock), the last until %s: "+
			"a prune after then deletes them\n", st.ObjectsLocked, st.LockedUntil.UTC().Format(time.RFC3339))
	}
}

// lockRow is one line of `repo locks -o json`.
type lockRow struct {
	objectstore.Lock
	Name  string `json:"name"`
	Stale bool   `json:"stale"`
}

// newLocksCmd is `repo locks`.
func newLocksCmd(g *globals) *cobra.Command {
	rf := &repoFlags{}
	cmd := &cobra.Command{
		Use:   "locks",
		Short: "List the repository's locks: exports running, a prune running, and stale ones",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			repo, err := rf.open(cmd.Context(), cmd)
			if err != nil {
				return err
			}
			locks, err := repo.Locks(cmd.Context())
			if err != nil {
				return err
			}
			rows := []lockRow{}
			for _, l := range locks {
				rows = append(rows, lockRow{l, strings.TrimPrefix(l.Name, "locks/"), l.Stale(time.Now())})
			}
			if ok, err := printStructured(cmd.OutOrStdout(), g.output, rows); ok {
				return err
			}
			w := newTable(cmd.OutOrStdout())
			row(w, "LOCK", "KIND", "HOST", "PID", "BACKUP", "CREATED", "REFRESHED", "STALE")
			for _, l := range rows {
				row(w, l.Name, l.Kind, l.Host, l.PID, l.Backup, l.Created.Format(time.RFC3339), l.Refreshed.Format(time.RFC3339), l.Stale)
			}
			return w.Flush()
		},
	}
	addRepoFlags(cmd, rf)
	return cmd
}

// newUnlockCmd is `repo unlock`.
func newUnlockCmd() *cobra.Command {
	rf := &repoFlags{}
	cmd := &cobra.Command{
		Use:   "unlock",
		Short: "Remove the stale locks of processes that died (live locks are never removed)",
		Long: `unlock removes the locks not refreshed for 30 minutes: those of processes that died or lost
their lock. A live lock is never removed: wait for its export or prune to end (repo locks shows
who holds it). Prune removes stale locks itself; unlock is for a tidy repo locks.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			repo, err := rf.open(cmd.Context(), cmd)
			if err != nil {
				return err
			}
			removed, err := repo.RemoveStaleLocks(cmd.Context())
			for _, l := range removed {
				fmt.Fprintf(cmd.OutOrStdout(), "removed stale %s\n", l)
			}
			return err
		},
	}
	addRepoFlags(cmd, rf)
	return cmd
}
