package objectstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"strconv"
)

// A backup's extent list grows with the data: about 100 bytes of JSON per
// chunk, 100 MB for a TiB at 1 MiB chunks. So that neither writing nor
// reading a backup holds it whole, manifests from version 3 on keep it in
// pages, objects of at most ExtentsPerPage extents named by their content
// like chunks, and list only the pages' ids. Writers hold one page,
// readers one page at a time: memory stays bounded whatever the volume
// size.

// ExtentsPerPage is how many extents a page holds (about 800 KiB of JSON,
// 8 GiB of data at 1 MiB chunks). A variable so tests can make many pages.
var ExtentsPerPage = 8192

// Page is one page of a version 3 manifest's extent list.
type Page struct {
	ID     ChunkID `json:"id"`    // content address of the page's plaintext
	Offset int64   `json:"off"`   // offset of its first extent
	Count  int     `json:"count"` // extents in it
	End    int64   `json:"end"`   // end of its last extent
}

func pageName(id ChunkID) string {
	s := id.String()
	return "pages/" + s[:2] + "/" + s
}

// savePage stores extents as a page and describes it.
func (r *Repository) savePage(ctx context.Context, extents []Extent) (Page, int, error) {
	data, err := json.Marshal(extents)
	if err != nil {
		return Page{}, 0, err
	}
	id := r.keys.id(data)
	name := pageName(id)
	obj := r.encode(nil, name, data)
	if err := r.put(ctx, name, obj); err != nil {
		return Page{}, 0, fmt.Errorf("uploading extents page %s: %w", id, err)
	}
	last := extents[len(extents)-1]
	return Page{ID: id, Offset: extents[0].Offset, Count: len(extents), End: last.Offset + last.Length}, len(obj), nil
}

