package backup

import (
	"fmt"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/lifeboat-backup/lifeboat/objectstore"
	"github.com/lifeboat-backup/lifeboat/rbd"
	"github.com/lifeboat-backup/lifeboat/rbd/handle"
)

// Rehydration recreates, in a new Ceph cluster, each CSI snapshot of a
// Velero backup the way ceph-csi left it, from the repository alone, so
// that stock Velero restores the PVCs from it. This file is the pure part:
// which backup, where, under which handle; rehydrate.go does it.

// States of a volume in a rehydration.
const (
	StatePlanned    = "Planned"    // --dry-run
	StateRehydrated = "Rehydrated" // written now
	StateVerified   = "Verified"   // already there from an earlier run, content checked
	StateMissing    = "Missing"    // in the Velero backup, no lifeboat backup of it
	StateForeign    = "Foreign"    // an image of the name exists that lifeboat did not write
	StateFailed     = "Failed"
)

// VeleroVolume is one volume Velero's backup holds a CSI snapshot of (from
// its BackupVolumeInfos).
type VeleroVolume struct {
	PVC    string // namespace/name
	Handle string // the VolumeSnapshotContent's status.snapshotHandle
}

// VolumePlan is what rehydration does (or did) for one CSI snapshot.
type VolumePlan struct {
	PVC            string `json:"pvc"`
	VolumeSnapshot string `json:"volumeSnapshot,omitempty"`
	BackupID       string `json:"backupID,omitempty"`
	OldHandle      string `json:"oldHandle"`
	// NewHandle is the handle the restored VolumeSnapshotContent must carry:
	// OldHandle when it resolves as it is in the new cluster.
	NewHandle string `json:"newHandle,omitempty"`
	ClusterID string `json:"clusterID,omitempty"`
	Pool      string `json:"pool,omitempty"`
	PoolID    int64  `json:"poolID,omitempty"`
	Namespace string `json:"namespace"`
	Image     string `json:"image,omitempty"`
	Snapshot  string `json:"snapshot,omitempty"`
	Bytes     int64  `json:"bytes"`
	State     string `json:"state"`
	Reason    string `json:"reason,omitempty"`
	// Lacks says what an older backup did not record, and what was
	// written instead.
	Lacks []string `json:"lacks,omitempty"`

	Journal rbd.SnapJournal `json:"-"`
}

// Rewritten tells whether Velero must rewrite the handle.
func (v *VolumePlan) Rewritten() bool {
	return v.NewHandle != "" && v.NewHandle != v.OldHandle
}

// Target describes the new cluster for planning.
type TargetCluster struct {
	// Pools maps the new cluster's pool names to their ids.
	Pools map[string]int64
	// ClusterIDs maps an old clusterID to the new one (--cluster-id-map).
	ClusterIDs map[string]string
	// Namespace returns the RADOS namespace ceph-csi's config sets for a
	// clusterID, ok false when unknown (then the backup's is kept).
	Namespace func(clusterID string) (string, bool)
}

// PlanRehydration picks, for each snapshot handle of Velero backup
// velero, the newest backup of it in the repository and where it goes in
// the new cluster. Volumes Velero lists (when known) that the repository
// lacks come out as StateMissing.
func PlanRehydration(velero string, all []objectstore.Summary, volumes []VeleroVolume, t TargetCluster) []*VolumePlan {
	latest := map[string]objectstore.Summary{}
	for _, s := range all {
		h := s.Source[KeyHandle]
		if s.Source[KeyVeleroBackup] != velero || h == "" {
			continue
		}
		if cur, ok := latest[h]; !ok || s.Created.After(cur.Created) || (s.Created.Equal(cur.Created) && s.ID > cur.ID) {
			latest[h] = s
		}
	}
	var out []*VolumePlan
	for _, s := range latest {
		out = append(out, planVolume(s, t))
	}
	for _, v := range volumes {
		if _, ok := latest[v.Handle]; !ok {
			out = append(out, &VolumePlan{PVC: v.PVC, OldHandle: v.Handle, State: StateMissing,
				Reason: fmt.Sprintf("no lifeboat backup of this snapshot in the repository (never exported, or forgotten): "+
					"its data is lost with the old cluster; `lifeboat backups list --velero-backup %s` lists what there is", velero)})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].PVC != out[j].PVC {
			return out[i].PVC < out[j].PVC
		}
		return out[i].OldHandle < out[j].OldHandle
	})
	return out
}

func planVolume(s objectstore.Summary, t TargetCluster) *VolumePlan {
	src := s.Source
	v := &VolumePlan{PVC: src[KeyPVC], VolumeSnapshot: src[KeyVolumeSnapshot], BackupID: s.ID, OldHandle: src[KeyHandle],
		Pool: src[KeyPool], Namespace: src[KeyNamespace], Image: src[KeyImage], Snapshot: src[KeySnapshot],
		Bytes: s.Size, State: StatePlanned}
	id, err := handle.Decode(v.OldHandle)
	if err != nil {
		v.State, v.Reason = StateFailed, err.Error()
		return v
	}
	v.ClusterID = id.ClusterID
	if n, ok := t.ClusterIDs[id.ClusterID]; ok {
		v.ClusterID = n
	}
	if t.Namespace != nil {
		if ns, ok := t.Namespace(v.ClusterID); ok {
			v.Namespace = ns
		}
	}
	if v.Snapshot == "" {
		v.Snapshot = v.Image
	}
	poolID, ok := t.Pools[v.Pool]
	if !ok {
		v.State = StateFailed
		v.Reason = fmt.Sprintf("the new cluster has no pool %q (the snapshot's pool): create it (a Rook CephBlockPool named %s) and run again", v.Pool, v.Pool)
		return v
	}
	v.PoolID = poolID
	v.NewHandle, err = composeHandle(id, v.ClusterID, poolID)
	if err != nil {
		v.State, v.Reason = StateFailed, err.Error()
		return v
	}
	v.Journal, v.Lacks = journalOf(s, id.UUID, v.Image)
	return v
}

