package rbd

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"iter"
	"math/bits"
	"slices"
	"sync/atomic"

	"github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"
	"github.com/sourcegraph/conc/stream"
)

// SnapshotReader reads an image as it was at a snapshot, through the clone:
// data the clone inherits from its parents (all ancestors, including trash
// snapshots and images in the RBD trash) reads like its own.
type SnapshotReader struct {
	Spec string
	Size uint64
	snap string
	// objSize is the RADOS object size: ReadChunks reads up to an object
	// at once.
	objSize uint64
	img     *librbd.Image
	ioctx   *rados.IOContext
	read    atomic.Uint64 // bytes read from Ceph
	cl      *Cluster
}

// BytesRead is how many bytes were read from Ceph so far.
func (r *SnapshotReader) BytesRead() uint64 { return r.read.Load() }

// OpenSnapshot opens pool/ns/image@snap read-only.
func (c *Cluster) OpenSnapshot(pool, namespace, image, snap string) (*SnapshotReader, error) {
	spec := Ref{Pool: pool, Namespace: namespace, Image: image, Snapshot: snap}.Spec()
	ioctx, err := c.IOContext(pool, namespace)
	if err != nil {
		return nil, err
	}
	img, err := librbd.OpenImageReadOnly(ioctx, image, snap)
	if err != nil {
		ioctx.Destroy()
		if errors.Is(err, librbd.ErrNotFound) {
			return nil, fmt.Errorf("%w: %s", ErrImageNotFound, spec)
		}
		return nil, fmt.Errorf("opening %s: %w", spec, err)
	}
	size, err := img.GetSize()
	if err != nil {
		img.Close()
		ioctx.Destroy()
		return nil, fmt.Errorf("size of %s: %w", spec, err)
	}
	info, err := img.Stat()
	if err != nil {
		img.Close()
		ioctx.Destroy()
		return nil, fmt.Errorf("layout of %s: %w", spec, err)
	}
	return &SnapshotReader{Spec: spec, Size: size, objSize: info.Obj_size, snap: snap, img: img, ioctx: ioctx, cl: c}, nil
}

// Close releases the image.
func (r *SnapshotReader) Close() {
	r.img.Close()
	r.ioctx.Destroy()
}

// Bitmap marks fixed-size chunks of an image: bit i covers
// [i*chunk, (i+1)*chunk). 1 TiB in 4 MiB chunks is 32 KiB of bitmap, so
// memory stays small whatever the volume size.
type Bitmap struct {
	Chunk uint64
	N     uint64 // number of chunks
	words []uint64
}

// NewBitmap covers size bytes in chunks of chunk bytes.
func NewBitmap(size, chunk uint64) Bitmap {
	n := (size + chunk - 1) / chunk
	return Bitmap{Chunk: chunk, N: n, words: make([]uint64, (n+63)/64)}
}

// Clone returns an independent copy.
func (b Bitmap) Clone() Bitmap {
	b.words = slices.Clone(b.words)
	return b
}

// Set marks i.
func (b Bitmap) Set(i uint64) { b.words[i/64] |= 1 << (i % 64) }

// Has reports whether i is marked.
func (b Bitmap) Has(i uint64) bool { return b.words[i/64]&(1<<(i%64)) != 0 }

// Count is the number of marked chunks.
func (b Bitmap) Count() uint64 {
	var n int
	for _, w := range b.words {
		n += bits.OnesCount64(w)
	}
	return uint64(n)
}

// MarkRange marks every chunk overlapping [off, off+length).
func (b Bitmap) MarkRange(off, length uint64) {
	if length == 0 {
		return
	}
	last := (off + length - 1) / b.Chunk
	for i := off / b.Chunk; i <= last && i < b.N; i++ {
		b.Set(i)
	}
}

