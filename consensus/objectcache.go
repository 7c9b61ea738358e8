package consensus

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// objectCacheBytes bounds the encoded size of the objects a state store's
// cache holds; past it the cache starts empty again.
const objectCacheBytes = 64 << 20

// objectCache keeps decoded objects by store key and Badger version (the
// commit timestamp of the write, unique per key), so that reads of objects
// that did not change skip JSON decoding: controllers that list the same
// few thousand objects several times a second (a site leader during a
// task, the hub counting results) decode each version once; the FSM reads
// through it the object each write replaces. It serves committed values
// only, whose item version is that of their write: read-only transactions,
// and keys a write transaction has not written itself. Objects in it are
// shared and never modified; readers copy what they hand out.
type objectCache struct {
	mu    sync.RWMutex
	limit int
	bytes int
	m     map[string]cachedObject
}

type cachedObject struct {
	version uint64
	size    int
	obj     *Object
}

// decode returns the object item holds, decoded once per version.
func (c *objectCache) decode(item *badger.Item) (*Object, error) {
	if obj := c.get(item); obj != nil {
		return obj, nil
	}
	obj, size, err := decodeItem(item)
	if err != nil {
		return nil, err
	}
	k, v := item.Key(), item.Version()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || c.bytes+size > c.limit {
		c.m, c.bytes = map[string]cachedObject{}, 0
	}
	if old, ok := c.m[string(k)]; ok {
		if old.version > v {
			return obj, nil // a reader at an older snapshot: keep the newer
		}
		c.bytes -= old.size
	}
	c.m[string(k)] = cachedObject{version: v, size: size, obj: obj}
	c.bytes += size
	return obj, nil
}

// peek returns the object item holds from the cache, or decodes it
// without adding it.
func (c *objectCache) peek(item *badger.Item) (*Object, error) {
	if obj := c.get(item); obj != nil {
		return obj, nil
	}
	obj, _, err := decodeItem(item)
	return obj, err
}

// get returns the cached object of item's key and version, or nil.
func (c *objectCache) get(item *badger.Item) *Object {
	c.mu.RLock()
	e, ok := c.m[string(item.Key())]
	c.mu.RUnlock()
	if ok && e.version == item.Version() {
		return e.obj
	}
	return nil
}

// decodeItem decodes the object item holds and returns its encoded size.
func decodeItem(item *badger.Item) (*Object, int, error) {
	var obj Object
	size := 0
	if err := item.Value(func(b []byte) error { size = len(b); return json.Unmarshal(b, &obj) }); err != nil {
		return nil, 0, fmt.Errorf("decode %s: %w", item.Key(), err)
	}
	return &obj, size, nil
}
