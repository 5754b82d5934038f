package main

import (
	"cmp"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// tools are the report's columns, lifeboat first: the ratios divide by the others.
var tools = []string{"lifeboat", "kopia", "restic"}

// rows of the side-by-side table: label and the key below TOOL.
var rows = [][2]string{
	{"full backup, time", "full.s"},
	{"full backup, stored", "full.stored"},
	{"1% change, second backup, time", "incr.s"},
	{"1% change, second backup, added stored", "incr.stored"},
	{"restore snapshot 1 into a new RBD image, time", "restore1.s"},
	{"restore snapshot 2 into a new RBD image, time", "restore2.s"},
	{"restored images = snapshots (sha256)", "restore_ok"},
	{"objects in the bucket", "total.objects"},
	{"peak RSS, full backup", "full.rss"},
	{"peak RSS, second backup", "incr.rss"},
	{"peak RSS, restore", "restore.rss"},
}

// chunkColumns of the chunk-size table, below chunkSIZE.
var chunkColumns = []string{"full.s", "full.stored", "incr.s", "incr.stored", "total.stored", "total.objects"}

// Render writes the markdown report (bench.sh's results.md).
func Render(w io.Writer, f *Figures) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	ln := func(s string) { b.WriteString(s + "\n") }
	ln("# lifeboat side-by-side benchmark")
	ln("")
	p("%s; %s; %s", f.machine(), f.ceph(), f.load())
	p("lifeboat: %s; kopia %s and restic %s with default settings (both encrypt; restic compresses, kopia does not by default).",
		f.lifeboat(), f.Get("kopia_version"), f.Get("restic_version"))
	ln("")
	p("Volume: %s MiB provisioned, %s MiB random + %s MiB non-repeating text, the rest holes; "+
		"a ceph-csi snapshot (clone-v2 child), then %s random 1 MiB writes (1%%) and a second snapshot.",
		MiB(f.Get("size")), MiB(f.Get("random")), MiB(f.Get("text")), f.Get("writes"))
	ln("kopia and restic read `rbd export SNAP - |` (Velero's data mover treats a block volume as a raw stream); " +
		"lifeboat exports the VolumeSnapshotContent. Stored = sum of object sizes in the tool's bucket. " +
		"Peak RSS is the tool's process only (not `rbd export`/`rbd import`). Ratio = lifeboat ÷ peer: below 1 is better for lifeboat.")
	ln("")
	ln("| step | lifeboat | kopia | restic | lifeboat/kopia | lifeboat/restic |")
	ln("|---|---|---|---|---|---|")
	for _, r := range rows {
		ln(f.row(r[0], r[1]))
	}
	ln("")
	p("Read limit: `rbd export SNAP - | cat > /dev/null` of snapshot 1: %s s (%s); peak RSS of `rbd export`: %s MB.",
		cmp.Or(f.Get("read.s"), "—"), f.readRate(), cmp.Or(f.Get("read.rss"), "—"))
	if full := f.Get("lifeboat.full.json"); full != "" {
		ln("")
		p("lifeboat's own report: full `%s`; second `%s`", full, f.Get("lifeboat.incr.json"))
	}
	if sizes := strings.Fields(f.Get("chunk_sizes")); len(sizes) > 0 {
		ln("")
		ln("### lifeboat chunk size (same volume, one repository per size)")
		ln("")
		ln("| chunk size | full export, time | stored after full | second export, time | added by the 1% change | stored after the 1% change | objects |")
		ln("|---|---|---|---|---|---|---|")
		for _, cs := range sizes {
			line := "| " + cs + " |"
			for _, c := range chunkColumns {
				line += " " + f.Cell(ChunkKey(cs)+"."+c) + " |"
			}
			ln(line)
		}
	}
	if len(f.Failed) > 0 {
		ln("")
		ln("**FAILED:**")
		for _, m := range f.Failed {
			p("- %s", m)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ChunkKey is the key prefix of the chunk-size measurement of size cs.
func ChunkKey(cs string) string { return "chunk" + strings.ToLower(cs) }

// row is one line of the side-by-side table: a cell per tool, then
// lifeboat ÷ kopia and lifeboat ÷ restic.
func (f *Figures) row(label, key string) string {
	line := "| " + label + " |"
	for _, t := range tools {
		line += " " + f.Cell(t+"."+key) + " |"
	}
	for _, peer := range tools[1:] {
		line += " " + Ratio(f.Get("lifeboat."+key), f.Get(peer+"."+key)) + " |"
	}
	return line
}

// machine: when, and on what.
func (f *Figures) machine() string {
	when := "?"
	if secs, err := strconv.ParseInt(f.Get("date"), 10, 64); err == nil {
		when = time.Unix(secs, 0).UTC().Format("2006-01-02 15:04 UTC")
	}
	ram := "?"
	if kib, err := strconv.ParseFloat(f.Get("mem_kib"), 64); err == nil {
		ram = fmt.Sprintf("%.0f GiB", kib/1048576)
	}
	return fmt.Sprintf("%s, %s cores (%s), %s RAM", when, f.Get("cores"), f.Get("cpu"), ram)
}

// ceph: the release (fields 3 and 5 of `ceph --version`) and the cluster.
func (f *Figures) ceph() string {
	v := strings.Fields(f.Get("ceph_version"))
	field := func(i int) string {
		if i < len(v) {
			return v[i]
		}
		return ""
	}
	cluster := "the stack's cluster"
	extra := ""
	if f.Get("ceph") == "own" {
		cluster = "a dedicated one-node cluster"
		if f.Get("tcmalloc") != "" {
			extra = ", daemons with tcmalloc preloaded"
		}
	}
	return fmt.Sprintf("Ceph %s %s (%s, one memstore OSD%s), MinIO on 127.0.0.1, everything on this machine",
		field(2), field(4), cluster, extra)
}

func (f *Figures) load() string {
	return fmt.Sprintf("1-minute load average %s at the start, %s at the end (other work on the machine distorts the times).",
		f.Get("load.start"), f.Get("load.end"))
}

// lifeboat: version, chunk size, encryption and parallelism.
func (f *Figures) lifeboat() string {
	s := fmt.Sprintf("%s, %s chunks", cmp.Or(f.Get("lifeboat_version"), "?"), cmp.Or(f.Get("lifeboat_chunk"), "?"))
	if f.Get("encrypt") == "1" {
		s += ", encrypted (AES-GCM)"
	} else {
		s += ", not encrypted"
	}
	if p := f.Get("parallel"); p != "" {
		s += ", --parallel " + p
	}
	return s
}

// readRate: how fast Ceph handed out snapshot 1, per provisioned MiB.
func (f *Figures) readRate() string {
	if r := throughput(f.Get("size"), f.Get("read.s")); r != "" {
		return r + " MiB/s of provisioned size"
	}
	return "—"
}
