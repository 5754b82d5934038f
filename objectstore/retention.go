package objectstore

import (
	"errors"
	"fmt"
	"maps"
	"slices"
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
	Group   string   `json:"group"`
	Keep    bool     `json:"keep"`
	Reasons []string `json:"reasons,omitempty"` // the rules that keep it
}

// Apply decides, for every backup, whether p keeps it. Backups are
// grouped by group (the volume they are of), and each group is judged on
// its own. The result is ordered by group, newest first within one.
func (p Policy) Apply(backups []Summary, group func(Summary) string) []Decision {
	groups := map[string][]Summary{}
	for _, s := range backups {
		g := group(s)
		groups[g] = append(groups[g], s)
	}
	var out []Decision
	for _, g := range slices.Sorted(maps.Keys(groups)) {
		out = append(out, p.applyOne(g, groups[g])...)
	}
	return out
}

// rule keeps the newest backup of each of n distinct periods.
type rule struct {
	name   string
	n      int
	period func(Summary) string
}

// utc formats a backup's creation time in UTC: its period.
func utc(layout string) func(Summary) string {
	return func(s Summary) string { return s.Created.UTC().Format(layout) }
}

func (p Policy) applyOne(group string, list []Summary) []Decision {
	slices.SortFunc(list, func(a, b Summary) int { return b.Created.Compare(a.Created) })
	rules := []rule{
		{"last", p.Last, func(s Summary) string { return s.ID }},
		{"hourly", p.Hourly, utc("2006-01-02T15")},
		{"daily", p.Daily, utc("2006-01-02")},
		{"weekly", p.Weekly, func(s Summary) string { y, w := s.Created.UTC().ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{"monthly", p.Monthly, utc("2006-01")},
		{"yearly", p.Yearly, utc("2006")},
	}
	seen := make([]map[string]bool, len(rules))
	for i := range seen {
		seen[i] = map[string]bool{}
	}
	out := make([]Decision, len(list))
	for i, s := range list {
		d := Decision{Summary: s, Group: group}
		for k, r := range rules {
			key := r.period(s)
			if len(seen[k]) < r.n && !seen[k][key] {
				seen[k][key] = true
				d.Reasons = append(d.Reasons, r.name)
			}
		}
		if p.Within > 0 && list[0].Created.Sub(s.Created) <= p.Within {
			d.Reasons = append(d.Reasons, "within")
		}
		d.Keep = len(d.Reasons) > 0
		out[i] = d
	}
	return out
}
