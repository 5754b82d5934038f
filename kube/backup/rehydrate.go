package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/lifeboat-backup/lifeboat/objectstore"
	"github.com/lifeboat-backup/lifeboat/rbd"
)

// SnapshotFeatures are the features ceph-csi gives a snapshot image
// (a clone with layering,deep-flatten: internal/rbd/snapshot.go); a
// rehydrated one is a plain image with the same.
const SnapshotFeatures = "layering,deep-flatten"

// ErrForeignImage is wrapped when the target image exists and lifeboat did
// not write it.
var ErrForeignImage = errors.New("an image of that name exists that lifeboat did not write")

// RehydrateOptions tune the rehydration of one volume.
type RehydrateOptions struct {
	Parallel   int
	Force      bool   // overwrite an image lifeboat did not write
	InstanceID string // ceph-csi's --instanceid: the journal directory's suffix
	ReadBack   bool   // read a freshly written image back and compare it
	Progress   func(bytes int64)
}

// Rehydrate makes v's snapshot exist in cl the way ceph-csi left it: the
// image (written from the backup, verified chunk by chunk and against the
// digest), its snapshot of the same name, and the journal object
// csi.snap.<uuid>. It is safe to run again: an image lifeboat already
// rehydrated from this backup and snapshotted is verified against the
// backup and kept; one it began and did not finish is written again; any
// other image of the name is left alone (ErrForeignImage) unless Force.
// It sets v.State.
func Rehydrate(ctx context.Context, repo *objectstore.Repository, cl *rbd.Cluster, v *VolumePlan, opts RehydrateOptions) error {
	err := rehydrate(ctx, repo, cl, v, opts)
	switch {
	case err == nil:
	case errors.Is(err, ErrForeignImage):
		v.State, v.Reason = StateForeign, err.Error()
	default:
		v.State, v.Reason = StateFailed, err.Error()
	}
	return err
}

func rehydrate(ctx context.Context, repo *objectstore.Repository, cl *rbd.Cluster, v *VolumePlan, opts RehydrateOptions) error {
	m, err := repo.LoadBackup(ctx, v.BackupID)
	if err != nil {
		return err
	}
	t := Target{Cluster: cl, Pool: v.Pool, Namespace: v.Namespace, Image: v.Image}
	if err := cl.EnsureNamespace(v.Pool, v.Namespace); err != nil {
		return err
	}
	done, err := existing(ctx, repo, m, t, v, opts)
	if err != nil {
		return err
	}
	if done {
		v.State = StateVerified
	} else {
		ro := RestoreOptions{Parallel: opts.Parallel, Features: SnapshotFeatures, Snapshot: v.Snapshot, ReadBack: opts.ReadBack,
			Meta: map[string]string{rbd.MetaBackupID: m.ID}, Progress: opts.Progress}
		if err := Restore(ctx, repo, m, t, ro); err != nil {
			return err
		}
		v.State = StateRehydrated
	}
	info, err := cl.Inspect(v.Pool, v.Namespace, v.Image, false)
	if err != nil {
		return err
	}
	j := v.Journal
	j.ImageID = info.ID
	if err := cl.WriteSnapJournal(v.Pool, v.Namespace, opts.InstanceID, j); err != nil {
		return err
	}
	v.Journal = j
	return nil
}

// existing deals with an image already at the target: true when it is
// this backup, complete and verified; false when the target is free (an
// unfinished rehydration of lifeboat's is removed, a foreign image too
// with Force).
func existing(ctx context.Context, repo *objectstore.Repository, m *objectstore.Manifest, t Target, v *VolumePlan, opts RehydrateOptions) (bool, error) {
	owner, err := t.Cluster.ImageMeta(t.Pool, t.Namespace, t.Image, rbd.MetaBackupID)
	if errors.Is(err, rbd.ErrImageNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	switch {
	case owner == m.ID:
		info, err := t.Cluster.Inspect(t.Pool, t.Namespace, t.Image, false)
		if err != nil {
			return false, err
		}
		// The snapshot is taken only once every byte is written and flushed.
		if _, ok := info.Snapshot(v.Snapshot); ok {
			if err := VerifyImage(ctx, repo, t, v.Snapshot, m, opts.Parallel); err != nil {
				return false, fmt.Errorf("%s was rehydrated from backup %s before but no longer matches it (%v): remove it (rbd rm) or use --force", t.spec(), m.ID, err)
			}
			return true, nil
		}
		slog.Info("an earlier rehydration did not finish: writing it again", "image", t.spec())
	case !opts.Force:
		who := "lifeboat did not write it"
		if owner != "" {
			who = "lifeboat wrote it from another backup, " + owner
		}
		return false, fmt.Errorf("%w: %s exists and %s: left untouched (--force removes it and its snapshots, then rehydrates)", ErrForeignImage, t.spec(), who)
	default:
		slog.Warn("--force: removing an image lifeboat did not write", "image", t.spec(), "owner", owner)
	}
	return false, t.Cluster.PurgeImage(t.Pool, t.Namespace, t.Image)
}
