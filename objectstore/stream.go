package objectstore

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"

	"github.com/sourcegraph/conc/stream"
)

// Stream reads backup m back. fn is called once per extent, in offset
// order, with the chunk's verified plaintext; holes are skipped (they are
// zeros: a restore into a fresh, zeroed image need not write them). data
// is only valid during the call.
//
// Up to parallel chunks (default DefaultParallel) are fetched at once. A
// missing or damaged chunk fails with a *ChunkError naming it and its
// offset (a damaged extents page with a *PageError). Every chunk is
// checked against its id, and the extents against the manifest's digest
// before the first call to fn: together they prove the stream bit-exact.
// Memory is bounded: parallel+2 chunks and one page of extents. A version 1
// manifest, which has no digest, is checked against its whole-stream SHA-256 once every extent has been
// passed to fn; a mismatch returns an error wrapping ErrChecksumMismatch,
// and whatever fn wrote must then be treated as bad.
func (r *Repository) Stream(ctx context.Context, m *Manifest, parallel int, fn func(off int64, data []byte) error) error {
	return r.stream(ctx, m, parallel, fn, false)
}

// StreamAll is Stream with the holes filled in: fn sees every byte of the
// image in order, zero runs as pieces of at most 1 MiB from a shared
// read-only buffer. It suits writing a raw image to a file or pipe.
func (r *Repository) StreamAll(ctx context.Context, m *Manifest, parallel int, fn func(off int64, data []byte) error) error {
	return r.stream(ctx, m, parallel, fn, true)
}

// Verify reads every chunk of m and checks it and the image checksum,
// without writing anything.
func (r *Repository) Verify(ctx context.Context, m *Manifest, parallel int) error {
	return r.Stream(ctx, m, parallel, func(int64, []byte) error { return nil })
}

// chunkBufs are the buffers one fetched chunk lives in: the object as
// downloaded (decrypted in place) and, if compressed, the plaintext.
type chunkBufs struct{ obj, plain []byte }

// freeList recycles chunk buffers. It is bounded, and an empty list just
// means new buffers: the prefetch window, not the list, bounds memory.
// New buffers are as large as any chunk object and plaintext (obj, plain
// caps), so a recycled one always fits: a buffer grown from a small
// compressed chunk to a raw one would be new memory to fault in, and
// garbage for the collector.
type freeList struct {
	c          chan chunkBufs
	obj, plain int
}

func (f freeList) get() chunkBufs {
	select {
	case b := <-f.c:
		return b
	default:
		return chunkBufs{obj: make([]byte, 0, f.obj), plain: make([]byte, 0, f.plain)}
	}
}

func (f freeList) put(b chunkBufs) {
	select {
	case f.c <- b:
	default:
	}
}

func (r *Repository) stream(ctx context.Context, m *Manifest, parallel int, fn func(int64, []byte) error, fill bool) error {
	if m.Repository != r.cfg.ID {
		return fmt.Errorf("backup %s is from another repository", m.ID)
	}
	if err := m.check(r.cfg.ChunkSize); err != nil {
		return fmt.Errorf("%w: backup %s: %v", ErrCorrupt, m.ID, err)
	}
	if err := r.checkExtents(ctx, m); err != nil {
		return err
	}
	if parallel <= 0 {
		parallel = DefaultParallel
	}
	s := &streamer{fn: fn, fill: fill}
	if m.Digest == "" {
		s.h = sha256.New()
	}
	if err := r.fetchInOrder(ctx, m, parallel, s.extent); err != nil {
		return err
	}
	if err := s.zeros(m.Size); err != nil {
		return err
	}
	if s.h == nil {
		return nil
	}
	if sum := hex.EncodeToString(s.h.Sum(nil)); sum != m.SHA256 {
		return fmt.Errorf("%w: backup %s: restored image hashes to %s, the manifest says %s",
			ErrChecksumMismatch, m.ID, sum, m.SHA256)
	}
	return nil
}

// fetchInOrder fetches the chunks of m's extents, up to parallel at once,
// and passes them to fn in order, through a conc stream (callbacks in
// order on one goroutine). Memory is bounded: the stream holds at most
// parallel+2 chunks (the fetches, its queue of parallel+1 and the chunk
// being passed to fn). Buffers are recycled: a restore then touches the
// same few megabytes over and over. A chunk's buffers go back to the
// free list in its callback, after its fetch returned.
func (r *Repository) fetchInOrder(ctx context.Context, m *Manifest, parallel int, fn func(Extent, []byte) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chunk := int64(r.cfg.ChunkSize)
	free := freeList{make(chan chunkBufs, parallel+2), int(r.maxEncoded(chunk)), int(chunk)}
	p := &prefetch{r: r, ctx: ctx, cancel: cancel, free: free, fn: fn}
	s := stream.New().WithMaxGoroutines(parallel)
	x := r.Extents(ctx, m)
	for k := 0; ctx.Err() == nil; k++ {
		e, ok := x.Next()
		if !ok {
			break
		}
		s.Go(p.task(k, e))
	}
	s.Wait()
	return cmp.Or(p.err, x.Err(), ctx.Err())
}

