package objectstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// ManifestVersion is the manifest format this package writes and the
// newest it reads. Version 2 added Digest and made SHA256 optional: a
// backup that reuses its parent's chunks without reading them cannot hash
// the whole stream. Version 3 moved the extents into pages (extents.go).
const ManifestVersion = 3

// maxManifest bounds a decoded manifest: an extent takes about 100 bytes
// of JSON, so 1 GiB is some 10 million extents (40 TiB of non-zero data at
// 4 MiB chunks).
const maxManifest = 1 << 30

// Summary is what a manifest says about a backup, without its extents.
// objectstore does not interpret Source or Meta: the exporter fills them in
// (Ceph fsid, pool, image, snapshot, Kubernetes object names, RBD object
// order and features, …) and matches on them to find a parent.
type Summary struct {
	Version    int       `json:"version"`
	ID         string    `json:"id"`
	Repository string    `json:"repository"` // Config.ID
	Created    time.Time `json:"created"`
	Parent     string    `json:"parent,omitempty"`
	Size       int64     `json:"size"` // image size in bytes
	ChunkSize  int       `json:"chunk_size"`
	// SHA256 is of all Size bytes, holes as zeros, when the export read
	// them all; empty when it reused chunks of its parent unread.
	SHA256 string `json:"sha256,omitempty"`
	// Digest (version 2) is ExtentsDigest of the extents. Each chunk's id
	// is the hash of its content, so the digest is the root of a hash tree
	// over the whole image: a restore that checks every chunk against its
	// id and the extents against the digest is proven bit-exact.
	Digest string            `json:"digest,omitempty"`
	Method string            `json:"method,omitempty"`
	Source map[string]string `json:"source,omitempty"`
	Meta   map[string]string `json:"meta,omitempty"`
	Stats  Stats             `json:"stats"`
	// LockedUntil (object lock) is when the backup's manifest stops being
	// locked: its creation plus the policy's duration. DataLockedUntil is
	// a date before which none of its chunks and pages can be deleted
	// either: never earlier than LockedUntil.
	LockedUntil     *time.Time `json:"locked_until,omitempty"`
	DataLockedUntil *time.Time `json:"data_locked_until,omitempty"`
}

// Stats count what a backup did.
type Stats struct {
	BytesRead   int64 `json:"bytes_read"`   // bytes passed to Write
	BytesNew    int64 `json:"bytes_new"`    // plaintext bytes of uploaded chunks
	BytesStored int64 `json:"bytes_stored"` // encoded bytes uploaded
	Chunks      int64 `json:"chunks"`       // extents (non-zero chunks)
	ChunksNew   int64 `json:"chunks_new"`   // chunks uploaded
	// BytesReused are bytes of chunks taken from the parent backup without
	// being read again (BackupWriter.Reuse).
	BytesReused int64 `json:"bytes_reused,omitempty"`
	// RetentionChecks count the object-lock dates read (a HEAD each) of
	// chunks the backup reuses; RetentionExtended those it extended.
	RetentionChecks   int64 `json:"retention_checks,omitempty"`
	RetentionExtended int64 `json:"retention_extended,omitempty"`
}

// Manifest describes one backup: the summary plus where the data is. Read
// the extents with Repository.Extents, whatever the version.
type Manifest struct {
	Summary
	// Pages (version 3) list the pages that hold the extents, in order.
	Pages []Page `json:"pages,omitempty"`
	// Extents (versions 1 and 2) are the non-zero chunks in offset order;
	// every byte not covered is zero.
	Extents []Extent `json:"extents,omitempty"`
}

// Extent maps image bytes [Offset, Offset+Length) to a chunk.
type Extent struct {
	Offset int64   `json:"off"`
	Length int64   `json:"len"`
	ID     ChunkID `json:"id"`
}

// newBackupID makes an id that sorts by creation time (UTC, to the
// millisecond) and stays unique across concurrent writers.
func newBackupID(t time.Time) string {
	return t.UTC().Format("20060102T150405.000Z") + "-" + randomHex(4)
}

func manifestName(id string) string { return "backups/" + id }

// ExtentsDigest is the hex SHA-256 of the text
//
//	lifeboat extents v1\n<size> <chunk size>\n<off> <len> <id>\n…
//
// with one line per extent, in order: the root of a two-level hash tree
// over the image (see Manifest.Digest).
func ExtentsDigest(size int64, chunkSize int, extents []Extent) string {
	d := newDigester(size, chunkSize)
	for _, e := range extents {
		d.add(e)
	}
	return d.sum()
}

func (r *Repository) saveManifest(ctx context.Context, m *Manifest) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	name := manifestName(m.ID)
	until := time.Time{}
	if m.LockedUntil != nil {
		until = *m.LockedUntil
	}
	return r.putUntil(ctx, name, r.encode(nil, name, data), until)
}

