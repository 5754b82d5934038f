package backup

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	"sigs.k8s.io/yaml"

	"github.com/lifeboat-backup/lifeboat/objectstore"
	"github.com/lifeboat-backup/lifeboat/rbd/handle"
)

const (
	uuidA = "a0a1af05-a364-11eb-baf1-7a576c7e3674"
	uuidB = "b0b1af05-a364-11eb-baf1-7a576c7e3674"
)

func summary(id, velero, h, pvc string, created time.Time, extra map[string]string) objectstore.Summary {
	d, _ := handle.Decode(h)
	src := map[string]string{KeyHandle: h, KeyVeleroBackup: velero, KeyPVC: pvc, KeyVolumeSnapshot: pvc + "-snap",
		KeyClusterID: d.ClusterID, KeyPool: "replicapool", KeyNamespace: "", KeyImage: "csi-snap-" + d.UUID,
		KeySnapshot: "csi-snap-" + d.UUID, KeyLineage: "replicapool/csi-vol-src"}
	for k, v := range extra {
		src[k] = v
	}
	return objectstore.Summary{ID: id, Created: created, Size: 64 << 20, Source: src}
}

func TestComposeHandle(t *testing.T) {
	old, err := handle.Decode("0001-0009-rook-ceph-0000000000000002-" + uuidA)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		cluster string
		pool    int64
		want    string
	}{
		{"rook-ceph", 2, "0001-0009-rook-ceph-0000000000000002-" + uuidA},
		{"rook-ceph", 5, "0001-0009-rook-ceph-0000000000000005-" + uuidA},
		{"site-b", 300, "0001-0006-site-b-000000000000012c-" + uuidA},
		{"a-very-long-cluster-id-with-dashes", 1, "0001-0022-a-very-long-cluster-id-with-dashes-0000000000000001-" + uuidA},
	} {
		got, err := composeHandle(old, tt.cluster, tt.pool)
		if err != nil || got != tt.want {
			t.Errorf("composeHandle(%s, %d) = %q, %v; want %q", tt.cluster, tt.pool, got, err, tt.want)
		}
		if d, err := handle.Decode(got); err != nil || d.ClusterID != tt.cluster || d.PoolID != tt.pool || d.UUID != uuidA {
			t.Errorf("%q decodes to %+v, %v", got, d, err)
		}
	}
	if _, err := composeHandle(old, strings.Repeat("x", 80), 1); err == nil {
		t.Error("a handle over 128 characters was accepted")
	}
}

