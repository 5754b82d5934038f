package objectstore

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns for one of these
// conditions wraps the matching sentinel, so callers can branch with
// errors.Is and still print a message that says what to do.
var (
	// ErrNotFound: the backend has no object of that name.
	ErrNotFound = errors.New("object not found")
	// ErrExists: Create found an object of that name.
	ErrExists = errors.New("object already exists")

	// ErrNoRepository: Open found no repository config.
	ErrNoRepository = errors.New("no lifeboat repository")
	// ErrRepositoryExists: Init found a repository (or its leftovers).
	ErrRepositoryExists = errors.New("a lifeboat repository already exists")
	// ErrIncompatible: the repository was written by a newer or different
	// format than this build understands.
	ErrIncompatible = errors.New("incompatible repository")
	// ErrKeyRequired: the repository is encrypted and no key was given.
	ErrKeyRequired = errors.New("repository is encrypted: a key is required")
	// ErrNotEncrypted: a key was given but the repository is not encrypted.
	ErrNotEncrypted = errors.New("repository is not encrypted but a key was given")
	// ErrWrongKey: the key does not unwrap the repository master key.
	ErrWrongKey = errors.New("wrong repository key")

	// ErrLocked: a lock of another process conflicts (a prune is
	// running, or for a prune, anything else is).
	ErrLocked = errors.New("repository is locked")
	// ErrLockLost: this process's lock was removed as stale while it ran.
	ErrLockLost = errors.New("repository lock lost")

	// ErrBackupNotFound: no manifest with that backup id.
	ErrBackupNotFound = errors.New("backup not found")
	// ErrCorrupt: a stored object failed authentication, decoding or its
	// content-address check.
	ErrCorrupt = errors.New("corrupt object")
	// ErrChecksumMismatch: the restored stream does not hash to the
	// manifest's SHA-256.
	ErrChecksumMismatch = errors.New("image checksum mismatch")

	// ErrCredentials: S3 refused the access key, the signature or access.
	ErrCredentials = errors.New("S3 rejected the credentials")
	// ErrUnreachable: the S3 endpoint could not be reached in time.
	ErrUnreachable = errors.New("S3 endpoint unreachable")
	// ErrUnavailable: S3 answered that it cannot serve now (5xx, 429,
	// SlowDown): retried like ErrUnreachable.
	ErrUnavailable = errors.New("S3 service unavailable")
	// ErrNoBucket: the bucket does not exist.
	ErrNoBucket = errors.New("S3 bucket does not exist")
)

// ChunkError reports a chunk that could not be read back, with the image
// offset it belongs to, so an operator knows what is damaged and where.
// It wraps ErrNotFound for a missing chunk and ErrCorrupt for a damaged one.
type ChunkError struct {
	ID     ChunkID
	Offset int64
	Err    error
}

func (e *ChunkError) Error() string {
	return fmt.Sprintf("chunk %s at image offset %d: %v", e.ID, e.Offset, e.Err)
}

func (e *ChunkError) Unwrap() error { return e.Err }
