package rbd

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"
)

func TestBitmap(t *testing.T) {
	bm := NewBitmap(10*4096+1, 4096) // 11 chunks, the last 1 byte
	if bm.N != 11 {
		t.Fatalf("N = %d", bm.N)
	}
	bm.MarkRange(4095, 2)   // chunks 0 and 1
	bm.MarkRange(40960, 1)  // chunk 10
	bm.MarkRange(8192, 0)   // nothing
	bm.MarkRange(40960, 99) // clipped to the last chunk
	for i := uint64(0); i < bm.N; i++ {
		if want := i == 0 || i == 1 || i == 10; bm.Has(i) != want {
			t.Errorf("chunk %d marked %v", i, bm.Has(i))
		}
	}
	if bm.Count() != 3 {
		t.Errorf("Count = %d", bm.Count())
	}
}

func TestOrderedChunks(t *testing.T) {
	const chunk, size = 16, 16*200 + 5
	bm := NewBitmap(size, chunk)
	for i := uint64(0); i < bm.N; i++ {
		if i%7 != 3 && i%11 != 5 { // runs of several lengths, and gaps
			bm.Set(i)
		}
	}
	bm.Set(bm.N - 1)
	for _, span := range []uint64{chunk, 4 * chunk, 4*chunk + 5} { // 4*chunk+5: rounded down to 4 chunks
		t.Run(fmt.Sprint("span", span), func(t *testing.T) { checkOrdered(t, bm, size, span) })
	}
}

func checkOrdered(t *testing.T, bm Bitmap, size, span uint64) {
	chunk := bm.Chunk
	whole := span - span%chunk
	var mu sync.Mutex
	reads, longest := 0, 0
	read := func(c *Chunk) error {
		time.Sleep(time.Duration(rand.Intn(200)) * time.Microsecond) // finish out of order
		if c.Off/whole != (c.Off+uint64(len(c.Data))-1)/whole {
			t.Errorf("read at %d of %d bytes crosses a span of %d", c.Off, len(c.Data), whole)
		}
		for j := range c.Data {
			c.Data[j] = byte(c.Index + uint64(j)/chunk)
		}
		mu.Lock()
		reads, longest = reads+1, max(longest, len(c.Data))
		mu.Unlock()
		return nil
	}
	var got []uint64
	err := orderedChunks(context.Background(), bm, size, span, 4, read, func(c Chunk) error {
		if len(got) > 0 && c.Index <= got[len(got)-1] {
			t.Fatalf("chunk %d after %d", c.Index, got[len(got)-1])
		}
		if !bm.Has(c.Index) {
			t.Fatalf("chunk %d is not marked", c.Index)
		}
		wantLen := chunk
		if c.Index == bm.N-1 {
			wantLen = size % chunk
		}
		if uint64(len(c.Data)) != wantLen || c.Off != c.Index*chunk {
			t.Fatalf("chunk %d: off %d len %d", c.Index, c.Off, len(c.Data))
		}
		for _, b := range c.Data {
			if b != byte(c.Index) {
				t.Fatalf("chunk %d has data of another chunk", c.Index)
			}
		}
		got = append(got, c.Index)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(got)) != bm.Count() {
		t.Errorf("delivered %d chunks, want %d", len(got), bm.Count())
	}
	if uint64(longest) != whole {
		t.Errorf("longest read %d bytes, want a whole span of %d", longest, whole)
	}
	if whole > chunk && uint64(reads) >= bm.Count() {
		t.Errorf("%d reads for %d chunks: runs were not read at once", reads, bm.Count())
	}
}

func TestOrderedChunksStopsOnError(t *testing.T) {
	bm := NewBitmap(1<<20, 16)
	for i := uint64(0); i < bm.N; i++ {
		bm.Set(i)
	}
	boom := errors.New("boom")
	delivered := 0
	err := orderedChunks(context.Background(), bm, 1<<20, 16, 4, func(c *Chunk) error {
		if c.Index == 100 {
			return boom
		}
		return nil
	}, func(Chunk) error { delivered++; return nil })
	if !errors.Is(err, boom) || delivered != 100 {
		t.Errorf("err = %v after %d chunks, want boom after 100", err, delivered)
	}
	err = orderedChunks(context.Background(), bm, 1<<20, 16, 4, func(*Chunk) error { return nil },
		func(c Chunk) error {
			if c.Index == 7 {
				return boom
			}
			return nil
		})
	if !errors.Is(err, boom) {
		t.Errorf("consumer error: %v", err)
	}
}
