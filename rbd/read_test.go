package rbd

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"runtime"
	"strings"
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
	// fn runs on the stream's goroutine: it returns errors, t.Fatal is for the test's own.
	err := orderedChunks(context.Background(), bm, size, span, 4, read, func(c Chunk) error {
		if len(got) > 0 && c.Index <= got[len(got)-1] {
			return fmt.Errorf("chunk %d after %d", c.Index, got[len(got)-1])
		}
		if !bm.Has(c.Index) {
			return fmt.Errorf("chunk %d is not marked", c.Index)
		}
		wantLen := chunk
		if c.Index == bm.N-1 {
			wantLen = size % chunk
		}
		if uint64(len(c.Data)) != wantLen || c.Off != c.Index*chunk {
			return fmt.Errorf("chunk %d: off %d len %d", c.Index, c.Off, len(c.Data))
		}
		for _, b := range c.Data {
			if b != byte(c.Index) {
				return fmt.Errorf("chunk %d has data of another chunk", c.Index)
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

// prefetchProbe is a read for orderedChunks that records what the helper
// must guarantee: how many reads run at once, which buffers exist, and
// that no buffer is handed to a read while an earlier read may still be
// writing into it or fn may still be reading it. Each chunk is one run
// (span = chunk), released by fn once delivered.
type prefetchProbe struct {
	mu             sync.Mutex
	inUse          map[*byte]uint64 // buffer → chunk read into it, until delivered
	bufs           map[*byte]bool
	reads, running int
	maxRunning     int
	reused         []string
	fail           func(*Chunk) error // nil: every read succeeds
}

func newProbe(fail func(*Chunk) error) *prefetchProbe {
	return &prefetchProbe{inUse: map[*byte]uint64{}, bufs: map[*byte]bool{}, fail: fail}
}

func (p *prefetchProbe) read(c *Chunk) error {
	b := &c.Data[0]
	p.mu.Lock()
	if k, ok := p.inUse[b]; ok {
		p.reused = append(p.reused, fmt.Sprintf("chunk %d read into the buffer of chunk %d", c.Index, k))
	}
	p.inUse[b], p.bufs[b] = c.Index, true
	p.reads++
	p.running++
	p.maxRunning = max(p.maxRunning, p.running)
	p.mu.Unlock()
	defer func() { p.mu.Lock(); p.running--; p.mu.Unlock() }()
	time.Sleep(time.Duration(rand.Intn(300)) * time.Microsecond) // finish out of order
	for j := range c.Data {
		c.Data[j] = byte(c.Index)
	}
	if p.fail != nil {
		return p.fail(c)
	}
	return nil
}

// deliver checks c and gives its buffer back.
func (p *prefetchProbe) deliver(c Chunk) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.Data[0] != byte(c.Index) || c.Data[len(c.Data)-1] != byte(c.Index) {
		return fmt.Errorf("chunk %d overwritten before fn was done with it", c.Index)
	}
	delete(p.inUse, &c.Data[0])
	return nil
}

// goroutinesLeft is how many goroutines more than before still run after a
// grace period (one that has signalled its end may still be exiting).
func goroutinesLeft(before int) int {
	for range 200 {
		if runtime.NumGoroutine() <= before {
			return 0
		}
		time.Sleep(time.Millisecond)
	}
	return runtime.NumGoroutine() - before
}

func fullBitmap(n uint64) Bitmap {
	bm := NewBitmap(n*16, 16)
	for i := range bm.N {
		bm.Set(i)
	}
	return bm
}

// TestOrderedChunksBounds: with one chunk a run, at most parallel reads
// run at once and parallel+2 buffers exist, recycled, whatever the image
// size; nothing is left running.
func TestOrderedChunksBounds(t *testing.T) {
	before := runtime.NumGoroutine()
	bm := fullBitmap(1000)
	p := newProbe(nil)
	next := uint64(0)
	err := orderedChunks(context.Background(), bm, bm.N*16, 16, 4, p.read, func(c Chunk) error {
		if c.Index != next {
			return fmt.Errorf("chunk %d, want %d", c.Index, next)
		}
		next++
		return p.deliver(c)
	})
	if err != nil || next != bm.N {
		t.Fatalf("err %v after %d chunks of %d", err, next, bm.N)
	}
	if p.maxRunning > 4 || len(p.bufs) > 4+2 || len(p.reused) > 0 {
		t.Errorf("%d reads at once (want ≤ 4), %d buffers (want ≤ 6), reuse: %v", p.maxRunning, len(p.bufs), p.reused)
	}
	if n := goroutinesLeft(before); n > 0 {
		t.Errorf("%d goroutines left behind", n)
	}
}

// TestOrderedChunksStopsOnError: the first error, of a read or of fn, is
// returned after the chunks before it were delivered and none after it;
// later reads stop within the stream's window; no buffer of a read that
// may still be running is reused; nothing is left running.
func TestOrderedChunksStopsOnError(t *testing.T) {
	bm := fullBitmap(1 << 16)
	boom, later := errors.New("boom"), errors.New("a later error")
	for name, tc := range map[string]struct {
		fail    func(*Chunk) error
		fnFails bool
	}{
		"read": {fail: func(c *Chunk) error {
			switch {
			case c.Index == 100:
				return boom
			case c.Index > 100:
				return later
			}
			return nil
		}},
		"fn": {fnFails: true},
	} {
		t.Run(name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			p := newProbe(tc.fail)
			delivered := uint64(0)
			err := orderedChunks(context.Background(), bm, bm.N*16, 16, 4, p.read, func(c Chunk) error {
				if tc.fnFails && c.Index == 100 {
					return boom
				}
				if c.Index != delivered {
					return fmt.Errorf("chunk %d, want %d", c.Index, delivered)
				}
				delivered++
				return p.deliver(c)
			})
			if !errors.Is(err, boom) || delivered != 100 {
				t.Errorf("err = %v after %d chunks, want boom after 100", err, delivered)
			}
			p.mu.Lock()
			reads, reused := p.reads, p.reused
			p.mu.Unlock()
			if reads > 100+1+4+2 || len(reused) > 0 {
				t.Errorf("%d reads after an error at chunk 100 (want ≤ 107), reuse: %v", reads, reused)
			}
			if n := goroutinesLeft(before); n > 0 {
				t.Errorf("%d goroutines left behind", n)
			}
			time.Sleep(5 * time.Millisecond)
			if p.mu.Lock(); p.reads != reads {
				t.Errorf("%d reads after orderedChunks returned", p.reads-reads)
			}
			p.mu.Unlock()
		})
	}
}

// TestOrderedChunksCancel: cancelling the context mid-way returns its
// error soon, with fn never called again, and leaves nothing running.
func TestOrderedChunksCancel(t *testing.T) {
	before := runtime.NumGoroutine()
	bm := fullBitmap(1 << 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newProbe(nil)
	delivered := uint64(0)
	err := orderedChunks(ctx, bm, bm.N*16, 16, 4, p.read, func(c Chunk) error {
		if c.Index == 50 {
			cancel()
		}
		delivered++
		return p.deliver(c)
	})
	if !errors.Is(err, context.Canceled) || delivered > 51+4+2 {
		t.Errorf("err = %v after %d chunks, want context.Canceled soon after 51", err, delivered)
	}
	if p.reads > 51+4+2 || len(p.reused) > 0 {
		t.Errorf("%d reads after cancelling at chunk 50, reuse: %v", p.reads, p.reused)
	}
	if n := goroutinesLeft(before); n > 0 {
		t.Errorf("%d goroutines left behind", n)
	}
}

// TestOrderedChunksPanic: a read that panics panics the caller (conc
// re-raises it), after fn saw the chunks before it and none after it.
func TestOrderedChunksPanic(t *testing.T) {
	before := runtime.NumGoroutine()
	bm := fullBitmap(1 << 16)
	var delivered []uint64
	var recovered any
	func() {
		defer func() { recovered = recover() }()
		p := newProbe(func(c *Chunk) error {
			if c.Index == 30 {
				panic("read 30")
			}
			return nil
		})
		orderedChunks(context.Background(), bm, bm.N*16, 16, 4, p.read, func(c Chunk) error {
			delivered = append(delivered, c.Index)
			return nil
		})
	}()
	if recovered == nil || !strings.Contains(fmt.Sprint(recovered), "read 30") {
		t.Errorf("recovered %v, want the panic of read 30", recovered)
	}
	if len(delivered) != 30 || delivered[29] != 29 {
		t.Errorf("fn got %d chunks, up to %v, want chunks 0 to 29", len(delivered), delivered[len(delivered)-1])
	}
	if n := goroutinesLeft(before); n > 0 {
		t.Errorf("%d goroutines left behind", n)
	}
}
