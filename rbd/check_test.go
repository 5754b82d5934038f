package rbd

import (
	"reflect"
	"strings"
	"testing"
)

// healthy is what ceph-csi leaves for a snapshot: a clone v2 with layering
// and deep-flatten, the data in snapshot csi-snap-x, the parent's snapshot in
// the trash namespace.
func healthy() *ImageInfo {
	return &ImageInfo{
		Pool: "replicapool", Name: "csi-snap-x", ID: "abc", Size: 1 << 30, Format: 2,
		Features:   FeatureLayering | FeatureDeepFlatten | FeatureOperations,
		OpFeatures: OpCloneChild,
		Parent:     &ParentInfo{Pool: "replicapool", Image: "csi-vol-y", ImageID: "def", SnapID: 4, Snap: "9f1c", SnapNamespace: NamespaceTrash},
		Snapshots:  []SnapInfo{{ID: 5, Name: "csi-snap-x", Namespace: NamespaceUser, Size: 1 << 30}},
	}
}

func codes(ps []Problem) []Code {
	out := []Code{}
	for _, p := range ps {
		out = append(out, p.Code)
	}
	return out
}

func TestCheckSnapshotImage(t *testing.T) {
	tests := []struct {
		name      string
		mutate    func(*ImageInfo)
		restore   int64
		want      []Code
		flattened bool
		mention   string
	}{
		{name: "healthy", mutate: func(*ImageInfo) {}, restore: 1 << 30, want: []Code{}},
		{name: "restore size unknown", mutate: func(*ImageInfo) {}, want: []Code{}},
		{name: "flattened", mutate: func(i *ImageInfo) { i.Parent = nil; i.OpFeatures = 0 }, want: []Code{}, flattened: true},
		{name: "format 1", mutate: func(i *ImageInfo) { i.Format = 1 }, want: []Code{FeatureMissing}, mention: "format 1"},
		{name: "no deep-flatten", mutate: func(i *ImageInfo) { i.Features &^= FeatureDeepFlatten }, want: []Code{FeatureMissing}, mention: "deep-flatten"},
		{name: "no layering", mutate: func(i *ImageInfo) { i.Features &^= FeatureLayering }, want: []Code{FeatureMissing}, mention: "layering"},
		{name: "snapshot gone", mutate: func(i *ImageInfo) { i.Snapshots = nil }, restore: 1 << 30, want: []Code{SnapshotNotFound}, mention: `"csi-snap-x"`},
		{name: "snapshot only in trash", mutate: func(i *ImageInfo) { i.Snapshots[0].Namespace = NamespaceTrash }, want: []Code{SnapshotNotFound}},
		{name: "parent without clone-child", mutate: func(i *ImageInfo) { i.OpFeatures = 0 }, want: []Code{NotCloneChild}, mention: "lacks op_feature clone-child"},
		{name: "clone-child without parent", mutate: func(i *ImageInfo) { i.Parent = nil }, want: []Code{NotCloneChild}, flattened: true, mention: "no parent"},
		{name: "parent image gone", mutate: func(i *ImageInfo) { i.Parent.Missing, i.Parent.MissingErr = "image", "ENOENT" }, want: []Code{ParentMissing}, mention: "replicapool/csi-vol-y@9f1c"},
		{name: "size mismatch", mutate: func(*ImageInfo) {}, restore: 2 << 30, want: []Code{SizeMismatch}, mention: "2147483648"},
		{name: "several", mutate: func(i *ImageInfo) { i.Features = 0; i.Snapshots = nil }, restore: 5, want: []Code{FeatureMissing, SnapshotNotFound}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := healthy()
			tt.mutate(info)
			got, flat := CheckSnapshotImage(info, "csi-snap-x", tt.restore)
			if !reflect.DeepEqual(codes(got), tt.want) {
				t.Fatalf("codes = %v, want %v (%v)", codes(got), tt.want, got)
			}
			if flat != tt.flattened {
				t.Errorf("flattened = %v, want %v", flat, tt.flattened)
			}
			if tt.mention != "" && !strings.Contains(got[0].Message, tt.mention) {
				t.Errorf("message %q does not mention %q", got[0].Message, tt.mention)
			}
		})
	}
}

func TestRefSpec(t *testing.T) {
	if got := (Ref{Pool: "p", Namespace: "ns", Image: "i", Snapshot: "s"}).Spec(); got != "p/ns/i@s" {
		t.Errorf("Spec = %q", got)
	}
	if got := (Ref{Pool: "p", Image: "i"}).Spec(); got != "p/i" {
		t.Errorf("Spec = %q", got)
	}
}

func TestValidKey(t *testing.T) {
	for k, want := range map[string]bool{
		"AQDGZQZr8zJSERAA+bWkIqELpG3bHlsqdbGaCQ==":   true,
		"AQBWrongKeyWrongKeyWrongKeyWrongKeyWrong==": false,
		"": false, "not base64!": false, "AQAAAA==": false,
	} {
		if got := validKey(k); got != want {
			t.Errorf("validKey(%q) = %v, want %v", k, got, want)
		}
	}
}

func TestCheckJournal(t *testing.T) {
	if p := CheckJournal(Ref{Pool: "replicapool", Image: "csi-snap-x", FromJournal: true, Source: "csi-vol-y"}); len(p) != 0 {
		t.Errorf("complete journal: %v", p)
	}
	p := CheckJournal(Ref{Pool: "replicapool", Image: "csi-snap-x", FromJournal: true, JournalLacks: "csi.source"})
	if len(p) != 1 || p[0].Code != JournalIncomplete || !strings.Contains(p[0].Message, "csi.source") {
		t.Errorf("journal without csi.source: %v", p)
	}
	if ok, why := (SnapJournal{ImageName: "csi-snap-x"}).Complete(); ok || !strings.Contains(why, "no snap source") {
		t.Errorf("Complete() = %v, %q", ok, why)
	}
}
