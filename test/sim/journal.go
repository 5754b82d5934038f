package sim

import (
	"errors"
	"fmt"

	"github.com/ceph/go-ceph/rados"
	"github.com/google/uuid"
)

// ceph-csi journal (internal/journal/voljournal.go): a directory object per
// kind and instance maps "<prefix><request name>" to a UUID; the object
// "<prefix><uuid>" holds the attributes of that reservation.
type journal struct {
	dirPrefix string // + instance ID = directory object
	prefix    string // key prefix in the directory and per-UUID object prefix
	nameKey   string // request name attribute
}

var (
	volumeJournal   = journal{dirPrefix: "csi.volumes.", prefix: "csi.volume.", nameKey: "csi.volname"}
	snapshotJournal = journal{dirPrefix: "csi.snaps.", prefix: "csi.snap.", nameKey: "csi.snapname"}
)

// Journal attribute keys.
const (
	JournalImageName = "csi.imagename"
	JournalImageID   = "csi.imageid"
	JournalSource    = "csi.source"       // snapshots: parent image name
	JournalOwner     = "csi.volume.owner" // volumes: PVC namespace
	JournalVolName   = "csi.volname"
	JournalSnapName  = "csi.snapname"
)

// VolumeDirectory and SnapshotDirectory name the journal directory objects.
func (s *Sim) VolumeDirectory() string   { return volumeJournal.dirPrefix + s.opts.InstanceID }
func (s *Sim) SnapshotDirectory() string { return snapshotJournal.dirPrefix + s.opts.InstanceID }

func (s *Sim) dir(j journal) string { return j.dirPrefix + s.opts.InstanceID }

// reserve does what ceph-csi's ReserveName does: create the per-UUID object
// exclusively, map the request name to the UUID in the directory, then set
// the UUID object's attributes. It returns the UUID.
func (s *Sim) reserve(j journal, requestName, namePrefix, source, owner string) (string, error) {
	dirObj := s.dir(j)
	existing, err := s.ioctx.GetOmapValues(dirObj, "", j.prefix+requestName, 1)
	if err != nil && !errors.Is(err, rados.ErrNotFound) {
		return "", fmt.Errorf("journal %s: %w", dirObj, err)
	}
	if v, ok := existing[j.prefix+requestName]; ok {
		return "", fmt.Errorf("journal %s: request %s already reserved as %s", dirObj, requestName, v)
	}
	var id string
	for try := 0; ; try++ {
		id = uuid.NewString()
		op := rados.CreateWriteOp()
		op.Create(rados.CreateExclusive)
		err = op.Operate(s.ioctx, j.prefix+id, rados.OperationNoFlag)
		op.Release()
		if err == nil {
			break
		}
		if !errors.Is(err, rados.ErrObjectExists) || try > 5 {
			return "", fmt.Errorf("journal: create %s%s: %w", j.prefix, id, err)
		}
	}
	if err := s.setOmap(dirObj, map[string]string{j.prefix + requestName: id}); err != nil {
		_ = s.ioctx.Delete(j.prefix + id)
		return "", err
	}
	attrs := map[string]string{
		j.nameKey:        requestName,
		JournalImageName: namePrefix + id,
	}
	if source != "" {
		attrs[JournalSource] = source
	}
	if owner != "" {
		attrs[JournalOwner] = owner
	}
	if err := s.setOmap(j.prefix+id, attrs); err != nil {
		s.undoReservation(j, id, requestName)
		return "", err
	}
	return id, nil
}

func (s *Sim) setOmap(oid string, kv map[string]string) error {
	pairs := make(map[string][]byte, len(kv))
	for k, v := range kv {
		pairs[k] = []byte(v)
	}
	op := rados.CreateWriteOp()
	defer op.Release()
	op.Create(rados.CreateIdempotent)
	op.SetOmap(pairs)
	if err := op.Operate(s.ioctx, oid, rados.OperationNoFlag); err != nil {
		return fmt.Errorf("journal: set omap on %s: %w", oid, err)
	}
	return nil
}

// undoReservation removes the directory entry and the per-UUID object, like
// ceph-csi's UndoReservation. Missing pieces are not errors.
func (s *Sim) undoReservation(j journal, id, requestName string) error {
	var errs []error
	if requestName != "" {
		if err := s.ioctx.RmOmapKeys(s.dir(j), []string{j.prefix + requestName}); err != nil && !errors.Is(err, rados.ErrNotFound) {
			errs = append(errs, fmt.Errorf("journal: rm %s%s from %s: %w", j.prefix, requestName, s.dir(j), err))
		}
	}
	if err := s.ioctx.Delete(j.prefix + id); err != nil && !errors.Is(err, rados.ErrNotFound) {
		errs = append(errs, fmt.Errorf("journal: delete %s%s: %w", j.prefix, id, err))
	}
	return errors.Join(errs...)
}

// readJournal returns the attributes of a reservation.
func (s *Sim) readJournal(j journal, id string) (map[string]string, error) {
	m, err := s.ioctx.GetAllOmapValues(j.prefix+id, "", "", 100)
	if err != nil {
		return nil, fmt.Errorf("journal: read %s%s: %w", j.prefix, id, err)
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out, nil
}

// VolumeJournal returns the omap of csi.volume.<uuid>.
func (s *Sim) VolumeJournal(uuid string) (map[string]string, error) {
	return s.readJournal(volumeJournal, uuid)
}

// SnapshotJournal returns the omap of csi.snap.<uuid>.
func (s *Sim) SnapshotJournal(uuid string) (map[string]string, error) {
	return s.readJournal(snapshotJournal, uuid)
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
