// Package handle encodes and decodes ceph-csi volume and snapshot handles.
//
// A handle (ceph-csi's "CSIIdentifier", internal/util/volid.go) is
//
//	VVVV-LLLL-<clusterID>-PPPPPPPPPPPPPPPP-<uuid>
//
// VVVV is the encoding version (4 hex digits, only 0001 exists), LLLL the
// length of clusterID (4 hex digits; clusterID may itself contain dashes, so
// the length is what delimits it), P the pool ID as 16 hex digits and uuid
// the 36-character object UUID that names the journal entry and, by default,
// the image (csi-vol-<uuid> or csi-snap-<uuid>). The whole handle is at most
// 128 characters, the CSI limit on identifiers.
//
// The package is pure Go so that it can be fuzzed and used without Ceph.
package handle

import (
	"errors"
	"fmt"
	"strconv"
)

// Version is the only handle encoding ceph-csi has produced so far.
const Version = 1

// MaxLen is the CSI limit on the length of a volume or snapshot ID.
const MaxLen = 128

const uuidLen = 36

// ErrMalformed is wrapped by every decoding error, so callers can tell a bad
// handle from a failure to reach Ceph.
var ErrMalformed = errors.New("malformed ceph-csi handle")

// ID is a decoded ceph-csi handle.
type ID struct {
	Version   int
	ClusterID string
	PoolID    int64
	UUID      string
}

// String encodes the ID the way ceph-csi does.
func (id ID) String() string {
	return fmt.Sprintf("%04x-%04x-%s-%016x-%s", id.Version, len(id.ClusterID), id.ClusterID, uint64(id.PoolID), id.UUID)
}

// Decode parses a ceph-csi handle. Every error wraps ErrMalformed and says
// which part of the handle is wrong.
func Decode(h string) (ID, error) {
	var id ID
	if len(h) > MaxLen {
		return id, malformed(h, "is %d characters long; ceph-csi handles are at most %d", len(h), MaxLen)
	}
	// Fixed part: "VVVV-LLLL-" + clusterID + "-" + 16 hex + "-" + uuid.
	const fixed = 4 + 1 + 4 + 1 + 1 + 16 + 1 + uuidLen
	if len(h) < fixed {
		return id, malformed(h, "is %d characters long; a handle has at least %d", len(h), fixed)
	}
	v, err := hexField(h[0:4], 16)
	if err != nil || h[4] != '-' {
		return id, malformed(h, "does not start with a 4-hex-digit version and '-'")
	}
	if v != Version {
		return id, malformed(h, "has encoding version %04x; only %04x is known", v, Version)
	}
	n, err := hexField(h[5:9], 16)
	if err != nil || h[9] != '-' {
		return id, malformed(h, "has no 4-hex-digit clusterID length after the version")
	}
	rest := h[10:]
	if want := int(n) + 1 + 16 + 1 + uuidLen; len(rest) != want {
		return id, malformed(h, "declares a %d-character clusterID, which does not fit the handle's length", n)
	}
	id.Version = int(v)
	id.ClusterID = rest[:n]
	if n == 0 {
		return id, malformed(h, "has an empty clusterID")
	}
	rest = rest[n:]
	if rest[0] != '-' || rest[17] != '-' {
		return id, malformed(h, "has no '-' around the 16-hex-digit pool ID")
	}
	pool, err := hexField(rest[1:17], 64)
	if err != nil {
		return id, malformed(h, "has a pool ID %q that is not 16 hex digits", rest[1:17])
	}
	if int64(pool) < 0 {
		return id, malformed(h, "has pool ID %q out of range", rest[1:17])
	}
	id.PoolID = int64(pool)
	id.UUID = rest[18:]
	if !validUUID(id.UUID) {
		return id, malformed(h, "ends in %q, which is not a UUID (8-4-4-4-12 hex digits)", id.UUID)
	}
	return id, nil
}

func malformed(h, format string, args ...any) error {
	return fmt.Errorf("%w: %q %s", ErrMalformed, h, fmt.Sprintf(format, args...))
}

// hexField parses a fixed-width hex field; unlike strconv alone it refuses a
// sign or a "0x" prefix, which would let a shorter field pass.
func hexField(s string, bits int) (uint64, error) {
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return 0, strconv.ErrSyntax
		}
	}
	return strconv.ParseUint(s, 16, bits)
}

func validUUID(s string) bool {
	if len(s) != uuidLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isHex(s[i]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
