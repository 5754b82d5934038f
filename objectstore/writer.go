package objectstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultParallel is how many chunks a writer encodes and uploads at once.
const DefaultParallel = 8

// BackupOptions describe a backup about to be written.
type BackupOptions struct {
	Size   int64     // image size in bytes
	Parent *Manifest // previous backup of the same source, or nil
	Method string    // free text: "full", "incremental from …", …
	Source map[string]string
	Meta   map[string]string
	// Parallel bounds the chunks being hashed, compressed, encrypted and
	// uploaded at once, and so the memory: about 2×Parallel chunks.
	Parallel int
	// Progress, if set, is called after every Write, on the writing
	// goroutine, with the counters so far.
	Progress func(Stats)
	// StreamSHA256 also hashes the whole image (holes as zeros) into the
	// manifest's SHA256, comparable with `rbd export … - | sha256sum`: one
	// more pass over every byte, on one core. Restores do not need it: the
	// extents digest proves them.
	StreamSHA256 bool
}

// BackupWriter writes one backup. Write is called from a single goroutine
// with chunk-aligned, ascending offsets; the work after hashing the stream
// runs on Parallel background workers. Not safe for concurrent use.
//
// Unchanged chunks cost no upload: their id is that of the parent's chunk
// at the same offset (or, failing that, found by a HEAD). A chunk known
// unchanged without reading it (Ceph said so) is passed to Reuse instead
// of Write; the manifest then has no whole-stream SHA-256, which needs
// every byte, only the extents digest.
//
// Memory is bounded whatever the image size: Parallel chunk buffers, one
// page of extents (flushed to the repository as it fills), one page of
// the parent's, and a bounded set of chunk ids seen.
type BackupWriter struct {
	r        *Repository
	m        Manifest
	chunk    int64
	progress func(Stats)

	stream hash.Hash // nil unless asked for, and once a chunk was reused unread
	next   int64     // offset up to which the stream is covered

	page    []*Extent      // the page being filled; IDs are set by the workers
	pending sync.WaitGroup // jobs of page not yet stored
	pages   []Page
	digest  *digester
	parent  *ExtentCursor // the parent's extents, walked beside the image

	lock   *heldLock       // shared: keeps a prune out until Commit or Abort
	ctx    context.Context // ends when the backup fails or is aborted
	cancel context.CancelCauseFunc
	bufs   chan []byte // free chunk buffers: bounds memory
	jobs   chan job
	wg     sync.WaitGroup
	closed bool

	mu    sync.Mutex
	known map[ChunkID]bool // stored already, or claimed by a worker (bounded: maxKnown)

	// Object lock (zero need: none). Every chunk the backup relies on must
	// stay locked until need, the manifest's date; dataUntil is the
	// earliest date any of them is locked to, which the manifest records.
	// parentOK: the parent's data is locked long enough already.
	need      time.Time
	parentOK  bool
	untilMu   sync.Mutex
	dataUntil time.Time

	bytesRead, chunks, bytesNew, bytesStored, chunksNew, bytesReused atomic.Int64
	misses, blind                                                    atomic.Int64 // see ask
	retChecks, retExtended                                           atomic.Int64
}

type job struct {
	e      *Extent
	data   []byte
	parent *ChunkID // the parent's chunk at the same offset, if any
	reused bool     // e is the parent's, unread (Reuse): only its lock to keep
}

// maxKnown bounds the set of chunk ids a writer remembers (about 4 MB):
// past it the set starts again, and a repeated chunk costs a HEAD or a
// second PUT of the same content, never correctness.
const maxKnown = 1 << 16

var errAborted = errors.New("backup aborted")

