package handle

import (
	"errors"
	"strings"
	"testing"
)

const uuid = "a0a1af05-a364-11eb-baf1-7a576c7e3674"

func TestDecodeValid(t *testing.T) {
	cluster36 := strings.Repeat("c", 36)
	tests := []struct {
		handle string
		want   ID
	}{
		{"0001-0009-rook-ceph-0000000000000002-" + uuid, ID{1, "rook-ceph", 2, uuid}},
		{"0001-000f-my-ceph-cluster-0000000000000001-" + uuid, ID{1, "my-ceph-cluster", 1, uuid}},
		{"0001-0024-" + cluster36 + "-00000000000001f4-" + uuid, ID{1, cluster36, 500, uuid}},
		{"0001-0009-rook-ceph-00000000deadbeef-" + strings.ToUpper(uuid), ID{1, "rook-ceph", 0xdeadbeef, strings.ToUpper(uuid)}},
		{"0001-0001-x-0000000000000100-" + uuid, ID{1, "x", 256, uuid}},
	}
	for _, tt := range tests {
		got, err := Decode(tt.handle)
		if err != nil {
			t.Errorf("Decode(%q): %v", tt.handle, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Decode(%q) = %+v, want %+v", tt.handle, got, tt.want)
		}
		if got.String() != strings.ToLower(tt.handle[:len(tt.handle)-36])+got.UUID {
			t.Errorf("String() = %q, want %q", got.String(), tt.handle)
		}
	}
}

func TestDecodeMalformed(t *testing.T) {
	tests := map[string]struct{ handle, mention string }{
		"empty":            {"", "at least"},
		"wrong version":    {"0002-0009-rook-ceph-0000000000000002-" + uuid, "version 0002"},
		"version not hex":  {"00x1-0009-rook-ceph-0000000000000002-" + uuid, "version"},
		"length too long":  {"0001-000a-rook-ceph-0000000000000002-" + uuid, "10-character clusterID"},
		"length too short": {"0001-0008-rook-ceph-0000000000000002-" + uuid, "8-character clusterID"},
		"length not hex":   {"0001-00g9-rook-ceph-0000000000000002-" + uuid, "clusterID length"},
		"zero length":      {"0001-0000--0000000000000002-" + uuid, "empty clusterID"},
		"pool not hex":     {"0001-0009-rook-ceph-000000000000000z-" + uuid, "pool ID"},
		"pool signed":      {"0001-0009-rook-ceph-+000000000000002-" + uuid, "pool ID"},
		"pool negative":    {"0001-0009-rook-ceph-ffffffffffffffff-" + uuid, "out of range"},
		"short uuid":       {"0001-0009-rook-ceph-0000000000000002-" + uuid[:35], "fit"},
		"bad uuid":         {"0001-0009-rook-ceph-0000000000000002-" + strings.ReplaceAll(uuid, "-", "x"), "not a UUID"},
		"uuid not hex":     {"0001-0009-rook-ceph-0000000000000002-" + "g" + uuid[1:], "not a UUID"},
		"no dashes":        {"0001x0009-rook-ceph-0000000000000002-" + uuid, "version"},
		"over 128":         {"0001-005c-" + strings.Repeat("c", 92) + "-0000000000000002-" + uuid, "at most 128"},
		"garbage":          {"csi-snap-" + uuid, "at least"},
	}
	for name, tt := range tests {
		_, err := Decode(tt.handle)
		if err == nil {
			t.Errorf("%s: Decode(%q) succeeded", name, tt.handle)
			continue
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error %v does not wrap ErrMalformed", name, err)
		}
		if !strings.Contains(err.Error(), tt.mention) {
			t.Errorf("%s: error %q does not mention %q", name, err, tt.mention)
		}
	}
}

func TestMaxLengthBoundary(t *testing.T) {
	// 128 characters exactly is allowed: a 55-character clusterID.
	c := strings.Repeat("c", 128-(10+1+16+1+36))
	h := ID{1, c, 7, uuid}.String()
	if len(h) != 128 {
		t.Fatalf("test handle is %d chars", len(h))
	}
	if _, err := Decode(h); err != nil {
		t.Fatalf("128-char handle: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("0001-0009-rook-ceph-0000000000000002-" + uuid)
	f.Add("0001-000f-my-ceph-cluster-0000000000000001-" + uuid)
	f.Add("0001-0000--0000000000000002-" + uuid)
	f.Add("")
	f.Fuzz(func(t *testing.T, h string) {
		id, err := Decode(h)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		// Whatever decodes must encode back to the same handle, up to hex case.
		if got := id.String(); !strings.EqualFold(got, h) {
			t.Fatalf("round trip: Decode(%q).String() = %q", h, got)
		}
		if len(h) > MaxLen || id.PoolID < 0 || len(id.UUID) != 36 || id.ClusterID == "" {
			t.Fatalf("accepted invalid handle %q as %+v", h, id)
		}
	})
}