func TestPlanRehydration(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	hA := "0001-0009-rook-ceph-0000000000000002-" + uuidA
	hB := "0001-0009-rook-ceph-0000000000000002-" + uuidB
	hMissing := "0001-0009-rook-ceph-0000000000000002-c0b1af05-a364-11eb-baf1-7a576c7e3674"
	recorded := map[string]string{KeyCSISource: "csi-vol-db", KeyRequestName: "snapshot-123", KeyJournal: "true", KeyNamePrefix: "csi-snap-"}
	all := []objectstore.Summary{
		summary("old-a", "nightly", hA, "shop/db", t0, recorded),
		summary("new-a", "nightly", hA, "shop/db", t0.Add(time.Hour), recorded), // newest backup of a handle wins
		summary("b", "nightly", hB, "shop/files", t0, nil),                      // an older export: no csi* keys
		summary("other", "weekly", "0001-0009-rook-ceph-0000000000000002-d0b1af05-a364-11eb-baf1-7a576c7e3674", "shop/x", t0, nil),
	}
	velero := []VeleroVolume{{PVC: "shop/db", Handle: hA}, {PVC: "shop/files", Handle: hB}, {PVC: "shop/logs", Handle: hMissing}}

	t.Run("same pool id", func(t *testing.T) {
		plan := PlanRehydration("nightly", all, velero, TargetCluster{Pools: map[string]int64{"replicapool": 2, "other": 1}})
		if len(plan) != 3 {
			t.Fatalf("%d volumes, want 3: %+v", len(plan), plan)
		}
		db, files, logs := plan[0], plan[1], plan[2]
		if db.BackupID != "new-a" || db.NewHandle != hA || db.Rewritten() || db.State != StatePlanned {
			t.Errorf("db: %+v", db)
		}
		if j := db.Journal; j.Source != "csi-vol-db" || j.RequestName != "snapshot-123" || j.ImageName != "csi-snap-"+uuidA || j.UUID != uuidA || len(db.Lacks) != 0 {
			t.Errorf("db journal %+v lacks %v", j, db.Lacks)
		}
		if j := files.Journal; j.Source != "csi-vol-src" || j.RequestName != "" || len(files.Lacks) != 2 {
			t.Errorf("older backup: journal %+v, lacks %v; want csi.source from the lineage and both lacks named", j, files.Lacks)
		}
		if logs.PVC != "shop/logs" || logs.State != StateMissing || !strings.Contains(logs.Reason, "never exported") {
			t.Errorf("never exported: %+v", logs)
		}
		if doc, err := ModifierRules(plan); doc != nil || err != nil {
			t.Errorf("modifiers with no handle changed: %s, %v", doc, err)
		}
	})

	t.Run("other pool id, mapped clusterID, namespace from config", func(t *testing.T) {
		plan := PlanRehydration("nightly", all, nil, TargetCluster{Pools: map[string]int64{"replicapool": 7},
			ClusterIDs: map[string]string{"rook-ceph": "site-b"},
			Namespace:  func(id string) (string, bool) { return "ns-" + id, id == "site-b" }})
		if len(plan) != 2 {
			t.Fatalf("%d volumes, want 2", len(plan))
		}
		want := "0001-0006-site-b-0000000000000007-" + uuidA
		if v := plan[0]; v.NewHandle != want || !v.Rewritten() || v.PoolID != 7 || v.ClusterID != "site-b" || v.Namespace != "ns-site-b" {
			t.Errorf("got %+v, want new handle %s in ns-site-b", v, want)
		}
	})

	t.Run("pool missing", func(t *testing.T) {
		plan := PlanRehydration("nightly", all, nil, TargetCluster{Pools: map[string]int64{"rbd": 2}})
		if plan[0].State != StateFailed || !strings.Contains(plan[0].Reason, `no pool "replicapool"`) {
			t.Errorf("%+v", plan[0])
		}
	})

	t.Run("nothing recorded of the source", func(t *testing.T) {
		s := summary("c", "nightly", hA, "shop/db", t0, nil)
		delete(s.Source, KeyLineage)
		j, lacks := journalOf(s, uuidA, "csi-snap-"+uuidA)
		if j.Source != "csi-snap-"+uuidA || len(lacks) != 2 {
			t.Errorf("journal %+v lacks %v", j, lacks)
		}
		s.Source[KeyParent] = "replicapool/csi-vol-parent@9f1c"
		if j, _ := journalOf(s, uuidA, "csi-snap-"+uuidA); j.Source != "csi-vol-parent" {
			t.Errorf("source from the parent: %q", j.Source)
		}
	})
}

