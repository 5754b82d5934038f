package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-backup/lifeboat/kube/backup"
	"github.com/lifeboat-backup/lifeboat/objectstore"
)

func newBackupsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "backups", Short: "List and show the backups in the repository"}
	rf := &repoFlags{}
	var pvc, velero string
	list := &cobra.Command{
		Use:   "list",
		Short: "List backups, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			repo, err := rf.open(cmd.Context(), cmd)
			if err != nil {
				return err
			}
			cat, err := repo.Backups(cmd.Context(), true)
			if err != nil {
				return err
			}
			if err := printList(cmd, g, selectBackups(cat.Backups, pvc, velero), cat.Damaged); err != nil {
				return err
			}
			if len(cat.Damaged) > 0 {
				warnDamaged(cmd, cat.Damaged)
				return errProblems
			}
			return nil
		},
	}
	addRepoFlags(list, rf)
	list.Flags().StringVar(&pvc, "pvc", "", "only backups of this PVC (NAMESPACE/NAME)")
	list.Flags().StringVar(&velero, "velero-backup", "", "only backups made for this Velero backup")

	rfShow := &repoFlags{}
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one backup's manifest (without its chunk list)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, err := rfShow.open(cmd.Context(), cmd)
			if err != nil {
				return err
			}
			m, err := repo.LoadBackup(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if ok, err := printStructured(cmd.OutOrStdout(), g.output, m.Summary); ok {
				return err
			}
			printSummary(cmd, m)
			return nil
		},
	}
	addRepoFlags(show, rfShow)
	cmd.AddCommand(list, show, newBackupsCheckCmd(g), newForgetCmd(g))
	return cmd
}