// NewBackup starts a backup. ctx bounds the whole backup, background
// uploads included. It takes a shared lock on the repository (see Lock),
// released by Commit or Abort, and fails with ErrLocked while a prune runs.
func (r *Repository) NewBackup(ctx context.Context, opt BackupOptions) (*BackupWriter, error) {
	if opt.Size < 0 {
		return nil, fmt.Errorf("negative image size %d", opt.Size)
	}
	par := opt.Parallel
	if par <= 0 {
		par = DefaultParallel
	}
	now := time.Now().UTC()
	w := &BackupWriter{
		r: r, chunk: int64(r.cfg.ChunkSize), progress: opt.Progress,
		bufs: make(chan []byte, par), jobs: make(chan job, par), known: map[ChunkID]bool{},
		m: Manifest{Summary: Summary{
			Version: ManifestVersion, ID: newBackupID(now), Repository: r.cfg.ID, Created: now,
			Size: opt.Size, ChunkSize: r.cfg.ChunkSize, Method: opt.Method, Source: opt.Source, Meta: opt.Meta,
		}},
	}
	if p := opt.Parent; p != nil {
		if p.Repository != r.cfg.ID || p.ChunkSize != r.cfg.ChunkSize {
			return nil, fmt.Errorf("parent backup %s is from another repository", p.ID)
		}
		w.m.Parent = p.ID
	}
	w.ctx, w.cancel = context.WithCancelCause(ctx)
	lock, _, err := r.acquire(ctx, LockExport, w.m.ID, w.cancel) // a lost lock fails the backup at once
	if err != nil {
		w.cancel(nil)
		return nil, err
	}
	w.lock = lock
	if p := opt.Parent; p != nil {
		// The parent was chosen before the lock: a forget and a prune may
		// have removed it and its chunks since.
		if err := r.stillThere(ctx, p.ID); err != nil {
			w.lock.release()
			w.cancel(nil)
			return nil, err
		}
	}
	w.lockData(opt.Parent)
	if opt.StreamSHA256 {
		w.stream = sha256.New()
	}
	w.digest = newDigester(opt.Size, r.cfg.ChunkSize)
	if p := opt.Parent; p != nil {
		w.parent = r.Cursor(w.ctx, p)
	}
	for range par {
		w.bufs <- nil // allocated on first use
		w.wg.Add(1)
		go w.worker()
	}
	return w, nil
}

// lockData sets what object lock asks of the backup's data.
func (w *BackupWriter) lockData(parent *Manifest) {
	w.need = w.r.retainUntil(manifestName(w.m.ID), w.m.Created)
	if w.need.IsZero() {
		return
	}
	w.dataUntil = w.r.retainUntil(chunkName(ChunkID{}), w.m.Created)
	if parent != nil && parent.DataLockedUntil != nil && !parent.DataLockedUntil.Before(w.need) {
		w.parentOK = true
		w.relied(*parent.DataLockedUntil)
	}
}

// relied notes that the backup relies on an object locked until until.
func (w *BackupWriter) relied(until time.Time) {
	w.untilMu.Lock()
	defer w.untilMu.Unlock()
	if until.Before(w.dataUntil) {
		w.dataUntil = until
	}
}

// keep makes sure chunk name, stored before this backup, stays locked
// as long as the backup: one HEAD, and a retention PUT if it is shorter.
func (w *BackupWriter) keep(name string) error {
	if w.need.IsZero() {
		return nil
	}
	until, extended, err := w.r.keepUntil(w.ctx, name, w.need)
	if err != nil {
		return fmt.Errorf("keeping %s locked as long as backup %s: %w", name, w.m.ID, err)
	}
	w.retChecks.Add(1)
	if extended {
		w.retExtended.Add(1)
	}
	w.relied(until)
	return nil
}

// SetMeta adds a fact to the manifest's meta, for facts known only at the
// end (how much was read, …).
func (w *BackupWriter) SetMeta(key, value string) {
	if w.m.Meta == nil {
		w.m.Meta = map[string]string{}
	}
	w.m.Meta[key] = value
}

// ID is the id the backup will have once committed.
func (w *BackupWriter) ID() string { return w.m.ID }

// Write adds the chunk at off. off is a multiple of the chunk size and
// past the previous Write; bytes skipped in between are zeros. data is a
// full chunk, or shorter only if it ends the image. An all-zero chunk is a
// hole and is not stored. data may be reused once Write returns. A failed
// Write changes nothing; once a background upload has failed, every call
// returns that error.
func (w *BackupWriter) Write(ctx context.Context, off int64, data []byte) error {
	if err := w.check(off, int64(len(data))); err != nil {
		return err
	}
	hole := allZero(data)
	var buf []byte
	var parent *ChunkID
	if !hole {
		var err error
		if parent, err = w.parentAt(off); err != nil {
			return err
		}
		if buf, err = w.buffer(ctx); err != nil {
			return err
		}
	}
	if w.stream != nil {
		hashZeros(w.stream, off-w.next)
		w.stream.Write(data)
	}
	w.next = off + int64(len(data))
	w.bytesRead.Add(int64(len(data)))
	if !hole {
		e := &Extent{Offset: off, Length: int64(len(data))}
		w.page = append(w.page, e)
		w.chunks.Add(1)
		w.pending.Add(1)
		w.jobs <- job{e: e, data: append(buf[:0], data...), parent: parent} // workers drain it without waiting on us
		if err := w.pageFull(); err != nil {
			return err
		}
	}
	if w.progress != nil {
		w.progress(w.Stats())
	}
	return nil
}

// parentAt is the id of the parent's chunk at off, if it has one there.
func (w *BackupWriter) parentAt(off int64) (*ChunkID, error) {
	if w.parent == nil {
		return nil, nil
	}
	e, ok, err := w.parent.At(off)
	if err != nil || !ok {
		return nil, err
	}
	return &e.ID, nil
}

