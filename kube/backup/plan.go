package backup

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/lifeboat-backup/lifeboat/objectstore"
	"github.com/lifeboat-backup/lifeboat/rbd"
)

// Paths an export can take, recorded in the manifest (meta "path").
const (
	// PathFull reads every allocated chunk: there is no previous backup.
	PathFull = "full"
	// PathHash reads every allocated chunk and uploads only those whose
	// hash the previous backup lacks: works everywhere, reads everything.
	PathHash = "hash"
	// PathDiffByID asks Ceph which extents of the parent volume changed
	// between the previous backup's parent snapshot and this one's (both
	// in ceph-csi's trash namespace) and reads only those (Reef and later).
	PathDiffByID = "diff-by-id"
	// PathDiffByName asks Ceph which extents changed since the previous
	// backup's snapshot of the same image, by name (every release).
	PathDiffByName = "diff-by-name"
)

// Reasons an incremental export falls back from a diff to PathHash,
// recorded in the manifest (meta "fallback") and counted by the agent.
const (
	FallbackUnsupported    = "diff-by-id-unsupported"        // librbd before Reef
	FallbackParentSnapGone = "previous-parent-snapshot-gone" // the previous backup's snapshot was deleted
	FallbackSnapGone       = "previous-snapshot-gone"        // plain image: its previous snapshot is gone or was re-created
	FallbackFlattened      = "flattened"                     // this clone or the previous one has no parent
	FallbackParentsDiffer  = "parents-differ"                // the two clones come from different images
	FallbackOwnData        = "clone-has-own-data"            // the previous clone was written to after cloning
	FallbackNewerParent    = "previous-backup-is-newer"      // the previous backup is of a later snapshot
)

// Paths and Fallbacks list every value, for metrics and docs.
var (
	Paths     = []string{PathFull, PathHash, PathDiffByID, PathDiffByName}
	Fallbacks = []string{FallbackUnsupported, FallbackParentSnapGone, FallbackSnapGone, FallbackFlattened,
		FallbackParentsDiffer, FallbackOwnData, FallbackNewerParent}
)

// Plan says how an export gets each chunk of the snapshot.
type Plan struct {
	Path     string
	Fallback string // why no diff was used although there is a parent backup
	Method   string // for people: the manifest's method
	// Read marks the chunks read whole from Ceph.
	Read rbd.Bitmap
	// Patch maps chunks of which only some ranges changed since the parent
	// backup to those ranges: the chunk is the parent's (or zeros) with
	// the ranges read from Ceph.
	Patch map[uint64][]Span
	// Reuse: every chunk of the parent backup not in Read or Patch is taken
	// from it unread.
	Reuse bool
	// Changed is how many bytes Ceph reported changed (diff paths).
	Changed uint64
}

// Span is a byte range of the image.
type Span struct{ Off, Len uint64 }

// Snapshot is what an export knows of the snapshot it reads; the manifest
// records it so that the next export can diff against it.
type Snapshot struct {
	Reader  *rbd.SnapshotReader
	Cluster *rbd.Cluster
	ImageID string
	SnapID  uint64
	Taken   time.Time   // when Ceph made the snapshot
	Origin  *rbd.Origin // nil: not a clone, or flattened
	// OwnBytes is how much data the clone holds itself (written after it
	// was cloned); 0 for a ceph-csi snapshot.
	OwnBytes uint64
}

// allocated reads every allocated chunk, parents included; against a
// parent backup, unchanged chunks are found by hash and not uploaded.
func allocated(s *Snapshot, parent *objectstore.Manifest, chunk uint64, fallback string) (*Plan, error) {
	bm, err := s.Reader.Allocated(chunk)
	if err != nil {
		return nil, err
	}
	p := &Plan{Path: PathFull, Method: "full: allocated extents", Read: bm}
	if parent != nil {
		p.Path, p.Fallback = PathHash, fallback
		p.Method = "incremental: allocated extents, unchanged chunks found by hash against " + parent.ID
		if fallback != "" {
			p.Method += " (no diff: " + fallback + ")"
		}
	}
	return p, nil
}

// planFor decides where each chunk of snapshot s comes from, given the
// previous backup of the same volume (nil for a full backup): only what
// Ceph says changed since it, by snapshot name when both backups are of
// one image, by snapshot id on the parent volume when they are two
// ceph-csi snapshot clones. When Ceph cannot tell, it reads every
// allocated chunk and says why.
func planFor(s *Snapshot, parent *objectstore.Manifest, chunk uint64) (*Plan, error) {
	if parent == nil {
		return allocated(s, nil, chunk, "")
	}
	ch := newChanges(s.Reader.Size, chunk)
	path, fallback, err := diff(s, parent, ch)
	if err != nil {
		return nil, err
	}
	if fallback != "" {
		return allocated(s, parent, chunk, fallback)
	}
	// Chunks the parent backup does not cover as this image needs
	// (the image was resized) are read whole.
	if prev := uint64(parent.Size); prev != s.Reader.Size {
		lo := min(prev, s.Reader.Size) / chunk * chunk
		ch.add(lo, s.Reader.Size-lo)
	}
	return &Plan{
		Path: path, Read: ch.whole, Patch: ch.patch, Reuse: true, Changed: ch.bytes,
		Method: fmt.Sprintf("incremental: %s, %d bytes changed since %s", path, ch.bytes, parent.ID),
	}, nil
}

