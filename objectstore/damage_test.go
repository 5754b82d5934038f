package objectstore

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// TestDamageIsIsolated: a truncated manifest, one with a flipped byte and
// a backup whose extents page was deleted are each named, and hide no
// other backup; FindLatest passes over them; prune deletes nothing and
// names all three.
func TestDamageIsIsolated(t *testing.T) {
	ctx := context.Background()
	be := NewMemory()
	r := newRepo(t, be, []byte("k"))
	defer func(n int) { ExtentsPerPage = n }(ExtentsPerPage)
	ExtentsPerPage = 1 // a page per extent: each backup has its own pages
	src := map[string]string{"image": "a"}
	var ms []*Manifest
	for i := range 5 {
		ms = append(ms, backup(t, r, image(uint64(i+1), "rr", 0), BackupOptions{Source: src}))
	}
	truncated, flipped, paged := ms[4], ms[1], ms[2]
	obj, _ := be.Get(ctx, manifestName(truncated.ID))
	be.Put(ctx, manifestName(truncated.ID), obj[:len(obj)/2])
	obj, _ = be.Get(ctx, manifestName(flipped.ID))
	obj[len(obj)/2] ^= 1
	be.Put(ctx, manifestName(flipped.ID), obj)
	page := pageName(paged.Pages[1].ID)
	be.Delete(ctx, page)

	cat, err := r.Backups(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	var ok, bad []string
	for _, s := range cat.Backups {
		ok = append(ok, s.ID)
	}
	for _, d := range cat.Damaged {
		bad = append(bad, d.ID)
		if d.ID == paged.ID && (d.Object != page || !strings.Contains(d.Reason, "missing")) {
			t.Errorf("deleted page: %+v", d)
		}
	}
	slices.Sort(bad)
	if !slices.Equal(ok, []string{ms[0].ID, ms[3].ID}) || !slices.Equal(bad, []string{flipped.ID, paged.ID, truncated.ID}) {
		t.Fatalf("readable %v, damaged %+v", ok, cat.Damaged)
	}
	// Without the page check, the backup with a missing page is listed.
	if cat, _ := r.Backups(ctx, false); len(cat.Backups) != 3 || len(cat.Damaged) != 2 {
		t.Fatalf("without pages: %+v", cat)
	}
	latest, err := r.FindLatest(ctx, func(s *Summary) bool { return s.Source["image"] == "a" })
	if err != nil || latest == nil || latest.ID != ms[3].ID {
		t.Fatalf("FindLatest past a damaged newest: %v %+v", err, latest)
	}
	chunks := len(objects(t, be, "data/"))
	r.Forget(ctx, ms[0].ID, false)
	_, err = r.Prune(ctx, PruneOptions{})
	for _, m := range []*Manifest{truncated, flipped, paged} {
		if err == nil || !strings.Contains(err.Error(), m.ID) {
			t.Errorf("prune's error does not name %s: %v", m.ID, err)
		}
	}
	if n := len(objects(t, be, "data/")); n != chunks {
		t.Fatalf("prune deleted %d chunks", chunks-n)
	}
}
