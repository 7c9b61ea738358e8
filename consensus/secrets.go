package consensus

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// A Sealer encrypts secret fields at rest (see Kind.Secrets). aad binds a
// ciphertext to the field it was made for, so a sealed value copied into
// another object or field does not open.
type Sealer interface {
	Seal(plaintext, aad []byte) ([]byte, error)
	Open(sealed, aad []byte) ([]byte, error)
}

// sealedMagic starts every sealed value (before base64), so a sealed value
// is told from a plaintext one. Base64 keeps it valid for []byte fields.
var sealedMagic = []byte("\x00outpost-sealed\x01")

// sealSecrets replaces the plaintext secret fields of obj's spec with
// sealed values. A field left out (or null) keeps cur's sealed value; a
// field equal to cur's plaintext keeps cur's ciphertext, so resending an
// object does not change it.
func (s *Store) sealSecrets(k *Kind, obj, cur *Object) error {
	if len(k.Secrets) == 0 || (len(obj.Spec) == 0 && cur == nil) {
		return nil
	}
	spec, err := specMap(obj.Spec)
	if err != nil {
		return err
	}
	var old map[string]any
	if cur != nil {
		if old, err = specMap(cur.Spec); err != nil {
			return err
		}
	}
	for _, path := range k.Secrets {
		aad := secretAAD(k, obj, path)
		v, ok := lookup(spec, path)
		prev, hadPrev := lookup(old, path)
		if !ok || v == nil {
			if hadPrev && prev != nil {
				if err := store(spec, path, prev); err != nil {
					return err
				}
			}
			continue
		}
		str, isStr := v.(string)
		if !isStr {
			return apierrors.NewBadRequest(fmt.Sprintf("field spec.%s: must be a string", path))
		}
		if str == "" || isSealed(str) {
			continue // cleared, or already sealed (kept as is)
		}
		if s.g.cfg.Sealer == nil {
			return apierrors.NewInternalError(fmt.Errorf("spec.%s is a secret and this store has no key to seal it: secrets are kept in the hub's group only", path))
		}
		if p, ok := prev.(string); hadPrev && ok && isSealed(p) {
			if plain, err := s.openValue(p, aad); err == nil && plain == str {
				if err := store(spec, path, p); err != nil {
					return err
				}
				continue
			}
		}
		sealed, err := s.g.cfg.Sealer.Seal([]byte(str), aad)
		if err != nil {
			return apierrors.NewInternalError(fmt.Errorf("seal spec.%s: %w", path, err))
		}
		if err := store(spec, path, base64.StdEncoding.EncodeToString(append(append([]byte(nil), sealedMagic...), sealed...))); err != nil {
			return err
		}
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	obj.Spec = b
	return nil
}

// Unseal returns a copy of obj whose secret fields hold their plaintext
// again, for the controller that uses them. It never goes back to Raft.
func (s *Store) Unseal(k *Kind, obj *Object) (*Object, error) {
	out := obj.DeepCopy()
	if len(k.Secrets) == 0 || len(obj.Spec) == 0 {
		return out, nil
	}
	spec, err := specMap(obj.Spec)
	if err != nil {
		return nil, err
	}
	for _, path := range k.Secrets {
		v, _ := lookup(spec, path)
		str, ok := v.(string)
		if !ok || !isSealed(str) {
			continue
		}
		plain, err := s.openValue(str, secretAAD(k, obj, path))
		if err != nil {
			return nil, fmt.Errorf("%s %s: open spec.%s: %w", k.Kind, obj.Name, path, err)
		}
		if err := store(spec, path, plain); err != nil {
			return nil, err
		}
	}
	if out.Spec, err = json.Marshal(spec); err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Store) openValue(v string, aad []byte) (string, error) {
	if s.g.cfg.Sealer == nil {
		return "", fmt.Errorf("this store has no key to open secrets")
	}
	raw, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return "", err
	}
	plain, err := s.g.cfg.Sealer.Open(raw[len(sealedMagic):], aad)
	return string(plain), err
}

// Redact returns obj without its secret fields: what the API shows.
func (k *Kind) Redact(obj *Object) *Object {
	if len(k.Secrets) == 0 || len(obj.Spec) == 0 {
		return obj
	}
	spec, err := specMap(obj.Spec)
	if err != nil {
		out := obj.DeepCopy()
		out.Spec = nil
		return out
	}
	removed := false
	for _, path := range k.Secrets {
		if _, ok := lookup(spec, path); ok {
			remove(spec, path)
			removed = true
		}
	}
	if !removed {
		return obj
	}
	out := obj.DeepCopy()
	out.Spec, _ = json.Marshal(spec)
	return out
}

func isSealed(v string) bool {
	n := base64.StdEncoding.EncodedLen(len(sealedMagic)) // magic's encoding, padding aside
	if len(v) < n {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(v)
	return err == nil && bytes.HasPrefix(raw, sealedMagic)
}

func secretAAD(k *Kind, obj *Object, path string) []byte {
	return []byte(k.Group + "/" + k.Kind + "/" + obj.Namespace + "/" + obj.Name + "#" + path)
}

func specMap(spec json.RawMessage) (map[string]any, error) {
	m := map[string]any{}
	if len(spec) == 0 || bytes.Equal(bytes.TrimSpace(spec), []byte("null")) {
		return m, nil
	}
	d := json.NewDecoder(bytes.NewReader(spec))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("field spec: %v", err))
	}
	return m, nil
}

func lookup(m map[string]any, path string) (any, bool) {
	parts := strings.Split(path, ".")
	var cur any = m
	for _, p := range parts {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// store sets path in m, creating the objects on the way.
func store(m map[string]any, path string, v any) error {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p]
		if !ok || next == nil {
			next = map[string]any{}
			m[p] = next
		}
		if m, ok = next.(map[string]any); !ok {
			return apierrors.NewBadRequest(fmt.Sprintf("field spec.%s: must be an object", p))
		}
	}
	m[parts[len(parts)-1]] = v
	return nil
}

func remove(m map[string]any, path string) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			return
		}
		m = next
	}
	delete(m, parts[len(parts)-1])
}
