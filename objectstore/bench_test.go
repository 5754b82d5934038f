package objectstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// Writer and reader throughput, without a network: is objectstore ever
// the bottleneck of an export or a restore?
//
//	go test -run '^$' -bench . -benchtime 5x ./objectstore

const benchImage = 128 << 20

// discard stores nothing, so the writer's own work is all that is timed
// (it still seems to hold a writer's lock).
type discard struct{}

func (discard) Put(context.Context, string, []byte) error { return nil }
func (discard) Get(_ context.Context, n string) ([]byte, error) {
	return nil, fmt.Errorf("%s: %w", n, ErrNotFound)
}
func (discard) Stat(_ context.Context, n string) (int64, error) {
	if strings.HasPrefix(n, locksPrefix) {
		return 0, nil // a writer's lock is always there
	}
	return 0, fmt.Errorf("%s: %w", n, ErrNotFound)
}
func (discard) List(context.Context, string, func(string, int64) error) error { return nil }
func (discard) Delete(context.Context, string) error                          { return nil }
func (discard) String() string                                                { return "discard" }

// chunkless is a Memory that stores no chunks: an incremental backup's
// parent keeps its manifest and extents pages, and writing stays a
// measure of the writer's own work.
type chunkless struct{ *Memory }

func (c chunkless) Put(ctx context.Context, name string, data []byte) error {
	if strings.HasPrefix(name, "data/") {
		return nil
	}
	return c.Memory.Put(ctx, name, data)
}

func benchData(kind string) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	switch kind {
	case "random":
		return randBytes(rng, benchImage)
	case "text":
		return text(rng, benchImage)
	}
	return make([]byte, benchImage)
}

func BenchmarkWrite(b *testing.B) {
	data := map[string][]byte{}
	for _, kind := range []string{"random", "text", "zero"} {
		data[kind] = benchData(kind)
	}
	type bench struct {
		chunk     int
		kind      string
		encrypted bool
		unchanged bool // every chunk known from the parent
	}
	var benches []bench
	for _, chunk := range []int{1 << 20, 2 << 20, 4 << 20} {
		for _, kind := range []string{"random", "text"} {
			benches = append(benches, bench{chunk, kind, false, false}, bench{chunk, kind, true, false})
		}
	}
	benches = append(benches, bench{4 << 20, "zero", true, false}, bench{4 << 20, "random", true, true})
	for _, bc := range benches {
		name := fmt.Sprintf("chunk=%dMiB/%s/encrypted=%v", bc.chunk>>20, bc.kind, bc.encrypted)
		if bc.unchanged {
			name += "/unchanged"
		}
		b.Run(name, func(b *testing.B) {
			var key []byte
			if bc.encrypted {
				key = []byte("k")
			}
			r, err := Init(context.Background(), chunkless{NewMemory()}, InitOptions{ChunkSize: bc.chunk, Key: key})
			if err != nil {
				b.Fatal(err)
			}
			img := data[bc.kind]
			var parent *Manifest
			if bc.unchanged {
				parent = writeImage(b, r, img, nil)
			}
			b.SetBytes(int64(len(img)))
			b.ResetTimer()
			for range b.N {
				m := writeImage(b, r, img, parent)
				b.ReportMetric(float64(m.Stats.BytesStored)/float64(len(img)), "stored/read")
			}
		})
	}
}

func writeImage(b *testing.B, r *Repository, img []byte, parent *Manifest) *Manifest {
	ctx := context.Background()
	w, err := r.NewBackup(ctx, BackupOptions{Size: int64(len(img)), Parent: parent})
	if err != nil {
		b.Fatal(err)
	}
	chunk := r.Config().ChunkSize
	for off := 0; off < len(img); off += chunk {
		if err := w.Write(ctx, int64(off), img[off:off+chunk]); err != nil {
			b.Fatal(err)
		}
	}
	m, err := w.Commit(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func BenchmarkStream(b *testing.B) {
	for _, kind := range []string{"random", "text"} {
		b.Run(kind, func(b *testing.B) {
			r, _ := Init(context.Background(), NewMemory(), InitOptions{Key: []byte("k")})
			img := benchData(kind)
			m := writeImage(b, r, img, nil)
			b.SetBytes(int64(len(img)))
			b.ResetTimer()
			for range b.N {
				if err := r.Verify(context.Background(), m, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
