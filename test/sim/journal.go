package sim

import (
	"fmt"

	"github.com/lifeboat-backup/lifeboat/test/csidriver"
)

// The journal itself (ceph-csi's internal/journal/voljournal.go) is
// test/csidriver's: the simulator writes exactly what the driver writes.

// Journal attribute keys.
const (
	JournalImageName = csidriver.KeyImageName
	JournalImageID   = csidriver.KeyImageID
	JournalSource    = csidriver.KeySource // snapshots: parent image name
	JournalOwner     = csidriver.KeyOwner  // volumes: PVC namespace
	JournalVolName   = csidriver.KeyVolName
	JournalSnapName  = csidriver.KeySnapName
)

// VolumeDirectory and SnapshotDirectory name the journal directory objects.
func (s *Sim) VolumeDirectory() string {
	return csidriver.VolumeJournal.Dir + s.opts.InstanceID
}
func (s *Sim) SnapshotDirectory() string {
	return csidriver.SnapshotJournal.Dir + s.opts.InstanceID
}

// VolumeJournal returns the omap of csi.volume.<uuid>.
func (s *Sim) VolumeJournal(uuid string) (map[string]string, error) {
	return csidriver.VolumeJournal.Read(s.ioctx, uuid)
}

// SnapshotJournal returns the omap of csi.snap.<uuid>.
func (s *Sim) SnapshotJournal(uuid string) (map[string]string, error) {
	return csidriver.SnapshotJournal.Read(s.ioctx, uuid)
}

// JournalDirectory returns the whole omap of a directory object
// (VolumeDirectory() or SnapshotDirectory()).
func (s *Sim) JournalDirectory(dirObject string) (map[string]string, error) {
	m, err := s.ioctx.GetAllOmapValues(dirObject, "", "", 1000)
	if err != nil {
		return nil, fmt.Errorf("journal: read %s: %w", dirObject, err)
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out, nil
}

// reserve is the driver's reservation (csidriver.Journal.Reserve), refused
// when the request name is already reserved: the driver would answer such
// a request from the existing entry, the simulator never repeats one.
func (s *Sim) reserve(j csidriver.Journal, reqName, prefix, source, owner string) (string, error) {
	id, err := j.Lookup(s.ioctx, s.opts.InstanceID, reqName)
	if err != nil {
		return "", err
	}
	if id != "" {
		return "", fmt.Errorf("journal %s%s: request %s already reserved as %s", j.Dir, s.opts.InstanceID, reqName, id)
	}
	return j.Reserve(s.ioctx, s.opts.InstanceID, reqName, prefix, source, owner)
}
