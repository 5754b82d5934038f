package objectstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"

	"golang.org/x/crypto/scrypt"
)

// Encryption keys. The user's key (arbitrary bytes from a file or a
// Kubernetes Secret) never touches data: scrypt turns it into a
// key-encryption key that unwraps a random master key stored in the
// config. The indirection means a weak user key costs an attacker scrypt
// work per guess, and a future key change only rewraps 64 bytes.

const (
	masterKeySize = 64 // AES-256 data key, then HMAC-SHA-256 id key
	nonceSize     = 12 // AES-GCM standard nonce
	saltSize      = 32

	// scrypt cost: about 32 MiB and 0.1 s, paid once per Open.
	scryptN = 1 << 15
	scryptR = 8
	scryptP = 1
)

// KeyConfig is the wrapped master key as stored in the repository config.
type KeyConfig struct {
	KDF     string `json:"kdf"` // "scrypt"
	N       int    `json:"n"`
	R       int    `json:"r"`
	P       int    `json:"p"`
	Salt    []byte `json:"salt"`    // base64 in JSON
	Wrapped []byte `json:"wrapped"` // nonce ‖ AES-256-GCM(master key) ‖ tag
}

// keys are the unwrapped master key, ready for use.
type keys struct {
	master []byte      // kept to rewrap it under a new user key
	aead   cipher.AEAD // encrypts chunks and manifests
	idKey  []byte      // keys the HMAC that names chunks
}

func newKeys(master []byte) (*keys, error) {
	aead, err := newGCM(master[:32])
	if err != nil {
		return nil, err
	}
	return &keys{master: master, aead: aead, idKey: master[32:]}, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// wrapAAD binds a wrapped key to its repository, so a config copied from
// another repository cannot be passed off as this one's.
func wrapAAD(repoID string) []byte { return []byte("lifeboat key for repository " + repoID) }

// newMasterKey makes a random master key and wraps it with userKey.
func newMasterKey(userKey []byte, repoID string) (*KeyConfig, *keys, error) {
	master := make([]byte, masterKeySize)
	rand.Read(master)
	kc, err := wrap(master, userKey, repoID)
	if err != nil {
		return nil, nil, err
	}
	k, err := newKeys(master)
	return kc, k, err
}

// wrap encrypts master under a key derived from userKey with a fresh salt.
func wrap(master, userKey []byte, repoID string) (*KeyConfig, error) {
	salt := make([]byte, saltSize)
	rand.Read(salt)
	kc := &KeyConfig{KDF: "scrypt", N: scryptN, R: scryptR, P: scryptP, Salt: salt}
	kek, err := kc.kek(userKey)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, nonceSize)
	rand.Read(nonce)
	kc.Wrapped = kek.Seal(nonce, nonce, master, wrapAAD(repoID))
	return kc, nil
}

// unwrap recovers the master key; a failed GCM authentication means the
// user key is wrong (or the config was altered), which is the key check.
func (kc *KeyConfig) unwrap(userKey []byte, repoID string) (*keys, error) {
	kek, err := kc.kek(userKey)
	if err != nil {
		return nil, err
	}
	if len(kc.Wrapped) < nonceSize {
		return nil, fmt.Errorf("%w: wrapped key too short", ErrCorrupt)
	}
	master, err := kek.Open(nil, kc.Wrapped[:nonceSize], kc.Wrapped[nonceSize:], wrapAAD(repoID))
	if err != nil || len(master) != masterKeySize {
		return nil, ErrWrongKey
	}
	return newKeys(master)
}

func (kc *KeyConfig) kek(userKey []byte) (cipher.AEAD, error) {
	if kc.KDF != "scrypt" {
		return nil, fmt.Errorf("%w: unknown key derivation %q", ErrIncompatible, kc.KDF)
	}
	kek, err := scrypt.Key(userKey, kc.Salt, kc.N, kc.R, kc.P, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: scrypt parameters: %v", ErrIncompatible, err)
	}
	return newGCM(kek)
}

// id names a chunk: SHA-256 of the plaintext, or HMAC-SHA-256 under the id
// key when encrypted so that ids do not confirm guesses of the content.
func (k *keys) id(data []byte) ChunkID {
	if k == nil {
		return sha256.Sum256(data)
	}
	mac := hmac.New(sha256.New, k.idKey)
	mac.Write(data)
	return ChunkID(mac.Sum(nil))
}