// prefetch is what the tasks and callbacks of one fetchInOrder share.
type prefetch struct {
	r      *Repository
	ctx    context.Context
	cancel context.CancelFunc
	free   freeList
	fn     func(Extent, []byte) error
	err    error // the first error: callbacks run one at a time, Wait orders them before the return
	due    int   // chunks delivered: a callback whose chunk is not the one due knows that a task or fn before it panicked
}

// task fetches chunk k, of extent e, and returns its callback.
func (p *prefetch) task(k int, e Extent) stream.Task {
	return func() stream.Callback {
		bufs := p.free.get()
		data, err := p.r.fetchInto(p.ctx, e, &bufs) // after an error, ctx ends an S3 fetch at once
		return func() { p.callback(k, e, data, bufs, err) }
	}
}

// callback passes chunk k to fn unless the stream stopped, and recycles
// its buffers; the first error stops the stream.
func (p *prefetch) callback(k int, e Extent, data []byte, bufs chunkBufs, err error) {
	switch {
	case p.err != nil:
	case k != p.due:
		p.err = errPanicked // Wait re-raises the panic
	case err != nil:
		p.err = err
	default:
		p.err = p.fn(e, data)
	}
	if p.err != nil {
		p.cancel()
		return
	}
	p.due++
	p.free.put(bufs)
}

// errPanicked stops a stream after a fetch or callback panicked; conc's
// Wait then re-raises the panic, so it is never returned.
var errPanicked = errors.New("an earlier fetch or callback panicked")

// streamer hashes the image as it goes (version 1 manifests) and fills
// holes if asked.
type streamer struct {
	h    hash.Hash // nil: no whole-stream hash needed
	fn   func(int64, []byte) error
	fill bool
	next int64
}

// extent passes data, at e's offset, to fn after the zeros before it.
func (s *streamer) extent(e Extent, data []byte) error {
	if err := s.zeros(e.Offset); err != nil {
		return err
	}
	if s.h != nil {
		s.h.Write(data)
	}
	if err := s.fn(e.Offset, data); err != nil {
		return err
	}
	s.next = e.Offset + e.Length
	return nil
}

// zeros covers [next, to) with zeros.
func (s *streamer) zeros(to int64) error {
	for s.next < to {
		n := min(to-s.next, int64(len(zeros)))
		if s.h != nil {
			s.h.Write(zeros[:n])
		}
		if s.fill {
			if err := s.fn(s.next, zeros[:n]); err != nil {
				return err
			}
		}
		s.next += n
	}
	return nil
}

// ReadChunk downloads, decodes and verifies the chunk of extent e: for an
// exporter that patches a chunk of its parent backup.
func (r *Repository) ReadChunk(ctx context.Context, e Extent) ([]byte, error) { return r.fetch(ctx, e) }

// ChunkID is the id this repository gives data.
func (r *Repository) ChunkID(data []byte) ChunkID { return r.keys.id(data) }

// fetch downloads, decodes and verifies the chunk of extent e.
func (r *Repository) fetch(ctx context.Context, e Extent) ([]byte, error) {
	return r.fetchInto(ctx, e, &chunkBufs{})
}

// fetchInto is fetch in (and updating) bufs: the plaintext returned is
// inside bufs.obj or bufs.plain.
func (r *Repository) fetchInto(ctx context.Context, e Extent, bufs *chunkBufs) ([]byte, error) {
	name := chunkName(e.ID)
	obj, err := r.getInto(ctx, name, bufs.obj, r.maxEncoded(e.Length))
	if err == nil {
		bufs.obj = obj
		var data []byte
		var unpacked bool
		if data, unpacked, err = r.decodeTo(bufs.plain, name, obj, int(e.Length)); err == nil {
			if unpacked {
				bufs.plain = data
			}
			if int64(len(data)) == e.Length && r.keys.id(data) == e.ID {
				return data, nil
			}
			err = fmt.Errorf("%w: content does not match its id", ErrCorrupt)
		}
	}
	return nil, &ChunkError{ID: e.ID, Offset: e.Offset, Err: err}
}
