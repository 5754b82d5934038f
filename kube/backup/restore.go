package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/lifeboat-backup/lifeboat/objectstore"
	"github.com/lifeboat-backup/lifeboat/rbd"
	"github.com/lifeboat-backup/lifeboat/rbd/rbddiff"
)

// Target is where a restore writes.
type Target struct {
	Cluster   *rbd.Cluster
	Pool      string
	Namespace string
	Image     string
}

func (t Target) spec() string {
	return rbd.Ref{Pool: t.Pool, Namespace: t.Namespace, Image: t.Image}.Spec()
}

// RestoreOptions tune a restore.
type RestoreOptions struct {
	Parallel int
	// Force overwrites an existing image (resized, every byte rewritten);
	// without it an existing image is refused.
	Force bool
	// KeepPartial keeps what a failed restore created, for inspection.
	KeepPartial bool
	// Snapshot, if set, is created on the image once it is restored.
	Snapshot string
	// Features overrides the manifest's features ("" keeps them).
	Features string
	// ReadBack reads the restored image back from Ceph and compares each
	// chunk's id with the backup's: proof of what landed, not only of what
	// was sent.
	ReadBack bool
	// Meta is image-meta set on a created image before any data is
	// written (rehydration marks its images so).
	Meta map[string]string
	// Progress, if set, is told of the bytes of each chunk written.
	Progress func(bytes int64)
}

// Restore writes backup m into a new image (sparse: holes are not written)
// and checks every chunk's hash and the chunk list's digest on the way
// (objectstore.Stream). On failure it removes the image it created unless KeepPartial.
func Restore(ctx context.Context, repo *objectstore.Repository, m *objectstore.Manifest, t Target, opts RestoreOptions) (err error) {
	if opts.Parallel <= 0 {
		opts.Parallel = objectstore.DefaultParallel
	}
	w, created, err := openTarget(t, m, opts)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil && created && !opts.KeepPartial {
			if rerr := t.Cluster.RemoveImage(t.Pool, t.Namespace, t.Image); rerr != nil {
				slog.Error("removing the partial restore", "image", t.spec(), "err", rerr)
			} else {
				err = fmt.Errorf("%w (removed the partial image %s; --keep-partial keeps it)", err, t.spec())
			}
		}
	}()
	if created {
		for k, v := range opts.Meta {
			if err := t.Cluster.SetImageMeta(t.Pool, t.Namespace, t.Image, k, v); err != nil {
				return err
			}
		}
	}
	progress := func(int64) {}
	if opts.Progress != nil {
		progress = opts.Progress
	}
	if !created {
		// Overwriting: holes must become zeros too.
		err = repo.StreamAll(ctx, m, opts.Parallel, func(off int64, data []byte) error {
			progress(int64(len(data)))
			if allZero(data) {
				return w.Zero(uint64(off), uint64(len(data)))
			}
			return w.WriteAt(data, uint64(off))
		})
	} else {
		// A fresh image is zeros: only the extents are written.
		err = repo.Stream(ctx, m, opts.Parallel, func(off int64, data []byte) error {
			progress(int64(len(data)))
			return w.WriteAt(data, uint64(off))
		})
	}
	if err != nil {
		return fmt.Errorf("restoring backup %s into %s: %w", m.ID, t.spec(), err)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if opts.ReadBack {
		if err := readBack(ctx, repo, t, "", m, opts.Parallel); err != nil {
			return err
		}
	}
	if opts.Snapshot != "" {
		return w.Snapshot(opts.Snapshot)
	}
	return nil
}

// VerifyImage reads image t at snapshot snap ("" for its head) and
// compares it with backup m, as restore --verify does.
func VerifyImage(ctx context.Context, repo *objectstore.Repository, t Target, snap string, m *objectstore.Manifest, parallel int) error {
	if parallel <= 0 {
		parallel = objectstore.DefaultParallel
	}
	return readBack(ctx, repo, t, snap, m, parallel)
}

