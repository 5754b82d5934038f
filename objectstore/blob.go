package objectstore

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"
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

var (
	zstdOnce    sync.Once
	zstdEnc     *zstd.Encoder
	chunkDec    *zstd.Decoder // output capped at the expected chunk length
	manifestDec *zstd.Decoder // output capped at maxManifest
)

// codecs are shared: EncodeAll/DecodeAll are safe for concurrent use.
// Both decoders bound their output, so a hostile object cannot balloon.
func codecs() (*zstd.Encoder, *zstd.Decoder, *zstd.Decoder) {
	zstdOnce.Do(func() {
		// No zstd CRC: the content address already checks every byte.
		// A 1 MiB window and lower-memory encoders keep each of the
		// GOMAXPROCS encoders small: chunks are compressed one at a time.
		zstdEnc = must(zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false),
			zstd.WithWindowSize(1<<20), zstd.WithLowerEncoderMem(true)))
		chunkDec = must(zstd.NewReader(nil, zstd.WithDecodeAllCapLimit(true), zstd.WithDecoderLowmem(true)))
		manifestDec = must(zstd.NewReader(nil, zstd.WithDecoderMaxMemory(maxManifest)))
	})
	return zstdEnc, chunkDec, manifestDec
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// encode turns plaintext into the stored form, reusing dst's storage.
// Compression is kept only when it saves at least 1/16: a marginal saving
// is not worth a decompression on every restore.
func (r *Repository) encode(dst []byte, name string, plain []byte) []byte {
	enc, _, _ := codecs()
	pre := 0
	if r.keys != nil {
		pre = nonceSize
	}
	dst = append(dst[:0], zeros[:pre]...) // room for the nonce
	dst = enc.EncodeAll(plain, append(dst, headerZstd))
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
	if r.keys != nil {
		if len(obj) < nonceSize+r.keys.aead.Overhead()+1 {
			return nil, fmt.Errorf("%w: %s is too short", ErrCorrupt, name)
		}
		plain, err := r.keys.aead.Open(obj[nonceSize:nonceSize], obj[:nonceSize], obj[nonceSize:], []byte(name))
		if err != nil {
			return nil, fmt.Errorf("%w: %s fails authentication (damaged, or written with another key)", ErrCorrupt, name)
		}
		obj = plain
	}
	if len(obj) == 0 {
		return nil, fmt.Errorf("%w: %s is empty", ErrCorrupt, name)
	}
	switch header, payload := obj[0], obj[1:]; header {
	case headerRaw:
		return payload, nil
	case headerZstd:
		_, dec, mdec := codecs()
		dst := make([]byte, 0, size)
		if size == 0 {
			dec, dst = mdec, nil
		}
		out, err := dec.DecodeAll(payload, dst)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: zstd: %v", ErrCorrupt, name, err)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%w: %s has unknown encoding %d", ErrCorrupt, name, header)
	}
}
