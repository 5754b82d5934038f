package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Figures are one run's measurements as bench.sh recorded them, one
// "KEY<TAB>VALUE" line each (a later line for a key wins), plus the
// failed checks ("failed" lines, in order). Raw keys:
//
//	STEP.ns          wall time of a step in nanoseconds
//	STEP.rss_kb      peak RSS of the step's tool in kB (GNU time's %M)
//	TOOL.full.stored bytes in the tool's bucket after the full backup
//	TOOL.total.stored bytes after the second backup (TOOL.total.objects: objects)
//	TOOL.restoreN.ok "ok" or "MISMATCH"
//
// and the context the report's header names (date, cores, cpu, ...).
type Figures struct {
	raw    map[string]string
	Failed []string
}

// Parse reads a measurements file.
func Parse(r io.Reader) (*Figures, error) {
	f := &Figures{raw: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		key, value, ok := strings.Cut(line, "\t")
		if !ok || key == "" {
			return nil, fmt.Errorf("line %d: %q is not KEY<TAB>VALUE", n, line)
		}
		if key == "failed" {
			f.Failed = append(f.Failed, value)
			continue
		}
		f.raw[key] = value
	}
	return f, sc.Err()
}

// Get returns a figure as the report shows it, before units: a raw one as
// recorded, or one derived from raw ones (seconds, MB, the bytes added by
// the second backup, the larger restore RSS, both restores' check). ""
// when it was not measured.
func (f *Figures) Get(key string) string {
	if v, ok := f.raw[key]; ok {
		return v
	}
	stem, last := splitLast(key)
	switch {
	case last == "s":
		return seconds(f.raw[stem+".ns"])
	case last == "rss" && strings.HasSuffix(stem, ".restore"):
		tool := strings.TrimSuffix(stem, ".restore")
		return maxOf(f.Get(tool+".restore1.rss"), f.Get(tool+".restore2.rss"))
	case last == "rss":
		return megabytes(f.raw[stem+".rss_kb"])
	case strings.HasSuffix(key, ".incr.stored"):
		tool := strings.TrimSuffix(key, ".incr.stored")
		return difference(f.raw[tool+".total.stored"], f.raw[tool+".full.stored"])
	case last == "restore_ok":
		return bothOK(f.raw[stem+".restore1.ok"], f.raw[stem+".restore2.ok"])
	}
	return ""
}

func splitLast(key string) (stem, last string) {
	i := strings.LastIndexByte(key, '.')
	if i < 0 {
		return "", key
	}
	return key[:i], key[i+1:]
}

// seconds formats nanoseconds as seconds with two decimals.
func seconds(ns string) string {
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%.2f", float64(n)/1e9)
}

// megabytes formats kB (GNU time's unit) as whole MB.
func megabytes(kb string) string {
	n, err := strconv.ParseInt(kb, 10, 64)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%.0f", float64(n)/1000)
}

func difference(a, b string) string {
	x, err1 := strconv.ParseInt(a, 10, 64)
	y, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil {
		return ""
	}
	return strconv.FormatInt(x-y, 10)
}

// maxOf is the larger of two whole numbers, a missing one counting as 0;
// "" when both are missing.
func maxOf(a, b string) string {
	if a == "" && b == "" {
		return ""
	}
	x, _ := strconv.ParseInt(a, 10, 64)
	y, _ := strconv.ParseInt(b, 10, 64)
	return strconv.FormatInt(max(x, y), 10)
}

func bothOK(a, b string) string {
	switch {
	case a == "" && b == "":
		return ""
	case a == "ok" && b == "ok":
		return "ok"
	}
	return "MISMATCH"
}

// MiB formats bytes as MiB: whole from 100 MiB on, else one decimal.
func MiB(bytes string) string {
	b, err := strconv.ParseFloat(bytes, 64)
	if err != nil {
		return "?"
	}
	if b >= 100*1048576 {
		return fmt.Sprintf("%.0f", b/1048576)
	}
	return fmt.Sprintf("%.1f", b/1048576)
}

var number = regexp.MustCompile(`^-?[0-9]+([.][0-9]+)?$`)

// Ratio is a ÷ b with two decimals and "×", or "—" when either is not a
// number or b is zero. The report divides the figures as shown (seconds
// and MB rounded), so a reader can redo the division from the table.
func Ratio(a, b string) string {
	if !number.MatchString(a) || !number.MatchString(b) {
		return "—"
	}
	x, _ := strconv.ParseFloat(a, 64)
	y, _ := strconv.ParseFloat(b, 64)
	if y == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", x/y)
}

// Cell is a figure with its unit, chosen by the key's last part: "7.10 s",
// "943 MiB", "+26.9 MiB" (bytes a second backup added), "116 MB", or the
// figure as it is; "—" when it was not measured.
func (f *Figures) Cell(key string) string {
	v := f.Get(key)
	if v == "" {
		return "—"
	}
	_, last := splitLast(key)
	switch {
	case last == "s":
		return v + " s"
	case strings.HasSuffix(key, "incr.stored"):
		return "+" + MiB(v) + " MiB"
	case last == "stored":
		return MiB(v) + " MiB"
	case last == "rss":
		return v + " MB"
	}
	return v
}

// throughput is MiB/s of size bytes in secs seconds (as shown), or "".
func throughput(size, secs string) string {
	b, err1 := strconv.ParseFloat(size, 64)
	s, err2 := strconv.ParseFloat(secs, 64)
	if err1 != nil || err2 != nil || s <= 0 {
		return ""
	}
	return fmt.Sprintf("%.0f", b/1048576/s)
}
