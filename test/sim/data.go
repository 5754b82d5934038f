package sim

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
)

// Kind is what a Region of a volume is filled with.
type Kind int

const (
	// Hole leaves the range unwritten (it keeps whatever it had; zeros on a
	// fresh image, and no RADOS objects are allocated).
	Hole Kind = iota
	// Random writes incompressible pseudo-random bytes.
	Random
	// Text writes compressible, never-repeating text: lines of words drawn
	// from a fixed vocabulary, each line prefixed with its absolute offset, so
	// no two blocks are identical (deduplication finds nothing) while
	// compression gains roughly 3-4x.
	Text
	// Zero writes zero bytes (allocates objects full of zeros).
	Zero
	// Discard discards the range (rbd discard) and it then reads as zeros:
	// the 64 KiB-aligned part is discarded, unaligned edges (which librbd
	// would skip) are written with zeros.
	Discard
)

var kindNames = map[Kind]string{Hole: "hole", Random: "random", Text: "text", Zero: "zero", Discard: "discard"}

func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, error) {
	for k, n := range kindNames {
		if n == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown region kind %q (want random, text, hole, zero or discard)", s)
}

// Region is a byte range of a volume and what to put there.
type Region struct {
	Off, Len uint64
	Kind     Kind
}

func (r Region) String() string {
	return fmt.Sprintf("%s:%s@%s", r.Kind, FormatSize(r.Len), FormatSize(r.Off))
}

// ParseRegions parses a fill spec: comma separated KIND:LEN[@OFF] items, e.g.
// "random:64M,text:32M,hole:16M,random:4M@1G". Without @OFF a region starts
// where the previous one ended (the first at 0). Sizes take K, M, G, T
// suffixes (powers of 1024, optional "i"/"iB"/"B").
func ParseRegions(spec string) ([]Region, error) {
	var regions []Region
	var next uint64
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		kindStr, rest, ok := strings.Cut(item, ":")
		if !ok {
			return nil, fmt.Errorf("region %q: want KIND:LEN[@OFF]", item)
		}
		kind, err := ParseKind(kindStr)
		if err != nil {
			return nil, err
		}
		lenStr, offStr, hasOff := strings.Cut(rest, "@")
		n, err := ParseSize(lenStr)
		if err != nil {
			return nil, fmt.Errorf("region %q: %w", item, err)
		}
		off := next
		if hasOff {
			if off, err = ParseSize(offStr); err != nil {
				return nil, fmt.Errorf("region %q: %w", item, err)
			}
		}
		regions = append(regions, Region{Off: off, Len: n, Kind: kind})
		next = off + n
	}
	return regions, nil
}

// ParseSize parses "4096", "64M", "2G", "1Gi", "512KiB" (binary units).
func ParseSize(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	t := strings.TrimSuffix(strings.TrimSuffix(s, "B"), "i")
	mult := uint64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad size %q", s)
	}
	if n != 0 && n*mult/mult != n {
		return 0, fmt.Errorf("size %q overflows", s)
	}
	return n * mult, nil
}

// FormatSize prints n with the largest binary unit that divides it.
func FormatSize(n uint64) string {
	for _, u := range []struct {
		s string
		v uint64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n >= u.v && n%u.v == 0 {
			return strconv.FormatUint(n/u.v, 10) + u.s
		}
	}
	return strconv.FormatUint(n, 10)
}

// genBlockSize is the granularity of the position-addressed generators: the
// bytes of a Random or Text region at offset o depend only on (seed, kind,
// o), never on how the region was split or where it started.
const genBlockSize = 64 << 10

// Render writes into dst the bytes that applying regions (in order, later
// ones win where they overlap) with seed puts at [off, off+len(dst)). Hole
// leaves dst untouched; Zero and Discard clear it. Applied to a buffer that
// models a volume, it tracks exactly what Volume.Fill writes.
func Render(dst []byte, off uint64, regions []Region, seed int64) {
	end := off + uint64(len(dst))
	var blk []byte
	for _, r := range regions {
		lo, hi := max(r.Off, off), min(r.Off+r.Len, end)
		if lo >= hi {
			continue
		}
		switch r.Kind {
		case Hole:
		case Zero, Discard:
			clear(dst[lo-off : hi-off])
		case Random, Text:
			if blk == nil {
				blk = make([]byte, genBlockSize)
			}
			for p := lo; p < hi; {
				b := p / genBlockSize
				genBlock(r.Kind, seed, b, blk)
				bs := b * genBlockSize
				n := copy(dst[p-off:hi-off], blk[p-bs:])
				p += uint64(n)
			}
		}
	}
}