// loadPage reads and checks page p.
func (r *Repository) loadPage(ctx context.Context, p Page) ([]Extent, error) {
	name := pageName(p.ID)
	obj, err := r.get(ctx, name)
	if err != nil {
		return nil, &PageError{Page: p, Err: err}
	}
	data, err := r.decode(name, obj, 0)
	if err == nil && r.keys.id(data) != p.ID {
		err = fmt.Errorf("%w: content does not match its id", ErrCorrupt)
	}
	var extents []Extent
	if err == nil {
		if err = json.Unmarshal(data, &extents); err != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
	if err == nil && (len(extents) != p.Count || len(extents) == 0 || extents[0].Offset != p.Offset ||
		extents[len(extents)-1].Offset+extents[len(extents)-1].Length != p.End) {
		err = fmt.Errorf("%w: holds %d extents, not the %d from offset %d the manifest lists", ErrCorrupt, len(extents), p.Count, p.Offset)
	}
	if err != nil {
		return nil, &PageError{Page: p, Err: err}
	}
	return extents, nil
}

// PageError names an extents page that could not be read or is damaged.
type PageError struct {
	Page Page
	Err  error
}

func (e *PageError) Error() string {
	return fmt.Sprintf("extents page %s (extents from offset %d): %v", e.Page.ID, e.Page.Offset, e.Err)
}

func (e *PageError) Unwrap() error { return e.Err }

// digester computes ExtentsDigest incrementally.
type digester struct {
	h   hash.Hash
	buf []byte
}

func newDigester(size int64, chunkSize int) *digester {
	d := &digester{h: sha256.New(), buf: make([]byte, 0, 128)}
	d.buf = fmt.Appendf(d.buf, "lifeboat extents v1\n%d %d\n", size, chunkSize)
	d.h.Write(d.buf)
	return d
}

func (d *digester) add(e Extent) {
	b := strconv.AppendInt(d.buf[:0], e.Offset, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.Length, 10)
	b = append(b, ' ')
	b = hex.AppendEncode(b, e.ID[:])
	d.buf = append(b, '\n')
	d.h.Write(d.buf)
}

func (d *digester) sum() string { return hex.EncodeToString(d.h.Sum(nil)) }

// ExtentReader yields a backup's extents in offset order, holding one page
// at a time. Every extent is checked (aligned, ascending, inside the
// image), every page against its id, and at the end the whole list
// against the manifest's digest: an error stops it.
type ExtentReader struct {
	r     *Repository
	ctx   context.Context
	m     *Manifest
	page  int      // next page to load
	buf   []Extent // the rest of the current page (or of m.Extents)
	n     int64    // extents yielded
	next  int64    // lowest offset the next extent may have
	dig   *digester
	err   error
	ended bool
}

// Extents returns a reader of m's extents.
func (r *Repository) Extents(ctx context.Context, m *Manifest) *ExtentReader {
	x := &ExtentReader{r: r, ctx: ctx, m: m, dig: newDigester(m.Size, m.ChunkSize)}
	if len(m.Pages) == 0 {
		x.buf = m.Extents
	}
	return x
}

// Next returns the next extent; false at the end or on an error (see Err).
func (x *ExtentReader) Next() (Extent, bool) {
	for len(x.buf) == 0 {
		if x.err != nil || x.ended || !x.load() {
			return Extent{}, false
		}
	}
	e := x.buf[0]
	x.buf = x.buf[1:]
	cs := int64(x.m.ChunkSize)
	if e.Offset < x.next || e.Offset%cs != 0 || e.Length <= 0 || e.Length > cs || e.Offset+e.Length > x.m.Size {
		x.err = fmt.Errorf("%w: backup %s: bad extent at offset %d length %d", ErrCorrupt, x.m.ID, e.Offset, e.Length)
		return Extent{}, false
	}
	x.next = e.Offset + e.Length
	x.n++
	x.dig.add(e)
	return e, true
}

// load fills buf with the next page, or ends the list and checks it whole.
func (x *ExtentReader) load() bool {
	if x.page < len(x.m.Pages) {
		p := x.m.Pages[x.page]
		x.page++
		x.buf, x.err = x.r.loadPage(x.ctx, p)
		return x.err == nil
	}
	x.ended = true
	if x.m.Digest != "" {
		if got := x.dig.sum(); got != x.m.Digest {
			x.err = fmt.Errorf("%w: backup %s: its extents hash to %s, the manifest says %s",
				ErrChecksumMismatch, x.m.ID, got, x.m.Digest)
		}
	}
	if x.err == nil && x.m.Version >= 3 && x.n != x.m.Stats.Chunks {
		x.err = fmt.Errorf("%w: backup %s lists %d extents, its stats say %d", ErrCorrupt, x.m.ID, x.n, x.m.Stats.Chunks)
	}
	return false
}

// Err is the error that stopped the reader, if any.
func (x *ExtentReader) Err() error { return x.err }

// checkExtents reads the whole extent list of m once, checking every page
// and the digest, without keeping it: what a reader does before it writes
// the first byte. Pages are a small fraction of the data (about 100 bytes
// per chunk), so the second reading costs little.
func (r *Repository) checkExtents(ctx context.Context, m *Manifest) error {
	x := r.Extents(ctx, m)
	for {
		if _, ok := x.Next(); !ok {
			return x.Err()
		}
	}
}

// ExtentCursor walks a backup's extents by ascending offset, for a caller
// that walks an image in order beside the backup (the parent of an
// incremental). Use either At or Before on one cursor, not both.
type ExtentCursor struct {
	x    *ExtentReader
	cur  Extent
	have bool
	done bool
}

// Cursor returns a cursor over m's extents.
func (r *Repository) Cursor(ctx context.Context, m *Manifest) *ExtentCursor {
	return &ExtentCursor{x: r.Extents(ctx, m)}
}

// At returns the extent that starts at off, if any. Calls must not go
// back: off is at least the previous call's.
func (c *ExtentCursor) At(off int64) (Extent, bool, error) {
	for !c.done && (!c.have || c.cur.Offset < off) {
		c.cur, c.have = c.x.Next()
		if !c.have {
			c.done = true
			if err := c.x.Err(); err != nil {
				return Extent{}, false, err
			}
		}
	}
	if c.have && c.cur.Offset == off {
		return c.cur, true, nil
	}
	return Extent{}, false, nil
}

// Before calls fn, in order, with every extent that starts before off and
// was not passed to fn by an earlier call.
func (c *ExtentCursor) Before(off int64, fn func(Extent) error) error {
	for {
		if !c.have && !c.done {
			c.cur, c.have = c.x.Next()
			if !c.have {
				c.done = true
				if err := c.x.Err(); err != nil {
					return err
				}
			}
		}
		if !c.have || c.cur.Offset >= off {
			return nil
		}
		e := c.cur
		c.have = false
		if err := fn(e); err != nil {
			return err
		}
	}
}
