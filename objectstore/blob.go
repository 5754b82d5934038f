package objectstore

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"

	"github.com/DataDog/zstd"
)

// ChunkID is a chunk's content address (see keys.id).
type ChunkID [32]byte

func (id ChunkID) String() string { return hex.EncodeToString(id[:]) }

func (id ChunkID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

func (id *ChunkID) UnmarshalText(b []byte) error {
	parsed, err := ParseChunkID(string(b))
	*id = parsed
	return err
}

// ParseChunkID parses the 64 lowercase hex digits of a chunk id.
func ParseChunkID(s string) (ChunkID, error) {
	var id ChunkID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("chunk id %q: want %d hex digits", s, 2*len(id))
	}
	_, err := hex.Decode(id[:], []byte(s))
	if err != nil {
		return id, fmt.Errorf("chunk id %q: %v", s, err)
	}
	return id, nil
}

// chunkName is the object name of a chunk. The two-digit fan-out keeps
// listings of one directory short on backends that care.
func chunkName(id ChunkID) string {
	s := id.String()
	return "data/" + s[:2] + "/" + s
}

// Stored object encoding (chunks and manifests alike):
//
//	unencrypted: header ‖ payload
//	encrypted:   nonce ‖ AES-256-GCM(header ‖ payload, aad = object name) ‖ tag
//
// header says how payload is stored. It sits inside the ciphertext so it
// leaks nothing, and the object name as AAD stops a valid object from being
// passed off under another name.
const (
	headerRaw  byte = 0
	headerZstd byte = 1
)

// chunkLevel is 2, through libzstd (cgo). Compression is the largest
// CPU cost of a full export (about 40% of lifeboat's CPU at level 3, on an
// AMD EPYC). On the benchmark's text, 1 MiB chunks, one core (2026-12-07,
// EPYC), level 2 costs 17-20% less CPU than level 3 (0.43-0.49 s against
// 0.53-0.59 s per 128 MiB) and stores 0.9% more of the text, 0.2% more of
// the benchmark volume: still within restic's stored bytes + 2%. Level 1
// was 40% cheaper but stored 2.5% more than level 3. klauspost/compress
// at its fastest level stored more and cost more CPU than level 3 here,
// and decodes text at about half libzstd's speed. Random data costs
// little at any level (libzstd skips ahead when it finds no matches:
// 35 ms per 192 MiB), so a "does it pay" probe saves nothing.
// The level is not part of the format: any level's frame decodes.
const chunkLevel = 2

// zctxs holds GOMAXPROCS libzstd contexts (nil until first used). A
// context serves one (de)compression at a time; taking one blocks while
// all are busy. Reusing them keeps their tables (about 1 MiB of C heap
// each at 1 MiB chunks) warm rather than allocated and faulted in per
// chunk, and bounds that memory whatever the parallelism. It also runs no
// more compressions than there are cores: a cgo call holds an OS thread
// outside GOMAXPROCS, and 8 upload workers compressing on 8 threads of 2
// cores evict each other's tables from the caches.
var zctxs = func() chan zstd.Ctx {
	n := runtime.GOMAXPROCS(0)
	c := make(chan zstd.Ctx, n)
	for range n {
		c <- nil
	}
	return c
}()

func getZctx() zstd.Ctx {
	if c := <-zctxs; c != nil {
		return c
	}
	return zstd.NewCtx()
}

func putZctx(c zstd.Ctx) { zctxs <- c }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// compress appends the zstd frame of plain to dst.
func compress(dst, plain []byte) []byte {
	c := getZctx()
	defer putZctx(c)
	dst = slices.Grow(dst, zstd.CompressBound(len(plain)))
	out := must(c.CompressLevel(dst[len(dst):cap(dst)], plain, chunkLevel)) // in place: the room is there
	return dst[:len(dst)+len(out)]
}