// LoadBackup reads and checks the manifest of backup id.
func (r *Repository) LoadBackup(ctx context.Context, id string) (*Manifest, error) {
	m := &Manifest{}
	if err := r.loadManifest(ctx, id, m); err != nil {
		return nil, err
	}
	if err := m.check(r.cfg.ChunkSize); err != nil {
		return nil, fmt.Errorf("%w: backup %s: %v", ErrCorrupt, id, err)
	}
	return m, m.checkDigest()
}

// HasBackup reports whether backup id's manifest is in the repository.
func (r *Repository) HasBackup(ctx context.Context, id string) (bool, error) {
	return r.exists(ctx, manifestName(id))
}

// stillThere fails with ErrBackupNotFound if backup id's manifest is gone.
func (r *Repository) stillThere(ctx context.Context, id string) error {
	ok, err := r.HasBackup(ctx, id)
	switch {
	case err != nil:
		return fmt.Errorf("checking backup %s: %w", id, err)
	case !ok:
		return fmt.Errorf("%w: backup %s was forgotten since it was chosen as the parent: run the export again", ErrBackupNotFound, id)
	}
	return nil
}

// summary lets loadManifest check the Summary of whatever it decodes into.
func (s *Summary) summary() *Summary { return s }

// loadManifest decodes backup id into v, a *Manifest or a *Summary (which
// skips the extents), or a struct embedding a Summary.
func (r *Repository) loadManifest(ctx context.Context, id string, v interface{ summary() *Summary }) error {
	if id == "" || strings.ContainsAny(id, "/\\") || strings.Contains(id, "..") {
		return fmt.Errorf("%w: %q is not a backup id", ErrBackupNotFound, id)
	}
	name := manifestName(id)
	obj, err := r.get(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: no backup %q in repository at %s", ErrBackupNotFound, id, r.be)
	}
	if err != nil {
		return fmt.Errorf("reading backup %s: %w", id, err)
	}
	data, err := r.decode(name, obj, 0)
	if err != nil {
		return fmt.Errorf("backup %s: %w", id, err)
	}
	s := v.summary()
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: backup %s: %v", ErrCorrupt, id, err)
	}
	switch {
	case s.Version > ManifestVersion:
		return fmt.Errorf("%w: backup %s has manifest version %d, this lifeboat reads up to %d: upgrade lifeboat",
			ErrIncompatible, id, s.Version, ManifestVersion)
	case s.Version < 1:
		return fmt.Errorf("%w: backup %s has bad manifest version %d", ErrCorrupt, id, s.Version)
	case s.ID != id:
		return fmt.Errorf("%w: object %s holds backup %q", ErrCorrupt, name, s.ID)
	case s.Repository != r.cfg.ID:
		return fmt.Errorf("%w: backup %s belongs to repository %s", ErrCorrupt, id, s.Repository)
	}
	return nil
}

// check verifies what can be checked without reading pages: extents (up
// to version 2) sorted, disjoint, chunk-aligned and inside the image;
// pages (version 3) likewise, and as many extents as the stats count.
func (m *Manifest) check(chunkSize int) error {
	switch {
	case m.ChunkSize != chunkSize:
		return fmt.Errorf("chunk size %d, repository uses %d", m.ChunkSize, chunkSize)
	case m.Version >= 2 && m.Digest == "":
		return errors.New("no extents digest")
	case m.Digest == "" && m.SHA256 == "":
		return errors.New("no checksum")
	case m.Version >= 3 && len(m.Extents) > 0:
		return errors.New("extents outside pages")
	case m.Version < 3 && len(m.Pages) > 0:
		return errors.New("pages in a version 2 manifest")
	}
	next, count := int64(0), int64(0)
	for _, p := range m.Pages {
		if p.Offset < next || p.Count <= 0 || p.End <= p.Offset || p.End > m.Size {
			return fmt.Errorf("bad extents page %s at offset %d", p.ID, p.Offset)
		}
		next, count = p.End, count+int64(p.Count)
	}
	if m.Version >= 3 && count != m.Stats.Chunks {
		return fmt.Errorf("pages hold %d extents, the stats say %d", count, m.Stats.Chunks)
	}
	next = 0
	for _, e := range m.Extents {
		if e.Offset < next || e.Offset%int64(chunkSize) != 0 || e.Length <= 0 ||
			e.Length > int64(chunkSize) || e.Offset+e.Length > m.Size {
			return fmt.Errorf("bad extent at offset %d length %d", e.Offset, e.Length)
		}
		next = e.Offset + e.Length
	}
	return nil
}

// checkDigest compares in-manifest extents (up to version 2) with the
// digest; pages are checked as they are read (ExtentReader).
func (m *Manifest) checkDigest() error {
	if m.Digest == "" || len(m.Pages) > 0 {
		return nil
	}
	if got := ExtentsDigest(m.Size, m.ChunkSize, m.Extents); got != m.Digest {
		return fmt.Errorf("%w: backup %s: its extents hash to %s, the manifest says %s",
			ErrChecksumMismatch, m.ID, got, m.Digest)
	}
	return nil
}

