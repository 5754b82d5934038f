package objectstore

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Policy says which backups of one volume to keep, the way restic's
// `forget` does: the Last newest; the newest of each of the Hourly,
// Daily, Weekly, Monthly and Yearly most recent hours, days, ISO weeks,
// months and years that have a backup (in UTC); and every backup made
// within Within of the volume's newest one. A backup any rule keeps is
// kept. Since each rule keeps a volume's newest backup, a policy never
// forgets every backup of a volume.
type Policy struct {
	Last, Hourly, Daily, Weekly, Monthly, Yearly int
	Within                                       time.Duration
}

// Validate refuses a policy that keeps nothing (it would forget every
// backup) or has negative counts.
func (p Policy) Validate() error {
	counts := []int{p.Last, p.Hourly, p.Daily, p.Weekly, p.Monthly, p.Yearly}
	if slices.ContainsFunc(counts, func(n int) bool { return n < 0 }) || p.Within < 0 {
		return errors.New("retention: counts and durations must not be negative")
	}
	if p.Within == 0 && !slices.ContainsFunc(counts, func(n int) bool { return n > 0 }) {
		return errors.New("retention: the policy keeps nothing; give at least one --keep-* rule")
	}
	return nil
}

// Decision is what a policy does with one backup, and why.
type Decision struct {
	Summary
	Group   string    `json:"group"`
	Taken   time.Time `json:"taken"` // what the policy ranks by
	Keep    bool      `json:"keep"`
	Reasons []string  `json:"reasons,omitempty"` // the rules that keep it
}

// Apply decides, for every backup, whether p keeps it. Backups are
// grouped by group (the volume they are of), and each group is judged on
// its own, ranked by taken (when the data was captured: exports may run
// late or out of order, so not their Created time). The result is
// ordered by group, newest first within one.
func (p Policy) Apply(backups []Summary, group func(Summary) string, taken func(Summary) time.Time) []Decision {
	groups := map[string][]Decision{}
	for _, s := range backups {
		g := group(s)
		groups[g] = append(groups[g], Decision{Summary: s, Group: g, Taken: taken(s)})
	}
	var out []Decision
	for _, g := range slices.Sorted(maps.Keys(groups)) {
		out = append(out, p.applyOne(groups[g])...)
	}
	return out
}

// rule keeps the newest backup of each of n distinct periods.
type rule struct {
	name   string
	n      int
	period func(Decision) string
}

// utc formats when a backup's data was taken, in UTC: its period.
func utc(layout string) func(Decision) string {
	return func(d Decision) string { return d.Taken.UTC().Format(layout) }
}

func (p Policy) applyOne(list []Decision) []Decision {
	// Newest first; ties (one instant) broken by id, as backups are listed.
	slices.SortFunc(list, func(a, b Decision) int {
		if c := b.Taken.Compare(a.Taken); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	rules := []rule{
		{"last", p.Last, func(d Decision) string { return d.ID }},
		{"hourly", p.Hourly, utc("2006-01-02T15")},
		{"daily", p.Daily, utc("2006-01-02")},
		{"weekly", p.Weekly, func(d Decision) string { y, w := d.Taken.UTC().ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{"monthly", p.Monthly, utc("2006-01")},
		{"yearly", p.Yearly, utc("2006")},
	}
	seen := make([]map[string]bool, len(rules))
	for i := range seen {
		seen[i] = map[string]bool{}
	}
	for i := range list {
		d := &list[i]
		for k, r := range rules {
			key := r.period(*d)
			if len(seen[k]) < r.n && !seen[k][key] {
				seen[k][key] = true
				d.Reasons = append(d.Reasons, r.name)
			}
		}
		// restic's keep-within: strictly less than the duration before the newest.
		if p.Within > 0 && list[0].Taken.Sub(d.Taken) < p.Within {
			d.Reasons = append(d.Reasons, "within")
		}
		d.Keep = len(d.Reasons) > 0
	}
	return list
}