// decompress decodes a frame of exactly size bytes (a chunk, its length
// known from the extent; into dst's storage if it is large enough) or,
// with size 0, of at most maxManifest bytes (a manifest or a page).
// Either way a hostile object cannot balloon.
func decompress(dst, payload []byte, size int) ([]byte, error) {
	if len(payload) == 0 {
		return nil, errors.New("no zstd frame")
	}
	if size > 0 {
		c := getZctx()
		defer putZctx(c)
		out := dst[:0]
		if cap(out) < size {
			out = make([]byte, size)
		}
		out = out[:size]
		n, err := c.DecompressInto(out, payload)
		if err == nil && n != size {
			err = fmt.Errorf("decodes to %d bytes, want %d", n, size)
		}
		return out, err
	}
	zr := zstd.NewReader(bytes.NewReader(payload))
	defer zr.Close()
	out, err := io.ReadAll(io.LimitReader(zr, maxManifest+1))
	if err == nil && len(out) > maxManifest {
		err = fmt.Errorf("decodes to more than %d bytes", maxManifest)
	}
	return out, err
}

// maxEncoded is the most encode makes of n bytes: raw, a header byte,
// and the nonce and tag if encrypted (a compressed form is kept only if
// it is smaller).
func (r *Repository) maxEncoded(n int64) int64 {
	if r.keys == nil {
		return 1 + n
	}
	return int64(nonceSize) + 1 + n + int64(r.keys.aead.Overhead())
}

// encode turns plaintext into the stored form, reusing dst's storage.
// Compression is kept only when it saves at least 1/16: a marginal saving
// is not worth a decompression on every restore.
func (r *Repository) encode(dst []byte, name string, plain []byte) []byte {
	pre := 0
	if r.keys != nil {
		pre = nonceSize
	}
	dst = append(dst[:0], zeros[:pre]...) // room for the nonce
	dst = compress(append(dst, headerZstd), plain)
	if len(dst)-pre-1 > len(plain)-len(plain)/16 {
		dst = append(append(dst[:pre], headerRaw), plain...)
	}
	if r.keys == nil {
		return dst
	}
	// Grow first so Seal works in place and dst stays one slice.
	dst = slices.Grow(dst, r.keys.aead.Overhead())
	nonce := dst[:pre]
	rand.Read(nonce)
	sealed := r.keys.aead.Seal(dst[pre:pre], nonce, dst[pre:], []byte(name))
	return dst[:pre+len(sealed)]
}

// decode reverses encode. size is the plaintext's length if known (a
// chunk's, from its extent), or 0 (a manifest, at most maxManifest).
func (r *Repository) decode(name string, obj []byte, size int) ([]byte, error) {
	plain, _, err := r.decodeTo(nil, name, obj, size)
	return plain, err
}

// decodeTo is decode without allocating where it can: the plaintext is in
// obj's own storage (decrypted in place), or, when it was decompressed
// (unpacked is then true), in dst's if that is large enough.
func (r *Repository) decodeTo(dst []byte, name string, obj []byte, size int) (plain []byte, unpacked bool, err error) {
	if r.keys != nil {
		if len(obj) < nonceSize+r.keys.aead.Overhead()+1 {
			return nil, false, fmt.Errorf("%w: %s is too short", ErrCorrupt, name)
		}
		opened, err := r.keys.aead.Open(obj[nonceSize:nonceSize], obj[:nonceSize], obj[nonceSize:], []byte(name))
		if err != nil {
			return nil, false, fmt.Errorf("%w: %s fails authentication (damaged, or written with another key)", ErrCorrupt, name)
		}
		obj = opened
	}
	if len(obj) == 0 {
		return nil, false, fmt.Errorf("%w: %s is empty", ErrCorrupt, name)
	}
	switch header, payload := obj[0], obj[1:]; header {
	case headerRaw:
		return payload, false, nil
	case headerZstd:
		out, err := decompress(dst, payload, size)
		if err != nil {
			return nil, false, fmt.Errorf("%w: %s: zstd: %v", ErrCorrupt, name, err)
		}
		return out, true, nil
	default:
		return nil, false, fmt.Errorf("%w: %s has unknown encoding %d", ErrCorrupt, name, header)
	}
}