// Content returns a reader of size bytes: the content of a fresh (all zero)
// image after Volume.Fill(regions, seed).
func Content(size uint64, regions []Region, seed int64) io.Reader {
	return &contentReader{size: size, regions: regions, seed: seed}
}

// ContentSHA256 is the hex SHA-256 of Content(size, regions, seed).
func ContentSHA256(size uint64, regions []Region, seed int64) string {
	h := sha256.New()
	if _, err := io.CopyBuffer(h, Content(size, regions, seed), make([]byte, chunkSize)); err != nil {
		panic(err) // contentReader never fails
	}
	return hex.EncodeToString(h.Sum(nil))
}

type contentReader struct {
	size, pos uint64
	regions   []Region
	seed      int64
}

func (c *contentReader) Read(p []byte) (int, error) {
	if c.pos >= c.size {
		return 0, io.EOF
	}
	if rem := c.size - c.pos; uint64(len(p)) > rem {
		p = p[:rem]
	}
	clear(p)
	Render(p, c.pos, c.regions, c.seed)
	c.pos += uint64(len(p))
	return len(p), nil
}

// genBlock fills blk (genBlockSize bytes) with block number b of kind.
func genBlock(kind Kind, seed int64, b uint64, blk []byte) {
	switch kind {
	case Random:
		var s [32]byte
		binary.LittleEndian.PutUint64(s[0:], uint64(seed))
		binary.LittleEndian.PutUint64(s[8:], b)
		copy(s[16:], "lifeboat-sim-rnd")
		rand.NewChaCha8(s).Read(blk)
	case Text:
		genText(seed, b, blk)
	default:
		clear(blk)
	}
}

var (
	vocabOnce sync.Once
	vocab     [][]byte
)

// vocabulary is 4096 pronounceable pseudo-words, fixed for all seeds.
func vocabulary() [][]byte {
	vocabOnce.Do(func() {
		cons := "bcdfghjklmnprstvwz"
		vows := "aeiou"
		r := rand.New(rand.NewPCG(0x6c696665, 0x626f6174))
		seen := map[string]bool{}
		for len(vocab) < 4096 {
			n := 1 + r.IntN(4)
			w := make([]byte, 0, 2*n+1)
			for i := 0; i < n; i++ {
				w = append(w, cons[r.IntN(len(cons))], vows[r.IntN(len(vows))])
			}
			if r.IntN(3) == 0 {
				w = append(w, cons[r.IntN(len(cons))])
			}
			if !seen[string(w)] {
				seen[string(w)] = true
				vocab = append(vocab, w)
			}
		}
	})
	return vocab
}

var textScratch = sync.Pool{New: func() any { b := make([]byte, 0, genBlockSize+256); return &b }}

func genText(seed int64, b uint64, blk []byte) {
	words := vocabulary()
	r := rand.NewPCG(uint64(seed), b^0x7465787474657874)
	sp := textScratch.Get().(*[]byte)
	out := (*sp)[:0]
	line := 0
	var bits uint64
	nbits := 0
	for len(out) < len(blk) {
		// "<16 hex absolute block offset>.<line>: words...\n"
		out = appendHex16(out, b*genBlockSize)
		out = append(out, '.')
		out = strconv.AppendInt(out, int64(line), 10)
		out = append(out, ':')
		start := len(out)
		for len(out)-start < 64 {
			if nbits < 12 {
				bits, nbits = r.Uint64(), 64
			}
			out = append(out, ' ')
			out = append(out, words[bits&4095]...)
			bits >>= 12
			nbits -= 12
		}
		out = append(out, '\n')
		line++
	}
	copy(blk, out)
	*sp = out
	textScratch.Put(sp)
}

func appendHex16(b []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for i := 60; i >= 0; i -= 4 {
		b = append(b, digits[(v>>uint(i))&0xf])
	}
	return b
}
