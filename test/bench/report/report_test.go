package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestArithmetic(t *testing.T) {
	for _, c := range []struct{ name, got, want string }{
		{"seconds", seconds("7101234567"), "7.10"},
		{"seconds round up", seconds("409876543"), "0.41"},
		{"seconds not a number", seconds(""), ""},
		{"MB", megabytes("115884"), "116"},
		{"MB of 0.5 rounds to even", megabytes("500"), "0"},
		{"MiB from 100 MiB whole", MiB("988900000"), "943"},
		{"MiB below 100 with a decimal", MiB("28200000"), "26.9"},
		{"MiB just below 100", MiB("104857599"), "100.0"},
		{"MiB at 100", MiB("104857600"), "100"},
		{"MiB not a number", MiB(""), "?"},
		{"ratio", Ratio("7.10", "17.54"), "0.40×"},
		{"ratio above 1", Ratio("1325", "66"), "20.08×"},
		{"ratio of a word", Ratio("ok", "ok"), "—"},
		{"ratio by zero", Ratio("1.00", "0.00"), "—"},
		{"ratio of nothing", Ratio("", "1"), "—"},
		{"ratio negative", Ratio("-1", "2"), "-0.50×"},
		{"throughput", throughput("2147483648", "2.28"), "898"},
		{"throughput of no time", throughput("2147483648", "0.00"), ""},
		{"max", maxOf("108", "104"), "108"},
		{"max with one missing", maxOf("", "104"), "104"},
		{"max of none", maxOf("", ""), ""},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
}

func parse(t *testing.T, text string) *Figures {
	t.Helper()
	f, err := Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestDerivedFigures(t *testing.T) {
	f := parse(t, strings.Join([]string{
		"x.full.ns\t1",
		"x.full.ns\t2500000000", // a later line wins
		"x.full.rss_kb\t99500",
		"x.full.stored\t1000",
		"x.total.stored\t1500",
		"x.total.objects\t7",
		"x.restore1.rss_kb\t90000",
		"x.restore2.rss_kb\t120400",
		"x.restore1.ok\tok",
		"x.restore2.ok\tMISMATCH",
		"y.restore1.ok\tok",
		"y.restore2.ok\tok",
		"failed\tfirst",
		"failed\tsecond",
		"",
	}, "\n"))
	for _, c := range []struct{ key, value, cell string }{ // what Get and Cell return
		{"x.full.s", "2.50", "2.50 s"},
		{"x.full.rss", "100", "100 MB"},
		{"x.full.stored", "1000", "0.0 MiB"},
		{"x.incr.stored", "500", "+0.0 MiB"},
		{"x.restore.rss", "120", "120 MB"},
		{"x.restore_ok", "MISMATCH", "MISMATCH"},
		{"y.restore_ok", "ok", "ok"},
		{"y.restore.rss", "", "—"},
		{"x.total.objects", "7", "7"},
		{"x.incr.s", "", "—"},
		{"z.incr.stored", "", "—"},
		{"z.restore_ok", "", "—"},
		{"missing.entirely", "", "—"},
		{"x.restore1.ok", "ok", "ok"},
		{"x.restore2.rss_kb", "120400", "120400"},
	} {
		if got := f.Get(c.key); got != c.value {
			t.Errorf("Get(%q) = %q, want %q", c.key, got, c.value)
		}
		if got := f.Cell(c.key); got != c.cell {
			t.Errorf("Cell(%q) = %q, want %q", c.key, got, c.cell)
		}
	}
	if strings.Join(f.Failed, "|") != "first|second" {
		t.Errorf("Failed = %q, want [first second]", f.Failed)
	}
}

func TestParseRefusesALineWithoutATab(t *testing.T) {
	_, err := Parse(strings.NewReader("size\t1\nsize 2\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("got %v, want an error naming line 2", err)
	}
}

// render renders a measurements file of testdata, with extra lines appended.
func render(t *testing.T, name string, extra ...string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	f := parse(t, string(raw)+strings.Join(extra, "\n"))
	var b strings.Builder
	if err := Render(&b, f); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestRenderAsTheShellDid renders the figures of a real run (make bench-reef,
// 2026-12-07 17:40) and compares the result with the report bench.sh's awk
// wrote then (testdata/NAME.md, as written). The run kept only its report,
// so the raw figures in testdata/NAME.tsv (ns, kB, bytes) are ones that
// round to what it shows; the ratios come out of the same division.
func TestRenderAsTheShellDid(t *testing.T) {
	for _, name := range []string{"reef-2026-12-07"} {
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("testdata", name+".md"))
			if err != nil {
				t.Fatal(err)
			}
			got := render(t, name+".tsv")
			if got != string(want) {
				t.Errorf("report differs from testdata/%s.md:\n%s", name, lineDiff(string(want), got))
			}
		})
	}
}

// TestRenderVariants: the knobs that change the report's wording.
func TestRenderVariants(t *testing.T) {
	got := render(t, "reef-2026-12-07.tsv",
		"ceph\tshared", "encrypt\t0", "parallel\t4", "chunk_sizes\t",
		"restic.restore2.ok\tMISMATCH",
		"failed\trestic restore of snapshot 2: sha256 ab, want cd (image kept: p/i)")
	for _, want := range []string{
		"(the stack's cluster, one memstore OSD)",
		", 1MiB chunks, not encrypted, --parallel 4;",
		"| restored images = snapshots (sha256) | ok | ok | MISMATCH | — | — |",
		"\n**FAILED:**\n- restic restore of snapshot 2: sha256 ab, want cd (image kept: p/i)\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "chunk size") {
		t.Errorf("no chunk sizes measured, yet the report has their table:\n%s", got)
	}

	got = render(t, "reef-2026-12-07.tsv", "tcmalloc\t/usr/lib/libtcmalloc.so.4")
	if !strings.Contains(got, "(a dedicated one-node cluster, one memstore OSD, daemons with tcmalloc preloaded)") {
		t.Errorf("report does not say the daemons had tcmalloc preloaded:\n%s", got)
	}
}

// TestRenderWithoutPeers: BENCH_TOOLS=lifeboat leaves the peers' cells and
// the ratios empty.
func TestRenderWithoutPeers(t *testing.T) {
	f := parse(t, "lifeboat.full.ns\t6000000000\nlifeboat.restore1.ok\tok\nlifeboat.restore2.ok\tok\nsize\t1\n")
	var b strings.Builder
	if err := Render(&b, f); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| full backup, time | 6.00 s | — | — | — | — |",
		"| restored images = snapshots (sha256) | ok | — | — | — | — |",
		"snapshot 1: — s (—); peak RSS of `rbd export`: — MB.",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

// lineDiff lists the lines that differ, for a readable failure.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := range max(len(w), len(g)) {
		var x, y string
		if i < len(w) {
			x = w[i]
		}
		if i < len(g) {
			y = g[i]
		}
		if x != y {
			fmt.Fprintf(&b, "line %d:\n  want %s\n  got  %s\n", i+1, x, y)
		}
	}
	return b.String()
}