// diff feeds ch with what changed since parent, or names the reason it
// cannot.
func diff(s *Snapshot, parent *objectstore.Manifest, ch *changes) (path, fallback string, err error) {
	prev := parent.Source
	if prev[KeyImageID] == s.ImageID {
		return PathDiffByName, diffByName(s, prev, ch), nil
	}
	o := s.Origin
	switch {
	case o == nil || prev[KeyParentImageID] == "":
		return "", FallbackFlattened, nil
	case prev[KeyParentImageID] != o.ImageID || prev[KeyParentPoolID] != strconv.FormatUint(o.PoolID, 10) ||
		prev[KeyParentNamespace] != o.Namespace:
		return "", FallbackParentsDiffer, nil
	case parent.Meta[MetaOwnBytes] != "0":
		return "", FallbackOwnData, nil
	}
	from, err := strconv.ParseUint(prev[KeyParentSnapID], 10, 64)
	if err != nil {
		return "", FallbackFlattened, nil
	}
	if from > o.SnapID {
		return "", FallbackNewerParent, nil
	}
	err = s.Cluster.ChangedBetween(o.Pool, o.Namespace, o.ImageID, from, o.SnapID, ch.add)
	switch {
	case errors.Is(err, rbd.ErrDiffByIDUnsupported):
		return "", FallbackUnsupported, nil
	case errors.Is(err, rbd.ErrSnapshotGone):
		return "", FallbackParentSnapGone, nil
	case err != nil:
		return "", "", err
	}
	// Beyond the overlap the clone does not read its parent.
	prevOverlap, _ := strconv.ParseUint(parent.Meta[MetaOverlap], 10, 64)
	if lo := min(prevOverlap, o.Overlap); lo < s.Reader.Size {
		ch.add(lo, s.Reader.Size-lo)
	}
	if s.OwnBytes > 0 {
		if err := s.Reader.OwnData(ch.add); err != nil {
			return "", "", err
		}
	}
	return PathDiffByID, "", nil
}

func diffByName(s *Snapshot, prev map[string]string, ch *changes) (fallback string) {
	from, err := strconv.ParseUint(prev[KeySnapID], 10, 64)
	if err != nil {
		return FallbackSnapGone
	}
	if from > s.SnapID {
		return FallbackNewerParent
	}
	// The name must still be the snapshot the parent backup read.
	if id, err := s.Reader.SnapIDOf(prev[KeySnapshot]); err != nil || id != from {
		return FallbackSnapGone
	}
	if err := s.Reader.ChangedSince(prev[KeySnapshot], ch.add); err != nil {
		return FallbackSnapGone
	}
	return ""
}

// Bounds on the ranges a plan holds, so memory stays small whatever the
// volume size and however scattered the writes: past them a chunk is read
// whole instead.
const (
	maxSpansPerChunk = 8
	maxSpans         = 1 << 16 // 1 MiB of spans
)

// changes collects changed extents per chunk.
type changes struct {
	size, chunk uint64
	whole       rbd.Bitmap
	patch       map[uint64][]Span
	spans       int
	bytes       uint64
}

func newChanges(size, chunk uint64) *changes {
	return &changes{size: size, chunk: chunk, whole: rbd.NewBitmap(size, chunk), patch: map[uint64][]Span{}}
}

// add records [off, off+length) as changed.
func (c *changes) add(off, length uint64) {
	end := min(off+length, c.size)
	c.bytes += end - min(off, end)
	for off < end {
		i := off / c.chunk
		next := min(end, (i+1)*c.chunk)
		c.addIn(i, Span{off, next - off})
		off = next
	}
}

func (c *changes) addIn(i uint64, s Span) {
	if c.whole.Has(i) {
		return
	}
	spans := c.patch[i]
	if n := len(spans); n > 0 && spans[n-1].Off+spans[n-1].Len >= s.Off && s.Off >= spans[n-1].Off {
		last := &spans[n-1]
		last.Len = max(last.Off+last.Len, s.Off+s.Len) - last.Off
	} else {
		spans = append(spans, s)
		c.spans++
	}
	full := min(c.chunk, c.size-i*c.chunk)
	if len(spans) > maxSpansPerChunk || c.spans > maxSpans || (len(spans) == 1 && spans[0].Len >= full) {
		c.whole.Set(i)
		c.spans -= len(spans)
		delete(c.patch, i)
		return
	}
	c.patch[i] = spans
}