// listRow is one line of `backups list -o json`: a backup, or a damaged
// one (only its id, the object and the reason are known).
type listRow struct {
	objectstore.Summary
	State  string `json:"state"` // ok or damaged
	Object string `json:"object,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// printList prints the readable backups, oldest first, then the damaged
// ones (which no filter can select: what they are of is unknown).
func printList(cmd *cobra.Command, g *globals, ok []objectstore.Summary, damaged []objectstore.Damaged) error {
	rows := []listRow{}
	for _, s := range ok {
		rows = append(rows, listRow{Summary: s, State: "ok"})
	}
	for _, d := range damaged {
		rows = append(rows, listRow{Summary: objectstore.Summary{ID: d.ID}, State: "damaged", Object: d.Object, Reason: d.Reason})
	}
	if done, err := printStructured(cmd.OutOrStdout(), g.output, rows); done {
		return err
	}
	w := newTable(cmd.OutOrStdout())
	row(w, "ID", "STATE", "CREATED", "PVC", "VELERO BACKUP", "SOURCE", "SIZE", "NEW", "STORED")
	for _, r := range rows {
		if r.State == "damaged" {
			row(w, r.ID, r.State, "", "", "", r.Reason, "", "", "")
			continue
		}
		row(w, r.ID, r.State, r.Created.Format("2006-01-02 15:04:05"), r.Source[backup.KeyPVC], r.Source[backup.KeyVeleroBackup],
			sourceSpec(r.Summary), bytesIEC(uint64(r.Size)), bytesIEC(uint64(r.Stats.BytesNew)), bytesIEC(uint64(r.Stats.BytesStored)))
	}
	return w.Flush()
}

// warnDamaged names the damaged backups on stderr and says what to do.
func warnDamaged(cmd *cobra.Command, damaged []objectstore.Damaged) {
	for _, d := range damaged {
		fmt.Fprintf(cmd.ErrOrStderr(), "damaged backup %s: %s\n", d.ID, d.Reason)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%d damaged backups skipped: restore their objects from a copy, or `backups forget --force` them "+
		"(repo prune deletes nothing while one is there)\n", len(damaged))
}

// selectBackups returns those of all made of PVC pvc and for Velero
// backup velero ("": any).
func selectBackups(all []objectstore.Summary, pvc, velero string) []objectstore.Summary {
	out := []objectstore.Summary{}
	for _, s := range all {
		if (pvc == "" || s.Source[backup.KeyPVC] == pvc) && (velero == "" || s.Source[backup.KeyVeleroBackup] == velero) {
			out = append(out, s)
		}
	}
	return out
}

// checkResult is one line of `backups check -o json`.
type checkResult struct {
	ID     string `json:"id"`
	Status string `json:"status"` // OK, Damaged, or Unreadable (a newer format)
	Error  string `json:"error,omitempty"`
}

// newBackupsCheckCmd reads backups back from S3 and checks every page and
// chunk against its id and the extents against the digest, writing nothing:
// proof that a backup restores, without a restore.
func newBackupsCheckCmd(g *globals) *cobra.Command {
	rf := &repoFlags{}
	var all bool
	cmd := &cobra.Command{
		Use:   "check ID... | --all",
		Short: "Read backups back from S3 and check every chunk, without restoring (exit 1 if one is damaged)",
		RunE: func(cmd *cobra.Command, ids []string) error {
			if all == (len(ids) > 0) {
				return errors.New("name backup ids or --all (not both)")
			}
			repo, err := rf.open(cmd.Context(), cmd)
			if err != nil {
				return err
			}
			if all {
				// Damaged ones too: checking each names what is damaged in it.
				cat, err := repo.Backups(cmd.Context(), false)
				if err != nil {
					return err
				}
				for _, s := range cat.Backups {
					ids = append(ids, s.ID)
				}
				for _, d := range cat.Damaged {
					ids = append(ids, d.ID)
				}
			}
			results := []checkResult{}
			damaged := 0
			for _, id := range ids {
				res, err := checkBackup(cmd.Context(), repo, id, rf.parallel)
				if all && errors.Is(err, objectstore.ErrBackupNotFound) {
					continue // forgotten since the listing
				}
				if err != nil {
					return err
				}
				if res.Status != "OK" {
					damaged++
				}
				results = append(results, res)
			}
			if ok, err := printStructured(cmd.OutOrStdout(), g.output, results); !ok {
				w := newTable(cmd.OutOrStdout())
				row(w, "ID", "STATUS", "ERROR")
				for _, r := range results {
					row(w, r.ID, r.Status, r.Error)
				}
				if err := w.Flush(); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%d backups checked, %d damaged\n", len(results), damaged)
			} else if err != nil {
				return err
			}
			if damaged > 0 {
				return errProblems
			}
			return nil
		},
	}
	addRepoFlags(cmd, rf)
	cmd.Flags().BoolVar(&all, "all", false, "check every backup in the repository")
	return cmd
}

// checkBackup verifies one backup. Damage (a missing or corrupt chunk or
// page, a wrong digest) is a result; anything else (S3 unreachable, no
// such backup) is an error: the check could not be made.
func checkBackup(ctx context.Context, repo *objectstore.Repository, id string, parallel int) (checkResult, error) {
	m, err := repo.LoadBackup(ctx, id)
	if err == nil {
		err = repo.Verify(ctx, m, parallel)
	}
	var ce *objectstore.ChunkError
	var pe *objectstore.PageError
	switch {
	case err == nil:
		return checkResult{ID: id, Status: "OK"}, nil
	case errors.Is(err, objectstore.ErrCorrupt) || errors.Is(err, objectstore.ErrChecksumMismatch) ||
		(errors.As(err, &ce) || errors.As(err, &pe)) && errors.Is(err, objectstore.ErrNotFound):
		return checkResult{ID: id, Status: "Damaged", Error: err.Error()}, nil
	case errors.Is(err, objectstore.ErrIncompatible):
		return checkResult{ID: id, Status: "Unreadable", Error: err.Error()}, nil
	}
	return checkResult{}, fmt.Errorf("checking backup %s: %w", id, err)
}

func sourceSpec(s objectstore.Summary) string {
	spec := s.Source[backup.KeyPool] + "/"
	if ns := s.Source[backup.KeyNamespace]; ns != "" {
		spec += ns + "/"
	}
	return spec + s.Source[backup.KeyImage] + "@" + s.Source[backup.KeySnapshot]
}

func printSummary(cmd *cobra.Command, m *objectstore.Manifest) {
	w := newTable(cmd.OutOrStdout())
	defer w.Flush()
	kv := func(k string, v any) { row(w, k+":", v) }
	kv("ID", m.ID)
	kv("Created", m.Created)
	kv("Parent", m.Parent)
	kv("Method", m.Method)
	kv("Size", fmt.Sprintf("%s (%d bytes)", bytesIEC(uint64(m.Size)), m.Size))
	if m.SHA256 != "" {
		kv("SHA-256", m.SHA256)
	}
	if m.Digest != "" {
		kv("Digest", m.Digest)
	}
	kv("Chunk size", bytesIEC(uint64(m.ChunkSize)))
	kv("Chunks", fmt.Sprintf("%d (%d new)", m.Stats.Chunks, m.Stats.ChunksNew))
	kv("Bytes read/reused/new/stored", fmt.Sprintf("%s / %s / %s / %s", bytesIEC(uint64(m.Stats.BytesRead)),
		bytesIEC(uint64(m.Stats.BytesReused)), bytesIEC(uint64(m.Stats.BytesNew)), bytesIEC(uint64(m.Stats.BytesStored))))
	if m.LockedUntil != nil {
		kv("Locked until", fmt.Sprintf("%s (S3 Object Lock; its data until %s; %d locks of reused chunks read, %d extended)",
			m.LockedUntil.UTC().Format(time.RFC3339), m.DataLockedUntil.UTC().Format(time.RFC3339),
			m.Stats.RetentionChecks, m.Stats.RetentionExtended))
	}
	kv("Source", sourceSpec(m.Summary))
	for _, k := range sortedKeys(m.Source) {
		kv("  "+k, m.Source[k])
	}
	for _, k := range sortedKeys(m.Meta) {
		kv("  "+k, m.Meta[k])
	}
}
