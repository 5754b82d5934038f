package sim

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRegions(t *testing.T) {
	rs, err := ParseRegions("random:64M, text:32M,hole:16M,random:4K@1G,zero:1Mi,discard:512KiB")
	if err != nil {
		t.Fatal(err)
	}
	want := []Region{
		{0, 64 << 20, Random},
		{64 << 20, 32 << 20, Text},
		{96 << 20, 16 << 20, Hole},
		{1 << 30, 4 << 10, Random},
		{1<<30 + 4<<10, 1 << 20, Zero},
		{1<<30 + 4<<10 + 1<<20, 512 << 10, Discard},
	}
	if len(rs) != len(want) {
		t.Fatalf("got %v", rs)
	}
	for i := range want {
		if rs[i] != want[i] {
			t.Errorf("region %d = %v, want %v", i, rs[i], want[i])
		}
	}
	for _, bad := range []string{"random", "blob:1M", "random:x", "random:1M@y"} {
		if _, err := ParseRegions(bad); err == nil {
			t.Errorf("ParseRegions(%q) accepted", bad)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"4096": 4096, "1K": 1024, "64M": 64 << 20, "2G": 2 << 30, "1Gi": 1 << 30, "3MiB": 3 << 20, "1T": 1 << 40} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if FormatSize(64<<20) != "64M" || FormatSize(1<<30) != "1G" || FormatSize(1000) != "1000" {
		t.Error("FormatSize")
	}
}

// The generators are position addressed: splitting a region or rendering a
// sub-range gives the same bytes.
func TestRenderPositionAddressed(t *testing.T) {
	const size = 3<<20 + 12345
	for _, k := range []Kind{Random, Text} {
		whole := make([]byte, size)
		Render(whole, 0, []Region{{0, size, k}}, 42)
		split := make([]byte, size)
		Render(split, 0, []Region{{0, 1000, k}, {1000, 1 << 20, k}, {1000 + 1<<20, size - 1000 - 1<<20, k}}, 42)
		if !bytes.Equal(whole, split) {
			t.Fatalf("%v: split regions differ", k)
		}
		part := make([]byte, 77777)
		Render(part, 99999, []Region{{0, size, k}}, 42)
		if !bytes.Equal(part, whole[99999:99999+77777]) {
			t.Fatalf("%v: sub-range differs", k)
		}
		other := make([]byte, size)
		Render(other, 0, []Region{{0, size, k}}, 43)
		if bytes.Equal(whole[:4096], other[:4096]) {
			t.Fatalf("%v: seed has no effect", k)
		}
	}
}

func TestRenderOverlapsAndHoles(t *testing.T) {
	buf := bytes.Repeat([]byte{0xAA}, 1<<20)
	Render(buf, 0, []Region{{0, 1 << 20, Random}, {4096, 4096, Zero}, {8192, 4096, Hole}, {100, 10, Discard}}, 1)
	ref := make([]byte, 1<<20)
	Render(ref, 0, []Region{{0, 1 << 20, Random}}, 1)
	if !bytes.Equal(buf[:100], ref[:100]) || !bytes.Equal(buf[110:4096], ref[110:4096]) || !bytes.Equal(buf[8192:], ref[8192:]) {
		t.Fatal("random data wrong")
	}
	if !bytes.Equal(buf[100:110], make([]byte, 10)) || !bytes.Equal(buf[4096:8192], make([]byte, 4096)) {
		t.Fatal("zero/discard not cleared")
	}
	// A hole over fresh content keeps the previous bytes.
	buf2 := bytes.Repeat([]byte{0xAA}, 100)
	Render(buf2, 0, []Region{{0, 100, Hole}}, 1)
	if !bytes.Equal(buf2, bytes.Repeat([]byte{0xAA}, 100)) {
		t.Fatal("hole changed data")
	}
}

func TestContentSHA256(t *testing.T) {
	rs := []Region{{0, 1 << 20, Text}, {3 << 20, 1 << 20, Random}}
	buf := make([]byte, 5<<20)
	Render(buf, 0, rs, 7)
	sum := sha256.Sum256(buf)
	if got := ContentSHA256(5<<20, rs, 7); got != hex.EncodeToString(sum[:]) {
		t.Fatalf("ContentSHA256 %s != %x", got, sum)
	}
}

func TestTextCompressibleNotRepeating(t *testing.T) {
	buf := make([]byte, 4<<20)
	Render(buf, 0, []Region{{0, uint64(len(buf)), Text}}, 3)
	var z bytes.Buffer
	w, _ := flate.NewWriter(&z, flate.BestSpeed)
	w.Write(buf)
	w.Close()
	ratio := float64(len(buf)) / float64(z.Len())
	if ratio < 2 {
		t.Errorf("text compresses only %.2fx", ratio)
	}
	seen := map[[32]byte]bool{}
	for off := 0; off < len(buf); off += 4096 {
		s := sha256.Sum256(buf[off : off+4096])
		if seen[s] {
			t.Fatalf("4K block at %d repeats", off)
		}
		seen[s] = true
	}
	if bytes.IndexByte(buf, 0) >= 0 {
		t.Error("text contains NUL")
	}
	t.Logf("text compresses %.2fx with flate; sample: %q", ratio, buf[:100])
}

func TestLoadEnvFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "env")
	os.WriteFile(p, []byte("# comment\nKUBECONFIG=/x/kubeconfig\nexport CEPH_CONF=\"/x/ceph.conf\"\n\nCEPH_MON_HOST_V1=127.0.0.1:16789\nCEPH_MON_HOST_V2='127.0.0.1:13300'\nEMPTY=\n"), 0o600)
	env, err := LoadEnvFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if env["KUBECONFIG"] != "/x/kubeconfig" || env["CEPH_CONF"] != "/x/ceph.conf" || env["CEPH_MON_HOST_V2"] != "127.0.0.1:13300" {
		t.Fatalf("env %v", env)
	}
	if m := env.Monitors(); len(m) != 2 || m[0] != "v2:127.0.0.1:13300" || m[1] != "v1:127.0.0.1:16789" {
		t.Fatalf("monitors %v", m)
	}
	if err := env.Require("KUBECONFIG", "EMPTY", "NOPE"); err == nil || !strings.Contains(err.Error(), "EMPTY, NOPE") {
		t.Fatalf("Require: %v", err)
	}
	o := env.Options()
	if o.CephConf != "/x/ceph.conf" || o.Pool != "replicapool" {
		t.Fatalf("options %+v", o)
	}
}

func BenchmarkRenderRandom(b *testing.B) { benchRender(b, Random) }
func BenchmarkRenderText(b *testing.B)   { benchRender(b, Text) }

func benchRender(b *testing.B, k Kind) {
	buf := make([]byte, chunkSize)
	b.SetBytes(chunkSize)
	for i := 0; i < b.N; i++ {
		Render(buf, uint64(i)*chunkSize, []Region{{0, 1 << 62, k}}, 1)
	}
	_ = io.Discard
}