// Allocated marks the chunks that hold data at the snapshot, the parents'
// included, using librbd's diff from the image's creation
// (rbd_diff_iterate2 with include_parent). Holes are never read.
func (r *SnapshotReader) Allocated(chunk uint64) (Bitmap, error) {
	bm := NewBitmap(r.Size, chunk)
	err := r.img.DiffIterate(librbd.DiffIterateConfig{
		Offset: 0, Length: r.Size,
		IncludeParent: librbd.IncludeParent,
		WholeObject:   librbd.DisableWholeObject,
		Callback: func(off, length uint64, exists int, _ interface{}) int {
			if exists != 0 {
				bm.MarkRange(off, length)
			}
			return 0
		},
	})
	if err != nil {
		return bm, fmt.Errorf("listing allocated extents of %s: %w", r.Spec, err)
	}
	return bm, nil
}

// ReadAt reads at off; it is safe for concurrent use.
func (r *SnapshotReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.img.ReadAt(p, off)
	r.read.Add(uint64(n))
	return n, err
}

// Chunk is one chunk read from an image; Data is only valid until the
// callback that received it returns.
type Chunk struct {
	Index uint64
	Off   uint64
	Data  []byte
}

// ReadChunks reads the marked chunks with parallel readers and passes them
// to fn one at a time, in ascending offset order, so the consumer can hash
// the stream. Consecutive marked chunks inside one RADOS object are read
// with one read (see orderedChunks).
func (r *SnapshotReader) ReadChunks(ctx context.Context, bm Bitmap, parallel int, fn func(Chunk) error) error {
	return orderedChunks(ctx, bm, r.Size, min(r.objSize, maxSpan), parallel, r.readChunk, fn)
}

// readChunk reads c, again if Ceph restarts under it (see retry).
func (r *SnapshotReader) readChunk(c *Chunk) error {
	return retry(r.Spec, &r.cl.waiting, func() error {
		n, err := r.ReadAt(c.Data, int64(c.Off))
		if err != nil && n < len(c.Data) {
			return fmt.Errorf("reading %s at offset %d: %w", r.Spec, c.Off, err)
		}
		return nil
	})
}

// ReadChunksFunc is ReadChunks for chunks that read fills in some other
// way (from several sources): read gets a chunk whose Data is a buffer of
// the chunk's length, to be filled.
func ReadChunksFunc(ctx context.Context, bm Bitmap, size uint64, parallel int, read func(*Chunk) error, fn func(Chunk) error) error {
	return orderedChunks(ctx, bm, size, bm.Chunk, parallel, read, fn)
}

// orderedChunks runs read on runs of marked chunks in parallel and delivers
// the chunks to fn one by one, in index order. A run is consecutive marked
// chunks inside one span of the image (span: the RADOS object, say, rounded
// down to whole chunks), read into one buffer: an export of 1 MiB chunks
// from 4 MiB objects then costs librbd and the OSD one read per object
// instead of four, and for a clone one miss in the child and one read in
// the parent instead of four of each. Up to parallel chunks' worth of
// runs (at least two) are read at once: reads of whole objects need no
// more to keep ahead of the consumer (measured), and every buffer counts
// in the peak RSS, the heap growing to 1.25× its live size (GOGC=25).
//
// The runs go through a conc stream (readers at once, callbacks in order
// on one goroutine), which holds at most readers+2 runs' buffers: the
// reads, its queue of readers+1 and the run being delivered. A buffer goes
// back to the free list in its run's callback, after its read returned.
func orderedChunks(ctx context.Context, bm Bitmap, size, span uint64, parallel int, read func(*Chunk) error, fn func(Chunk) error) error {
	parallel = max(parallel, 1)
	span = max(span-span%bm.Chunk, bm.Chunk)
	readers := min(parallel, int(max(2, uint64(parallel)*bm.Chunk/span)))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A free list, not a sync.Pool: a pool is emptied by every GC, and
	// reallocating 4 MiB buffers would bring the next GC sooner.
	p := &prefetch{ctx: ctx, cancel: cancel, free: make(chan []byte, readers+2), span: span, chunk: bm.Chunk, read: read, fn: fn}
	s := stream.New().WithMaxGoroutines(readers)
	k := 0
	for i, n := range runs(bm, size, span) {
		if ctx.Err() != nil {
			break
		}
		s.Go(p.task(k, i, n))
		k++
	}
	s.Wait()
	return cmp.Or(p.err, ctx.Err())
}