// pageFull stores the page once it holds ExtentsPerPage extents.
func (w *BackupWriter) pageFull() error {
	if len(w.page) < ExtentsPerPage {
		return nil
	}
	return w.flushPage()
}

// flushPage waits until every chunk of the page is stored (at most
// Parallel uploads, once a page), then stores the page.
func (w *BackupWriter) flushPage() error {
	w.pending.Wait()
	if w.ctx.Err() != nil {
		return fmt.Errorf("backup failed: %w", context.Cause(w.ctx))
	}
	if len(w.page) == 0 {
		return nil
	}
	extents := make([]Extent, len(w.page))
	for i, e := range w.page {
		extents[i] = *e
		w.digest.add(*e)
	}
	p, n, err := w.r.savePage(w.ctx, extents)
	if err != nil {
		w.cancel(err)
		return err
	}
	w.pages = append(w.pages, p)
	w.bytesStored.Add(int64(n))
	w.page = w.page[:0]
	return nil
}

// Reuse adds extent e of the parent backup, unread: the caller knows the
// image did not change there since the parent was taken. It follows the
// same ordering rules as Write.
func (w *BackupWriter) Reuse(e Extent) error {
	if err := w.check(e.Offset, e.Length); err != nil {
		return err
	}
	id, err := w.parentAt(e.Offset)
	if err != nil {
		return err
	}
	if id == nil || *id != e.ID {
		return fmt.Errorf("reusing chunk %s at offset %d: not the parent backup's chunk there", e.ID, e.Offset)
	}
	w.stream = nil
	w.next = e.Offset + e.Length
	w.page = append(w.page, &e)
	w.chunks.Add(1)
	w.bytesReused.Add(e.Length)
	if !w.need.IsZero() && !w.parentOK {
		w.pending.Add(1)
		select { // a worker checks its lock
		case w.jobs <- job{e: &e, reused: true}:
		case <-w.ctx.Done():
			w.pending.Done()
			return fmt.Errorf("backup failed: %w", context.Cause(w.ctx))
		}
	}
	if err := w.pageFull(); err != nil {
		return err
	}
	if w.progress != nil {
		w.progress(w.Stats())
	}
	return nil
}

func (w *BackupWriter) check(off, n int64) error {
	switch {
	case w.closed:
		return errors.New("backup writer already committed or aborted")
	case w.ctx.Err() != nil:
		return fmt.Errorf("backup failed: %w", context.Cause(w.ctx))
	case off < w.next:
		return fmt.Errorf("write at offset %d: offsets must ascend (next is %d)", off, w.next)
	case off%w.chunk != 0:
		return fmt.Errorf("write at offset %d: not a multiple of the chunk size %d", off, w.chunk)
	case n == 0 || n > w.chunk || off+n > w.m.Size:
		return fmt.Errorf("write of %d bytes at offset %d: outside the image or larger than a chunk", n, off)
	case n < w.chunk && off+n != w.m.Size:
		return fmt.Errorf("write of %d bytes at offset %d: only the image's last chunk may be short", n, off)
	}
	return nil
}

// buffer waits for a free chunk buffer: that wait is the backpressure
// that bounds memory to Parallel chunks in flight.
func (w *BackupWriter) buffer(ctx context.Context) ([]byte, error) {
	select {
	case buf := <-w.bufs:
		if cap(buf) < int(w.chunk) {
			buf = make([]byte, 0, w.chunk)
		}
		return buf, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-w.ctx.Done():
		return nil, fmt.Errorf("backup failed: %w", context.Cause(w.ctx))
	}
}

func (w *BackupWriter) worker() {
	defer w.wg.Done()
	var scratch []byte
	for j := range w.jobs {
		if w.ctx.Err() == nil { // after a failure, only drain
			if err := w.store(j, &scratch); err != nil {
				w.cancel(err)
			}
		}
		w.pending.Done()
		if !j.reused { // a reused extent took no buffer
			w.bufs <- j.data
		}
	}
}

// store names the chunk and uploads it unless it is already there.
func (w *BackupWriter) store(j job, scratch *[]byte) error {
	if j.reused {
		return w.keep(chunkName(j.e.ID))
	}
	id := w.r.keys.id(j.data)
	j.e.ID = id
	if j.parent != nil && *j.parent == id { // unchanged since the parent
		if w.parentOK {
			return nil
		}
		return w.keep(chunkName(id))
	}
	if !w.claim(id) {
		return nil // seen already: its first sight keeps it
	}
	name := chunkName(id)
	if w.ask() {
		ok, err := w.r.exists(w.ctx, name)
		if err != nil {
			return fmt.Errorf("checking chunk %s (offset %d): %w", id, j.e.Offset, err)
		}
		if ok {
			w.misses.Store(0)
			return w.keep(name)
		}
		w.misses.Add(1)
	}
	*scratch = w.r.encode(*scratch, name, j.data)
	if err := w.r.put(w.ctx, name, *scratch); err != nil {
		return fmt.Errorf("uploading chunk %s (offset %d): %w", id, j.e.Offset, err)
	}
	w.chunksNew.Add(1)
	w.bytesNew.Add(j.e.Length)
	w.bytesStored.Add(int64(len(*scratch)))
	return nil
}

