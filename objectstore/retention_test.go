package objectstore

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// at makes backup summaries of volume vol, created at the given times.
func at(vol string, times ...string) []Summary {
	var out []Summary
	for _, ts := range times {
		t, err := time.Parse("2006-01-02 15:04", ts)
		if err != nil {
			panic(err)
		}
		out = append(out, Summary{ID: vol + "@" + ts, Created: t, Source: map[string]string{"vol": vol}})
	}
	return out
}

// kept lists the ids p keeps, with their reasons, newest first per group.
func kept(p Policy, list []Summary) []string {
	var out []string
	vol := func(s Summary) string { return s.Source["vol"] }
	for _, d := range p.Apply(list, vol, func(s Summary) time.Time { return s.Created }) {
		if d.Keep {
			out = append(out, d.ID+" "+strings.Join(d.Reasons, ","))
		}
	}
	return out
}

func TestRetention(t *testing.T) {
	week := at("a",
		"2026-11-23 10:00", "2026-11-23 12:00", // Monday, week 48
		"2026-11-29 23:00",                     // Sunday, week 48
		"2026-11-30 01:00", "2026-11-30 01:30", // Monday, week 49
		"2026-12-01 09:00", "2026-12-02 08:00",
	)
	for _, c := range []struct {
		name string
		p    Policy
		want []string
	}{
		{"last", Policy{Last: 2}, []string{"a@2026-12-02 08:00 last", "a@2026-12-01 09:00 last"}},
		{"daily: the newest of each day", Policy{Daily: 4}, []string{
			"a@2026-12-02 08:00 daily", "a@2026-12-01 09:00 daily", "a@2026-11-30 01:30 daily", "a@2026-11-29 23:00 daily"}},
		{"hourly", Policy{Hourly: 2}, []string{"a@2026-12-02 08:00 hourly", "a@2026-12-01 09:00 hourly"}},
		{"weekly: ISO weeks start on Monday", Policy{Weekly: 3}, []string{
			"a@2026-12-02 08:00 weekly", "a@2026-11-29 23:00 weekly"}},
		{"monthly and yearly", Policy{Monthly: 2, Yearly: 1}, []string{
			"a@2026-12-02 08:00 monthly,yearly", "a@2026-11-30 01:30 monthly"}},
		{"within the newest's last 25 hours", Policy{Within: 25 * time.Hour}, []string{
			"a@2026-12-02 08:00 within", "a@2026-12-01 09:00 within"}},
		{"rules add up", Policy{Last: 1, Weekly: 2}, []string{
			"a@2026-12-02 08:00 last,weekly", "a@2026-11-29 23:00 weekly"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.p.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := kept(c.p, slices.Clone(week)); !slices.Equal(got, c.want) {
				t.Fatalf("kept\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
			}
		})
	}
}

// Each volume is judged on its own: an old volume keeps its newest
// backups however new another volume's are.
func TestRetentionGroups(t *testing.T) {
	list := append(at("a", "2026-12-01 10:00", "2026-12-02 10:00"), at("b", "2020-01-01 00:00", "2020-01-02 00:00")...)
	got := kept(Policy{Last: 1, Within: time.Hour}, list)
	want := []string{"a@2026-12-02 10:00 last,within", "b@2020-01-02 00:00 last,within"}
	if !slices.Equal(got, want) {
		t.Fatalf("kept %q, want %q", got, want)
	}
}

func TestRetentionPolicyValidate(t *testing.T) {
	for _, p := range []Policy{{}, {Last: -1}, {Daily: 1, Within: -time.Hour}} {
		if err := p.Validate(); err == nil {
			t.Errorf("policy %+v accepted", p)
		}
	}
}

// Backups are ranked by when their data was taken, not by when they were
// exported: the snapshot of Tuesday, exported last, is not the newest.
// Periods are UTC whatever the zone of the times, and equal times are
// ranked by id.
func TestRetentionRanksByTaken(t *testing.T) {
	east := time.FixedZone("UTC+5", 5*3600)
	taken := map[string]time.Time{
		"mon":  time.Date(2026, 12, 7, 2, 0, 0, 0, east),  // Sunday 21:00 UTC
		"tue":  time.Date(2026, 12, 8, 2, 0, 0, 0, east),  // Monday 21:00 UTC
		"wed":  time.Date(2026, 12, 9, 23, 0, 0, 0, east), // Wednesday 18:00 UTC
		"wed2": time.Date(2026, 12, 9, 23, 0, 0, 0, east),
	}
	exported := time.Date(2026, 12, 10, 0, 0, 0, 0, time.UTC)
	var list []Summary
	for i, id := range []string{"wed", "wed2", "mon", "tue"} { // export order
		list = append(list, Summary{ID: id, Created: exported.Add(time.Duration(i) * time.Minute)})
	}
	by := func(s Summary) time.Time { return taken[s.ID] }
	keep := func(p Policy) []string {
		var out []string
		for _, d := range p.Apply(list, func(Summary) string { return "v" }, by) {
			if d.Keep {
				out = append(out, d.ID)
			}
		}
		return out
	}
	if got := keep(Policy{Last: 2}); !slices.Equal(got, []string{"wed2", "wed"}) {
		t.Errorf("last 2: %v, want the two of Wednesday, wed2 first", got)
	}
	if got := keep(Policy{Weekly: 2}); !slices.Equal(got, []string{"wed2", "mon"}) {
		t.Errorf("weekly 2: %v, want wed2 (week 50) and mon (Sunday of week 49 in UTC)", got)
	}
	if got := keep(Policy{Daily: 3}); !slices.Equal(got, []string{"wed2", "tue", "mon"}) {
		t.Errorf("daily 3: %v", got)
	}
}