// composeHandle is the handle of the same snapshot (same uuid) in pool
// poolID of clusterID: ceph-csi's encoding, the clusterID's length
// included.
func composeHandle(old handle.ID, clusterID string, poolID int64) (string, error) {
	h := handle.ID{Version: handle.Version, ClusterID: clusterID, PoolID: poolID, UUID: old.UUID}.String()
	if _, err := handle.Decode(h); err != nil {
		return "", fmt.Errorf("the new handle for clusterID %q: %w", clusterID, err)
	}
	return h, nil
}

// journalOf is the journal entry to write, from what the backup recorded.
// Backups made before the csi* keys were recorded rehydrate with what
// they have; lacks says what they lacked.
func journalOf(s objectstore.Summary, uuid, image string) (rbd.SnapJournal, []string) {
	src := s.Source
	j := rbd.SnapJournal{UUID: uuid, ImageName: image, RequestName: src[KeyRequestName], Source: src[KeyCSISource]}
	var lacks []string
	_, recorded := src[KeyJournal]
	if j.Source == "" {
		j.Source = sourceFromLineage(src, image)
		switch {
		case j.Source == "":
			// ceph-csi needs csi.source; it only uses it to count clone
			// depth, and a missing image counts as depth 0.
			j.Source = image
			lacks = append(lacks, "csi.source: the source volume's image name was never recorded; wrote the snapshot image's own name, which ceph-csi accepts")
		case !recorded:
			lacks = append(lacks, "csi.source: not recorded by this older export; taken from the backup's lineage ("+j.Source+")")
		}
	}
	if j.RequestName == "" && !recorded {
		lacks = append(lacks, "csi.snapname: the CSI request name was not recorded by this older export; left out (ceph-csi does not need it to restore)")
	}
	return j, lacks
}

// sourceFromLineage finds the source volume's image name in what every
// export recorded: the lineage (pool/ns/<csi.source>) or the clone's
// parent (pool/ns/<volume>@<trash snapshot>).
func sourceFromLineage(src map[string]string, image string) string {
	if l := src[KeyLineage]; l != "" {
		if name := l[strings.LastIndexByte(l, '/')+1:]; name != image {
			return name
		}
	}
	if p := src[KeyParent]; p != "" {
		p, _, _ = strings.Cut(p, "@")
		return p[strings.LastIndexByte(p, '/')+1:]
	}
	return ""
}

// GroupResourceVSC is how Velero's resource modifiers name
// VolumeSnapshotContents.
const GroupResourceVSC = "volumesnapshotcontents.snapshot.storage.k8s.io"

// ModifierDataKey is the ConfigMap's one key (Velero requires exactly one).
const ModifierDataKey = "lifeboat-rehydrate.yaml"

// Velero's resource modifier format (internal/resourcemodifiers, v1.12+;
// `matches` since v1.13), the fields lifeboat writes.
type modifiers struct {
	Version string         `json:"version"`
	Rules   []modifierRule `json:"resourceModifierRules"`
}

type modifierRule struct {
	Conditions struct {
		GroupResource string      `json:"groupResource"`
		Matches       []matchRule `json:"matches"`
	} `json:"conditions"`
	Patches []jsonPatch `json:"patches"`
}

type matchRule struct {
	Path  string `json:"path"`
	Value string `json:"value"`
}

type jsonPatch struct {
	Operation string `json:"operation"`
	Path      string `json:"path"`
	Value     string `json:"value"`
}

// ModifierRules is Velero's resource modifier document with one rule per
// rewritten handle: on the restored VolumeSnapshotContent whose
// spec.source.snapshotHandle is the old handle (its name is a hash, so the
// handle is what identifies it), replace it with the new one. Velero
// applies modifiers after its restore item actions, which set that field
// (v1.16+). nil when no handle changes.
func ModifierRules(vols []*VolumePlan) ([]byte, error) {
	m := modifiers{Version: "v1"}
	for _, v := range vols {
		if !v.Rewritten() || v.State == StateMissing || v.State == StateFailed || v.State == StateForeign {
			continue
		}
		var r modifierRule
		r.Conditions.GroupResource = GroupResourceVSC
		r.Conditions.Matches = []matchRule{{Path: "/spec/source/snapshotHandle", Value: v.OldHandle}}
		r.Patches = []jsonPatch{{Operation: "replace", Path: "/spec/source/snapshotHandle", Value: v.NewHandle}}
		m.Rules = append(m.Rules, r)
	}
	if len(m.Rules) == 0 {
		return nil, nil
	}
	return yaml.Marshal(m)
}

// ModifierConfigMapName is the ConfigMap lifeboat writes for a Velero
// backup (a DNS subdomain, as Velero backup names are).
func ModifierConfigMapName(velero string) string {
	n := "lifeboat-rehydrate-" + velero
	if len(n) > 253 {
		n = n[:253]
	}
	return strings.TrimRight(n, "-.")
}

// VeleroRestoreCommand is the command that finishes the recovery.
func VeleroRestoreCommand(velero, veleroNamespace, configMap string) string {
	cmd := "velero restore create --from-backup " + velero
	if veleroNamespace != "" && veleroNamespace != "velero" {
		cmd += " --namespace " + veleroNamespace
	}
	if configMap != "" {
		cmd += " --resource-modifier-configmap " + configMap
	}
	return cmd + " --wait"
}