// TestModifierRulesVelero checks the ConfigMap document against Velero
// v1.18.3's resource modifiers (internal/resourcemodifiers): decoded
// strictly into the same fields, a `test` patch for each match and the
// rule's patches built as its JSONPatch.ToString does, applied by
// evanphx/json-patch (Velero uses v5; v4 has the same RFC 6902 semantics).
func TestModifierRulesVelero(t *testing.T) {
	old1 := "0001-0009-rook-ceph-0000000000000002-" + uuidA
	new1 := "0001-0009-rook-ceph-0000000000000003-" + uuidA
	old2 := "0001-0009-rook-ceph-0000000000000002-" + uuidB
	vols := []*VolumePlan{
		{OldHandle: old1, NewHandle: new1, State: StateRehydrated},
		{OldHandle: old2, NewHandle: old2, State: StateRehydrated},                                         // unchanged: no rule
		{OldHandle: "x", NewHandle: "y", State: StateFailed},                                               // not restored: no rule
		{OldHandle: old2, NewHandle: "0001-0009-rook-ceph-0000000000000009-" + uuidB, State: StateMissing}, // no rule
	}
	doc, err := ModifierRules(vols)
	if err != nil {
		t.Fatal(err)
	}
	// Velero's types, v1.18.3 internal/resourcemodifiers/resource_modifiers.go and json_patch.go.
	type matchRule struct {
		Path  string `json:"path,omitempty"`
		Value string `json:"value,omitempty"`
	}
	type conditions struct {
		Namespaces        []string    `json:"namespaces,omitempty"`
		GroupResource     string      `json:"groupResource"`
		ResourceNameRegex string      `json:"resourceNameRegex,omitempty"`
		LabelSelector     any         `json:"labelSelector,omitempty"`
		Matches           []matchRule `json:"matches,omitempty"`
	}
	type jsonPatchT struct {
		Operation string `json:"operation"`
		From      string `json:"from,omitempty"`
		Path      string `json:"path"`
		Value     string `json:"value,omitempty"`
	}
	type rule struct {
		Conditions       conditions   `json:"conditions"`
		Patches          []jsonPatchT `json:"patches,omitempty"`
		MergePatches     []any        `json:"mergePatches,omitempty"`
		StrategicPatches []any        `json:"strategicPatches,omitempty"`
	}
	var rm struct {
		Version string `json:"version"`
		Rules   []rule `json:"resourceModifierRules"`
	}
	if err := yaml.UnmarshalStrict(doc, &rm); err != nil {
		t.Fatalf("Velero would refuse the document: %v\n%s", err, doc)
	}
	if rm.Version != "v1" || len(rm.Rules) != 1 {
		t.Fatalf("version %q, %d rules; want v1 and 1:\n%s", rm.Version, len(rm.Rules), doc)
	}
	r := rm.Rules[0]
	if r.Conditions.GroupResource != GroupResourceVSC {
		t.Errorf("groupResource %q", r.Conditions.GroupResource)
	}
	// Velero's JSONPatch.ToString: a value that is not JSON is quoted.
	toString := func(p jsonPatchT) string {
		v := p.Value
		if _, err := strconv.ParseFloat(v, 64); err == nil || v == "null" || v == "true" || v == "false" || strings.HasPrefix(v, "{") || strings.HasPrefix(v, "[") {
			t.Fatalf("value %q would not be quoted by Velero", v)
		}
		return fmt.Sprintf(`{"op": "%s", "from": "%s", "path": "%s", "value": "%s"}`, p.Operation, p.From, p.Path, v)
	}
	apply := func(obj []byte, ps []jsonPatchT) ([]byte, error) {
		var s []string
		for _, p := range ps {
			s = append(s, toString(p))
		}
		patch, err := jsonpatch.DecodePatch([]byte("[" + strings.Join(s, ",") + "]"))
		if err != nil {
			t.Fatalf("patch does not decode: %v", err)
		}
		return patch.Apply(obj)
	}
	vsc := func(h string) []byte {
		b, _ := json.Marshal(map[string]any{"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
			"metadata": map[string]any{"name": "velero-x-1a2b"},
			"spec":     map[string]any{"driver": "rook-ceph.rbd.csi.ceph.com", "source": map[string]any{"snapshotHandle": h}}})
		return b
	}
	var tests []jsonPatchT
	for _, m := range r.Conditions.Matches {
		tests = append(tests, jsonPatchT{Operation: "test", Path: m.Path, Value: m.Value})
	}
	if _, err := apply(vsc(old2), tests); err == nil {
		t.Error("the rule matches a VolumeSnapshotContent with another handle")
	}
	if _, err := apply(vsc(old1), tests); err != nil {
		t.Fatalf("the rule does not match the restored VolumeSnapshotContent: %v", err)
	}
	out, err := apply(vsc(old1), r.Patches)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Spec struct {
			Source struct {
				SnapshotHandle string `json:"snapshotHandle"`
			} `json:"source"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(out, &got); err != nil || got.Spec.Source.SnapshotHandle != new1 {
		t.Errorf("patched handle %q, want %s (%v)", got.Spec.Source.SnapshotHandle, new1, err)
	}
}

func TestVeleroRestoreCommand(t *testing.T) {
	if got := VeleroRestoreCommand("nightly", "velero", ""); got != "velero restore create --from-backup nightly --wait" {
		t.Error(got)
	}
	got := VeleroRestoreCommand("nightly", "backup-system", ModifierConfigMapName("nightly"))
	if got != "velero restore create --from-backup nightly --namespace backup-system --resource-modifier-configmap lifeboat-rehydrate-nightly --wait" {
		t.Error(got)
	}
	if n := ModifierConfigMapName(strings.Repeat("b", 260)); len(n) > 253 {
		t.Errorf("name of %d characters", len(n))
	}
}