// Asking S3 whether a chunk exists costs a request per chunk (about a
// millisecond of server CPU on MinIO), and in a first backup the answer is
// almost always no. After blindAfter misses in a row chunks are uploaded
// without asking: a PUT of a chunk that exists rewrites the same content,
// so this costs only bandwidth, never correctness. One chunk in probeEvery
// still asks, so a run of stored chunks (an interrupted export run again,
// another volume's data) turns asking back on.
const (
	blindAfter = 32
	probeEvery = 16
)

func (w *BackupWriter) ask() bool {
	return w.misses.Load() < blindAfter || w.blind.Add(1)%probeEvery == 0
}

// claim reports whether this worker is the first to see id. A later
// duplicate needs nothing: if the first upload fails, so does the backup.
func (w *BackupWriter) claim(id ChunkID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.known[id] {
		return false
	}
	if len(w.known) >= maxKnown {
		clear(w.known)
	}
	w.known[id] = true
	return true
}

// Stats returns the counters so far.
func (w *BackupWriter) Stats() Stats {
	return Stats{
		BytesRead: w.bytesRead.Load(), BytesNew: w.bytesNew.Load(), BytesStored: w.bytesStored.Load(),
		Chunks: w.chunks.Load(), ChunksNew: w.chunksNew.Load(), BytesReused: w.bytesReused.Load(),
		RetentionChecks: w.retChecks.Load(), RetentionExtended: w.retExtended.Load(),
	}
}

// Commit waits for every upload, then writes the manifest. Only then does
// the backup exist: a crash before leaves chunks that a re-run reuses, never
// a backup that looks complete. Bytes after the last Write are zeros.
func (w *BackupWriter) Commit(ctx context.Context) (*Manifest, error) {
	if w.closed {
		return nil, errors.New("backup writer already committed or aborted")
	}
	w.stop()
	defer w.cancel(nil)
	defer w.lock.release()
	if w.ctx.Err() != nil {
		return nil, fmt.Errorf("backup %s failed, no manifest written: %w", w.m.ID, context.Cause(w.ctx))
	}
	if err := w.flushPage(); err != nil {
		return nil, fmt.Errorf("backup %s failed, no manifest written: %w", w.m.ID, err)
	}
	if w.stream != nil {
		hashZeros(w.stream, w.m.Size-w.next)
		w.m.SHA256 = hex.EncodeToString(w.stream.Sum(nil))
	}
	w.m.Stats = w.Stats()
	w.m.Pages = w.pages
	w.m.Digest = w.digest.sum()
	if !w.need.IsZero() {
		if time.Until(w.need) < time.Second {
			return nil, fmt.Errorf("backup %s failed, no manifest written: it took longer than the repository's object-lock "+
				"duration (%v) to write, so it could not be locked for that long from its start; raise the duration", w.m.ID, w.r.cfg.ObjectLock.Retain())
		}
		need, data := w.need, w.dataUntil
		w.m.LockedUntil, w.m.DataLockedUntil = &need, &data
	}
	if err := w.lock.check(ctx); err != nil {
		return nil, fmt.Errorf("backup %s: %w", w.m.ID, err)
	}
	// The manifest must land while the lock is valid: a prune that takes
	// the lock for stale must find it or never see the chunks it names.
	mctx, cancel, err := w.lock.bound(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", w.m.ID, err)
	}
	defer cancel()
	if err := w.r.saveManifest(mctx, &w.m); err != nil {
		return nil, fmt.Errorf("writing manifest of backup %s: %w", w.m.ID, err)
	}
	return &w.m, nil
}

// Abort stops the workers and writes no manifest. Chunks already uploaded
// stay (a re-run reuses them). It is a no-op after Commit, so it can be
// deferred.
func (w *BackupWriter) Abort() {
	if !w.closed {
		w.cancel(errAborted)
		w.stop()
		w.lock.release()
	}
}

func (w *BackupWriter) stop() {
	w.closed = true
	close(w.jobs)
	w.wg.Wait()
}

// zeros is a read-only block of zeros for hashing holes and spotting them.
var zeros = make([]byte, 1<<20)

func hashZeros(h hash.Hash, n int64) {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		h.Write(zeros[:k])
		n -= k
	}
}

func allZero(b []byte) bool {
	for len(b) > 0 {
		k := min(len(b), len(zeros))
		if !bytes.Equal(b[:k], zeros[:k]) {
			return false
		}
		b = b[k:]
	}
	return true
}