// prefetch is what the tasks and callbacks of one orderedChunks share.
type prefetch struct {
	ctx         context.Context
	cancel      context.CancelFunc
	free        chan []byte
	span, chunk uint64
	read        func(*Chunk) error
	fn          func(Chunk) error
	err         error // the first error: callbacks run one at a time, Wait orders them before the return
	due         int   // runs delivered: a callback whose run is not the one due knows that a task or fn before it panicked
}

// task reads run k, n bytes from chunk i, and returns its callback.
func (p *prefetch) task(k int, i, n uint64) stream.Task {
	return func() stream.Callback {
		if p.ctx.Err() != nil { // stopped: read no more
			return func() { p.err = cmp.Or(p.err, p.ctx.Err()) }
		}
		buf := p.buffer()
		c := Chunk{Index: i, Off: i * p.chunk, Data: buf[:n]}
		err := p.read(&c)
		return func() { p.callback(k, c, buf, err) }
	}
}

// callback passes run k to fn unless the stream stopped, and recycles its
// buffer; the first error stops the stream.
func (p *prefetch) callback(k int, c Chunk, buf []byte, err error) {
	switch {
	case p.err != nil:
	case k != p.due:
		p.err = errPanicked // Wait re-raises the panic
	case err != nil:
		p.err = err
	default:
		p.err = deliver(c, p.chunk, p.fn)
	}
	if p.err != nil {
		p.cancel()
		return
	}
	p.due++
	select {
	case p.free <- buf:
	default:
	}
}

// errPanicked stops a stream after a task or callback panicked; conc's
// Wait then re-raises the panic, so it is never returned.
var errPanicked = errors.New("an earlier read or callback panicked")

// buffer is a run's buffer from the free list, or a new one.
func (p *prefetch) buffer() []byte {
	select {
	case b := <-p.free:
		return b
	default:
		return make([]byte, p.span)
	}
}

// runs yields the runs of marked chunks: the index of a run's first chunk
// and the run's length in bytes, a run being consecutive marked chunks
// inside one span.
func runs(bm Bitmap, size, span uint64) iter.Seq2[uint64, uint64] {
	return func(yield func(uint64, uint64) bool) {
		for i := uint64(0); i < bm.N; {
			if !bm.Has(i) {
				i++
				continue
			}
			off := i * bm.Chunk
			end := min(off-off%span+span, size) // the end of off's span
			j := i + 1
			for j < bm.N && j*bm.Chunk < end && bm.Has(j) {
				j++
			}
			if !yield(i, min(j*bm.Chunk, size)-off) {
				return
			}
			i = j
		}
	}
}

// deliver passes run c to fn a chunk at a time.
func deliver(run Chunk, chunk uint64, fn func(Chunk) error) error {
	for k := uint64(0); k*chunk < uint64(len(run.Data)); k++ {
		data := run.Data[k*chunk : min((k+1)*chunk, uint64(len(run.Data)))]
		if err := fn(Chunk{Index: run.Index + k, Off: run.Off + k*chunk, Data: data}); err != nil {
			return err
		}
	}
	return nil
}

// SHA256 hashes all Size bytes of the snapshot (holes as zeros), reading
// only allocated chunks, in parallel; it equals `rbd export ... - | sha256sum`.
func (r *SnapshotReader) SHA256(ctx context.Context, chunk uint64, parallel int) (string, error) {
	bm, err := r.Allocated(chunk)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	var next uint64
	err = r.ReadChunks(ctx, bm, parallel, func(c Chunk) error {
		hashZeros(h, c.Off-next)
		h.Write(c.Data)
		next = c.Off + uint64(len(c.Data))
		return nil
	})
	if err != nil {
		return "", err
	}
	hashZeros(h, r.Size-next)
	return hex.EncodeToString(h.Sum(nil)), nil
}

var zeros = make([]byte, 1<<20)

func hashZeros(h hash.Hash, n uint64) {
	for n > 0 {
		k := min(n, uint64(len(zeros)))
		h.Write(zeros[:k])
		n -= k
	}
}
