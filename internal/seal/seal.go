// Package seal encrypts secrets at rest: registry passwords, kubeconfigs
// and other write-only fields of the hub's state (consensus.Sealer).
//
// A Box holds AES-256-GCM keys named by an 8-byte id (the start of the
// key's SHA-256); a sealed value is id || nonce || ciphertext, so a value
// sealed under an older key still opens while the Box holds that key.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

const idLen = 8

// A Box seals with its first key and opens with any of its keys. It is
// safe for concurrent use.
type Box struct {
	keys []key
}

type key struct {
	id   [idLen]byte
	aead cipher.AEAD
}

// New returns a Box over 32-byte keys, the first one sealing.
func New(keys ...[]byte) (*Box, error) {
	if len(keys) == 0 {
		return nil, errors.New("seal: no key")
	}
	b := &Box{}
	for i, k := range keys {
		if len(k) != 32 {
			return nil, fmt.Errorf("seal: key %d is %d bytes, want 32", i, len(k))
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		var kk key
		sum := sha256.Sum256(k)
		copy(kk.id[:], sum[:idLen])
		kk.aead = aead
		b.keys = append(b.keys, kk)
	}
	return b, nil
}

// Derive returns a 32-byte key derived from secret material (the mesh CA's
// private key) for one purpose, so every holder of the material derives
// the same key and nothing else has to be handed out.
func Derive(material []byte, purpose string) ([]byte, error) {
	return hkdf.Key(sha256.New, material, nil, purpose, 32)
}

// Seal encrypts plaintext, binding it to aad.
func (b *Box) Seal(plaintext, aad []byte) ([]byte, error) {
	k := b.keys[0]
	out := make([]byte, idLen+k.aead.NonceSize(), idLen+k.aead.NonceSize()+len(plaintext)+k.aead.Overhead())
	copy(out, k.id[:])
	if _, err := rand.Read(out[idLen:]); err != nil {
		return nil, err
	}
	return k.aead.Seal(out, out[idLen:], plaintext, aad), nil
}

// Open decrypts a value made by Seal with the same aad.
func (b *Box) Open(sealed, aad []byte) ([]byte, error) {
	if len(sealed) < idLen {
		return nil, errors.New("seal: value too short")
	}
	for _, k := range b.keys {
		if string(k.id[:]) != string(sealed[:idLen]) {
			continue
		}
		ns := k.aead.NonceSize()
		if len(sealed) < idLen+ns {
			return nil, errors.New("seal: value too short")
		}
		plain, err := k.aead.Open(nil, sealed[idLen:idLen+ns], sealed[idLen+ns:], aad)
		if err != nil {
			return nil, errors.New("seal: value does not open: corrupted, or sealed for another field")
		}
		return plain, nil
	}
	return nil, fmt.Errorf("seal: value was sealed with key %x, which this hub does not hold", sealed[:idLen])
}