// readBack reads the restored image from Ceph and compares it, chunk by
// chunk, with the backup's extents: each non-zero chunk must be the
// extent at its offset, with the same id.
func readBack(ctx context.Context, repo *objectstore.Repository, t Target, snap string, m *objectstore.Manifest, parallel int) error {
	r, err := t.Cluster.OpenSnapshot(t.Pool, t.Namespace, t.Image, snap)
	if err != nil {
		return err
	}
	defer r.Close()
	bm, err := r.Allocated(uint64(m.ChunkSize))
	if err != nil {
		return err
	}
	// Every extent of the backup must be read back, in order, and nothing else.
	x := repo.Extents(ctx, m)
	want, more := x.Next()
	n := 0
	err = r.ReadChunks(ctx, bm, parallel, func(c rbd.Chunk) error {
		if allZero(c.Data) {
			return nil
		}
		got := objectstore.Extent{Offset: int64(c.Off), Length: int64(len(c.Data)), ID: repo.ChunkID(c.Data)}
		if !more || want != got {
			if err := x.Err(); err != nil {
				return err
			}
			return fmt.Errorf("%s reads back differently from backup %s at offset %d: the image in Ceph is not what was restored",
				t.spec(), m.ID, c.Off)
		}
		n++
		want, more = x.Next()
		return nil
	})
	if err != nil {
		return err
	}
	if more {
		return fmt.Errorf("%s reads back as zeros at offset %d where backup %s has data: the image in Ceph is not what was restored",
			t.spec(), want.Offset, m.ID)
	}
	if err := x.Err(); err != nil {
		return err
	}
	slog.Info("read back", "image", t.spec(), "chunks", n)
	return nil
}

func openTarget(t Target, m *objectstore.Manifest, opts RestoreOptions) (*rbd.ImageWriter, bool, error) {
	featList := m.Meta[MetaFeatures]
	if opts.Features != "" {
		featList = opts.Features
	}
	features, err := rbd.ParseFeatures(featList)
	if err != nil {
		return nil, false, fmt.Errorf("features of backup %s: %w", m.ID, err)
	}
	order, _ := strconv.Atoi(m.Meta[MetaOrder])
	w, err := t.Cluster.CreateImage(t.Pool, t.Namespace, t.Image, uint64(m.Size), features, order, opts.Parallel, m.ChunkSize)
	if err == nil {
		return w, true, nil
	}
	if !errors.Is(err, rbd.ErrImageExists) {
		return nil, false, err
	}
	if !opts.Force {
		return nil, false, fmt.Errorf("%w: refusing to overwrite it (use --force, or restore to another name)", err)
	}
	w, err = t.Cluster.OpenImageForWrite(t.Pool, t.Namespace, t.Image, uint64(m.Size), opts.Parallel, m.ChunkSize)
	return w, false, err
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Formats of Cat.
const (
	FormatRaw     = "raw"
	FormatRBDDiff = "rbd-diff"
)

// Cat streams backup m to out: "raw", every byte of the image, for
// `rbd import - POOL/IMAGE`; or "rbd-diff", the `rbd export-diff` v1 format
// with data records only, for `rbd import-diff - POOL/IMAGE` into an empty
// image of the right size. Chunks are verified as they stream and the
// image's SHA-256 at the end; a corrupt chunk stops the stream before its
// data is written (an rbd-diff stream then lacks its end record, so
// import-diff fails too).
func Cat(ctx context.Context, repo *objectstore.Repository, m *objectstore.Manifest, out io.Writer, format string, parallel int) error {
	switch format {
	case FormatRaw:
		// The last piece is held back until the image checksum is proven, so
		// a bad backup never yields a complete-looking raw stream.
		var held []byte
		err := repo.StreamAll(ctx, m, parallel, func(_ int64, data []byte) error {
			if held != nil {
				if _, err := out.Write(held); err != nil {
					return err
				}
			}
			held = append(held[:0], data...)
			return nil
		})
		if err != nil {
			return err
		}
		_, err = out.Write(held)
		return err
	case FormatRBDDiff:
		d := rbddiff.NewWriter(out, uint64(m.Size), "", "")
		err := repo.Stream(ctx, m, parallel, func(off int64, data []byte) error { return d.Data(uint64(off), data) })
		if err != nil {
			return err
		}
		return d.Close()
	}
	return fmt.Errorf("unknown format %q: use raw or rbd-diff", format)
}
