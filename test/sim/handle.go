package sim

import (
	"fmt"
	"strconv"
)

// HandleVersion is the only ceph-csi volume/snapshot ID encoding version in use.
const HandleVersion = 1

// Handle is a decoded ceph-csi volume or snapshot handle (CSI volume_id /
// snapshot_id). Both have the same shape:
//
//	VVVV-LLLL-<clusterID>-PPPPPPPPPPPPPPPP-<uuid>
//
// VVVV is the encoding version (4 hex digits), LLLL the length of clusterID
// (4 hex digits), P… the pool ID as 16 hex digits and uuid the 36-character
// object UUID (ceph-csi internal/util/volid.go).
type Handle struct {
	Version   uint16
	ClusterID string
	PoolID    int64
	UUID      string
}

// maxHandleLen is the CSI limit on IDs that ceph-csi enforces.
const maxHandleLen = 128

// EncodeHandle builds a version-1 ceph-csi handle.
func EncodeHandle(clusterID string, poolID int64, uuid string) (string, error) {
	return Handle{Version: HandleVersion, ClusterID: clusterID, PoolID: poolID, UUID: uuid}.Encode()
}

// Encode returns the string form of h.
func (h Handle) Encode() (string, error) {
	if h.Version == 0 {
		h.Version = HandleVersion
	}
	if len(h.UUID) != 36 {
		return "", fmt.Errorf("handle: uuid %q is not 36 characters", h.UUID)
	}
	if len(h.ClusterID) == 0 || len(h.ClusterID) > 0xffff {
		return "", fmt.Errorf("handle: bad clusterID length %d", len(h.ClusterID))
	}
	if h.PoolID < 0 {
		return "", fmt.Errorf("handle: negative pool id %d", h.PoolID)
	}
	s := fmt.Sprintf("%04x-%04x-%s-%016x-%s", h.Version, len(h.ClusterID), h.ClusterID, h.PoolID, h.UUID)
	if len(s) > maxHandleLen {
		return "", fmt.Errorf("handle: %d characters, more than %d", len(s), maxHandleLen)
	}
	return s, nil
}

// String is Encode without the error (for logging).
func (h Handle) String() string {
	s, err := h.Encode()
	if err != nil {
		return "invalid(" + err.Error() + ")"
	}
	return s
}

// ParseHandle decodes a ceph-csi handle. The clusterID may contain dashes:
// its length comes from the LLLL field.
func ParseHandle(s string) (Handle, error) {
	var h Handle
	if len(s) > maxHandleLen {
		return h, fmt.Errorf("handle %q: longer than %d", s, maxHandleLen)
	}
	// 4 + 1 + 4 + 1 + clusterID + 1 + 16 + 1 + 36
	if len(s) < 4+1+4+1+1+1+16+1+36 {
		return h, fmt.Errorf("handle %q: too short", s)
	}
	v, err := strconv.ParseUint(s[0:4], 16, 16)
	if err != nil || s[4] != '-' {
		return h, fmt.Errorf("handle %q: bad version field", s)
	}
	if v != HandleVersion {
		return h, fmt.Errorf("handle %q: unsupported version %d", s, v)
	}
	l, err := strconv.ParseUint(s[5:9], 16, 16)
	if err != nil || s[9] != '-' {
		return h, fmt.Errorf("handle %q: bad clusterID length field", s)
	}
	rest := s[10:]
	if uint64(len(rest)) != l+1+16+1+36 || l == 0 {
		return h, fmt.Errorf("handle %q: length %d does not match clusterID length %d", s, len(s), l)
	}
	h.Version = uint16(v)
	h.ClusterID = rest[:l]
	rest = rest[l:]
	if rest[0] != '-' || rest[17] != '-' {
		return h, fmt.Errorf("handle %q: bad separators", s)
	}
	pool, err := strconv.ParseUint(rest[1:17], 16, 64)
	if err != nil || pool > 1<<63-1 {
		return h, fmt.Errorf("handle %q: bad pool id field", s)
	}
	h.PoolID = int64(pool)
	h.UUID = rest[18:]
	if !isUUID(h.UUID) {
		return h, fmt.Errorf("handle %q: bad uuid %q", s, h.UUID)
	}
	return h, nil
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
