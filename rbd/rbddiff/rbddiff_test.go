package rbddiff

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"
)

func TestGolden(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, 0x1000, "", "snap")
	if err := w.Data(0x10, []byte("ab")); err != nil {
		t.Fatal(err)
	}
	if err := w.Zero(0x20, 0x30); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Laid out by hand from doc/dev/rbd-diff.rst.
	want := "rbd diff v1\n" +
		"t" + "04000000" + "snap" +
		"s" + "0010000000000000" +
		"w" + "1000000000000000" + "0200000000000000" + "ab" +
		"z" + "2000000000000000" + "3000000000000000" +
		"e"
	wantBytes := decodeMixed(t, want)
	if !bytes.Equal(buf.Bytes(), wantBytes) {
		t.Fatalf("stream:\n%x\nwant\n%x", buf.Bytes(), wantBytes)
	}
}

// decodeMixed turns the hex runs of a golden string into bytes, keeping the
// printable parts (header, tags, names, data) as they are.
func decodeMixed(t *testing.T, s string) []byte {
	var out []byte
	for len(s) > 0 {
		n := 0
		for n < len(s) && n < 16 && isHexDigit(s[n]) {
			n++
		}
		if n == 8 || n == 16 {
			b, err := hex.DecodeString(s[:n])
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b...)
			s = s[n:]
			continue
		}
		out = append(out, s[0])
		s = s[1:]
	}
	return out
}

func isHexDigit(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, 10<<20, "a", "b")
	data := bytes.Repeat([]byte{7}, 4096)
	w.Data(0, data)
	w.Zero(4096, 8192)
	w.Data(1<<20, []byte("tail"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var got []Record
	s, err := Read(&buf, func(r Record) error { got = append(got, r); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if s != (Stream{FromSnap: "a", ToSnap: "b", Size: 10 << 20, HasSize: true}) {
		t.Errorf("stream = %+v", s)
	}
	want := []Record{{Off: 0, Len: 4096, Data: data}, {Zero: true, Off: 4096, Len: 8192}, {Off: 1 << 20, Len: 4, Data: []byte("tail")}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("records = %+v", got)
	}
}

func TestReadRejectsGarbage(t *testing.T) {
	for name, in := range map[string]string{
		"empty":      "",
		"v2 header":  "rbd diff v2\n",
		"no end":     "rbd diff v1\ns\x00\x00\x00\x00\x00\x00\x00\x00",
		"bad tag":    "rbd diff v1\nq",
		"short data": "rbd diff v1\nw\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00ab",
	} {
		_, err := Read(bytes.NewReader([]byte(in)), func(Record) error { return nil })
		if !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err = %v, want ErrFormat", name, err)
		}
	}
}
