package rbd

import (
	"reflect"
	"strings"
	"testing"
)

func TestFeatureNames(t *testing.T) {
	got := FeatureNames(FeatureLayering | FeatureDeepFlatten | FeatureOperations)
	if want := []string{"layering", "deep-flatten", "operations"}; !reflect.DeepEqual(got, want) {
		t.Errorf("FeatureNames = %v, want %v", got, want)
	}
	if got := OpFeatureNames(OpCloneChild | OpSnapTrash); !reflect.DeepEqual(got, []string{"clone-child", "snap-trash"}) {
		t.Errorf("OpFeatureNames = %v", got)
	}
}

// TestFeatureTable pins the table to librbd's bits and `rbd info`'s order:
// bit i is the i-th name.
func TestFeatureTable(t *testing.T) {
	want := []string{"layering", "striping", "exclusive-lock", "object-map", "fast-diff", "deep-flatten",
		"journaling", "data-pool", "operations", "migrating", "non-primary", "dirty-cache"}
	if got := FeatureNames(^uint64(0)); !reflect.DeepEqual(got, want) {
		t.Fatalf("FeatureNames(all) = %v, want %v", got, want)
	}
	for i, name := range want {
		if got := FeatureNames(1 << i); len(got) != 1 || got[0] != name {
			t.Errorf("bit %d = %v, want %s", i, got, name)
		}
	}
	if got := OpFeatureNames(^uint64(0)); !reflect.DeepEqual(got, []string{"clone-parent", "clone-child", "group", "snap-trash"}) {
		t.Errorf("OpFeatureNames(all) = %v", got)
	}
}

func TestParseFeatures(t *testing.T) {
	all := strings.Join(FeatureNames(^uint64(0)), ",")
	if f, err := ParseFeatures(all); err != nil || f != 1<<12-1 {
		t.Errorf("ParseFeatures(every name) = %b, %v", f, err)
	}
	for in, want := range map[string]uint64{
		"":                                 0,
		"layering,deep-flatten":            FeatureLayering | FeatureDeepFlatten,
		" layering , ,deep-flatten,":       FeatureLayering | FeatureDeepFlatten,
		"layering,deep-flatten,operations": FeatureLayering | FeatureDeepFlatten | FeatureOperations,
	} {
		if f, err := ParseFeatures(in); err != nil || f != want {
			t.Errorf("ParseFeatures(%q) = %b, %v; want %b", in, f, err, want)
		}
	}
	if _, err := ParseFeatures("layering,layring"); err == nil || !strings.Contains(err.Error(), `unknown RBD feature "layring"`) {
		t.Errorf("ParseFeatures(a typo) = %v", err)
	}
}
