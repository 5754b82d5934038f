package backup

import (
	"reflect"
	"testing"
)

func TestChanges(t *testing.T) {
	const chunk = 1 << 20
	c := newChanges(5*chunk+100, chunk) // the last chunk is 100 bytes

	c.add(10, 4096)                  // inside chunk 0
	c.add(10+4096, 4096)             // adjacent: merged
	c.add(chunk-512, 1024)           // straddles chunks 0 and 1
	c.add(2*chunk, chunk)            // all of chunk 2: read whole
	c.add(3*chunk+1, 1)              // one byte of chunk 3
	c.add(5*chunk, 1000)             // beyond the image end: clipped to the short last chunk
	for i := uint64(0); i < 9; i++ { // nine scattered ranges in chunk 4: read whole
		c.add(4*chunk+i*8192, 10)
	}

	want := map[uint64][]Span{
		0: {{10, 8192}, {chunk - 512, 512}},
		1: {{chunk, 512}},
		3: {{3*chunk + 1, 1}},
	}
	if !reflect.DeepEqual(c.patch, want) {
		t.Errorf("patches %v, want %v", c.patch, want)
	}
	for i, whole := range []bool{false, false, true, false, true, true} {
		if c.whole.Has(uint64(i)) != whole {
			t.Errorf("chunk %d read whole = %v, want %v", i, !whole, whole)
		}
	}
	if want := uint64(8192 + 1024 + chunk + 1 + 100 + 90); c.bytes != want {
		t.Errorf("changed bytes %d, want %d", c.bytes, want)
	}
	if c.spans != 4 {
		t.Errorf("spans %d, want 4 (the ones still held)", c.spans)
	}
}

// TestChangesBounded: however scattered the writes, the spans held stay
// under maxSpans; past it chunks are read whole.
func TestChangesBounded(t *testing.T) {
	const chunk = 64 << 10
	size := uint64(4 << 30)
	c := newChanges(size, chunk)
	for off := uint64(0); off < size; off += chunk {
		c.add(off+100, 10)
	}
	if c.spans > maxSpans || len(c.patch) > maxSpans {
		t.Fatalf("%d spans in %d chunks: more than %d", c.spans, len(c.patch), maxSpans)
	}
	if got := uint64(len(c.patch)) + c.whole.Count(); got != size/chunk {
		t.Fatalf("%d chunks planned, want %d", got, size/chunk)
	}
}
