// Package rbddiff writes and reads the stream format of `rbd export-diff`
// and `rbd import-diff`, version 1 (Ceph's doc/dev/rbd-diff.rst), so that a
// backup can be restored with Ceph's stock tools alone:
//
//	lifeboat cat ID --format rbd-diff | rbd import-diff - POOL/IMAGE
//
// A v1 stream is the header "rbd diff v1\n", then records, each a tag byte
// followed by little-endian fields: 'f' from-snapshot name and 't'
// to-snapshot name (u32 length + bytes), 's' image size (u64), 'w' data
// (u64 offset, u64 length, bytes), 'z' zeroed range (u64 offset, u64
// length), and 'e' for the end.
package rbddiff

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Header starts every v1 stream.
const Header = "rbd diff v1\n"

// Writer writes a v1 diff stream. Call Data and Zero in any order that
// import-diff can apply (lifeboat writes ascending offsets), then Close.
type Writer struct {
	w   *bufio.Writer
	err error
}

// NewWriter writes the header, the optional from- and to-snapshot names,
// and the image size. With toSnap set, import-diff creates that snapshot
// on the target once the stream is applied; with fromSnap set, it requires
// the target to have that snapshot already.
func NewWriter(w io.Writer, size uint64, fromSnap, toSnap string) *Writer {
	d := &Writer{w: bufio.NewWriterSize(w, 1<<20)}
	d.write([]byte(Header))
	if fromSnap != "" {
		d.name('f', fromSnap)
	}
	if toSnap != "" {
		d.name('t', toSnap)
	}
	d.tag('s')
	d.u64(size)
	return d
}

// Data writes a 'w' record: data at off.
func (d *Writer) Data(off uint64, data []byte) error {
	d.tag('w')
	d.u64(off)
	d.u64(uint64(len(data)))
	d.write(data)
	return d.err
}

// Zero writes a 'z' record: length bytes at off read as zeros.
func (d *Writer) Zero(off, length uint64) error {
	d.tag('z')
	d.u64(off)
	d.u64(length)
	return d.err
}

// Close writes the end record and flushes; it does not close the
// underlying writer.
func (d *Writer) Close() error {
	d.tag('e')
	if d.err == nil {
		d.err = d.w.Flush()
	}
	return d.err
}

func (d *Writer) name(tag byte, s string) {
	d.tag(tag)
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(len(s)))
	d.write(b[:])
	d.write([]byte(s))
}

func (d *Writer) tag(t byte) { d.write([]byte{t}) }

func (d *Writer) u64(v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	d.write(b[:])
}

func (d *Writer) write(p []byte) {
	if d.err == nil {
		_, d.err = d.w.Write(p)
	}
}

// Record is one data or zero record read back from a stream.
type Record struct {
	Zero bool
	Off  uint64
	Len  uint64
	Data []byte // nil for zero records
}

// Stream is a parsed v1 stream.
type Stream struct {
	FromSnap, ToSnap string
	Size             uint64
	HasSize          bool
}

// ErrFormat is wrapped by every parse error.
var ErrFormat = errors.New("not a valid rbd diff v1 stream")

// maxRecord bounds a single 'w' record read into memory.
const maxRecord = 1 << 30

// Read parses a v1 stream, calling fn for each data or zero record. It is
// what tests use to check streams; rbd import-diff is the real consumer.
func Read(r io.Reader, fn func(Record) error) (Stream, error) {
	br := bufio.NewReader(r)
	var s Stream
	hdr := make([]byte, len(Header))
	if _, err := io.ReadFull(br, hdr); err != nil || string(hdr) != Header {
		return s, fmt.Errorf("%w: bad header %q", ErrFormat, hdr)
	}
	for {
		tag, err := br.ReadByte()
		if err != nil {
			return s, fmt.Errorf("%w: missing end record: %v", ErrFormat, err)
		}
		switch tag {
		case 'f', 't':
			var name string
			if name, err = readName(br); tag == 'f' {
				s.FromSnap = name
			} else {
				s.ToSnap = name
			}
		case 's':
			s.Size, err = readU64(br)
			s.HasSize = true
		case 'w', 'z':
			err = readExtent(br, tag == 'z', fn)
		case 'e':
			return s, nil
		default:
			return s, fmt.Errorf("%w: unknown record tag %q", ErrFormat, tag)
		}
		if err != nil {
			return s, err
		}
	}
}

func readExtent(br *bufio.Reader, zero bool, fn func(Record) error) error {
	off, err := readU64(br)
	if err != nil {
		return err
	}
	n, err := readU64(br)
	if err != nil {
		return err
	}
	rec := Record{Zero: zero, Off: off, Len: n}
	if !zero {
		if n > maxRecord {
			return fmt.Errorf("%w: data record of %d bytes", ErrFormat, n)
		}
		rec.Data = make([]byte, n)
		if _, err := io.ReadFull(br, rec.Data); err != nil {
			return fmt.Errorf("%w: short data record at %d: %v", ErrFormat, off, err)
		}
	}
	return fn(rec)
}

func readName(br *bufio.Reader) (string, error) {
	var b [4]byte
	if _, err := io.ReadFull(br, b[:]); err != nil {
		return "", fmt.Errorf("%w: %v", ErrFormat, err)
	}
	n := binary.LittleEndian.Uint32(b[:])
	if n > 4096 {
		return "", fmt.Errorf("%w: snapshot name of %d bytes", ErrFormat, n)
	}
	name := make([]byte, n)
	if _, err := io.ReadFull(br, name); err != nil {
		return "", fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return string(name), nil
}

func readU64(br *bufio.Reader) (uint64, error) {
	var b [8]byte
	if _, err := io.ReadFull(br, b[:]); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}
