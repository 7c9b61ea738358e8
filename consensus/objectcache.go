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
	k, v := item.Key(), item.Version()
	c.mu.RLock()
	e, ok := c.m[string(k)]
	c.mu.RUnlock()
	if ok && e.version == v {
		return e.obj, nil
	}
	var obj Object
	size := 0
	if err := item.Value(func(b []byte) error { size = len(b); return json.Unmarshal(b, &obj) }); err != nil {
		return nil, fmt.Errorf("decode %s: %w", k, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || c.bytes+size > c.limit {
		c.m, c.bytes = map[string]cachedObject{}, 0
	}
	if old, ok := c.m[string(k)]; ok {
		if old.version > v {
			return &obj, nil // a reader at an older snapshot: keep the newer
		}
		c.bytes -= old.size
	}
	c.m[string(k)] = cachedObject{version: v, size: size, obj: &obj}
	c.bytes += size
	return &obj, nil
}