// backupIDs lists the ids of all backups, in lexical (= time) order.
func (r *Repository) backupIDs(ctx context.Context) ([]string, error) {
	var ids []string
	err := r.list(ctx, "backups/", func(name string, _ int64) error {
		// Deeper names are not ours (Velero, sharing a bucket root, keeps
		// backups/<name>/…): skip them rather than fail.
		if id := strings.TrimPrefix(name, "backups/"); !strings.Contains(id, "/") {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing backups at %s: %w", r.be, err)
	}
	return ids, nil
}

// liveBackupIDs is backupIDs without the backups marked forgotten (see
// ForgetBackup): forgotten is forgotten, even while S3 Object Lock or
// delete-less credentials keep the manifest until a prune can delete it.
// Listing, retention, the agent and incremental parents never see them.
func (r *Repository) liveBackupIDs(ctx context.Context) ([]string, error) {
	ids, err := r.backupIDs(ctx)
	if err != nil {
		return nil, err
	}
	marked, err := r.names(ctx, marksPrefix)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(ids, func(id string) bool { return marked[markName(id)] }), nil
}

// Damaged names a backup that cannot be read as it was written: its
// manifest fails authentication or decoding, or an object it lists is
// missing. One such backup never hides the others.
type Damaged struct {
	ID     string `json:"id"`
	Object string `json:"object"` // the damaged or missing object
	Reason string `json:"reason"`
}

// damage tells errors that say a stored object is damaged, missing from a
// backup that lists it, or of a newer format (unreadable here, so as good
// as damaged to this build) from failures to reach the repository.
func damage(err error) bool {
	var pe *PageError
	var ce *ChunkError
	return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrChecksumMismatch) || errors.Is(err, ErrIncompatible) ||
		(errors.As(err, &pe) || errors.As(err, &ce)) && errors.Is(err, ErrNotFound)
}

// Catalog is what Backups found: the readable backups, oldest first, and
// the damaged ones.
type Catalog struct {
	Backups []Summary
	Damaged []Damaged
}

// Backups reads every manifest (a few parallel GETs, so it costs
// O(total manifest size)) and returns the readable backups and the
// damaged ones apart: a damaged manifest does not stop the listing. With
// pages, it also lists the extents pages (one LIST, about one page per 8
// GiB of a backup's data) and counts a backup that lists a missing one as
// damaged. An error means the repository could not be read at all.
func (r *Repository) Backups(ctx context.Context, pages bool) (Catalog, error) {
	ids, err := r.liveBackupIDs(ctx)
	if err != nil {
		return Catalog{}, err
	}
	var have map[string]bool
	if pages {
		if have, err = r.names(ctx, "pages/"); err != nil {
			return Catalog{}, err
		}
	}
	type listed struct {
		Summary
		Pages []Page `json:"pages,omitempty"`
	}
	got := make([]listed, len(ids))
	errs := make([]error, len(ids))
	var g errgroup.Group
	g.SetLimit(DefaultParallel)
	for i, id := range ids {
		g.Go(func() error {
			errs[i] = r.loadManifest(ctx, id, &got[i])
			return nil // each backup's error is judged on its own below
		})
	}
	_ = g.Wait()
	var cat Catalog
	for i, id := range ids {
		err := errs[i]
		switch {
		case errors.Is(err, ErrBackupNotFound):
			continue // forgotten since the listing
		case err != nil && !damage(err):
			return Catalog{}, err
		case err != nil:
			cat.Damaged = append(cat.Damaged, Damaged{ID: id, Object: manifestName(id), Reason: err.Error()})
			continue
		}
		if p := missingPage(got[i].Pages, have); p != "" {
			cat.Damaged = append(cat.Damaged, Damaged{ID: id, Object: p, Reason: fmt.Sprintf("backup %s: extents page %s is missing", id, p)})
			continue
		}
		cat.Backups = append(cat.Backups, got[i].Summary)
	}
	slices.SortFunc(cat.Backups, func(a, b Summary) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return cat, nil
}

// missingPage is the name of the first of pages not in have (nil: none
// is checked).
func missingPage(pages []Page, have map[string]bool) string {
	for _, p := range pages {
		if name := pageName(p.ID); have != nil && !have[name] {
			return name
		}
	}
	return ""
}

// names lists the objects under prefix.
func (r *Repository) names(ctx context.Context, prefix string) (map[string]bool, error) {
	have := map[string]bool{}
	err := r.list(ctx, prefix, func(name string, _ int64) error {
		have[name] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s at %s: %w", prefix, r.be, err)
	}
	return have, nil
}

// FindLatest returns the newest readable backup whose summary satisfies
// filter (typically: same source image), or nil and no error if there is
// none. A damaged manifest is passed over: an older parent costs only
// more reading.
func (r *Repository) FindLatest(ctx context.Context, filter func(*Summary) bool) (*Manifest, error) {
	cat, err := r.Backups(ctx, false)
	if err != nil {
		return nil, err
	}
	all := cat.Backups
	for i := len(all) - 1; i >= 0; i-- {
		if filter(&all[i]) {
			return r.LoadBackup(ctx, all[i].ID)
		}
	}
	return nil, nil
}
