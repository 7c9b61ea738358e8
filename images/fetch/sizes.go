package fetch

import (
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/outpost-mesh/outpost/images/store"
)

// sizeTable remembers the sizes that manifests give their blobs, so a
// fetch can begin with the size it must have and refuse a source that
// announces another. It is bounded: past max entries an arbitrary one
// goes (an unknown size only means the check waits for the digest).
type sizeTable struct {
	mu    sync.Mutex
	max   int
	sizes map[digest.Digest]int64
}

func newSizeTable(max int) *sizeTable {
	return &sizeTable{max: max, sizes: map[digest.Digest]int64{}}
}

// get returns d's size, -1 when unknown.
func (t *sizeTable) get(d digest.Digest) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n, ok := t.sizes[d]; ok {
		return n
	}
	return -1
}

func (t *sizeTable) put(d digest.Digest, n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.sizes[d]; !ok && len(t.sizes) >= t.max {
		for k := range t.sizes {
			delete(t.sizes, k)
			break
		}
	}
	t.sizes[d] = n
}

// learn records the sizes of the config and layers of an image manifest
// (an index's children are manifests, verified by digest).
func (t *sizeTable) learn(body []byte) {
	mi, err := store.ParseManifest(body)
	if err != nil {
		return
	}
	descs := append(append([]ocispec.Descriptor(nil), mi.Layers...), mi.Blobs...)
	if mi.Config != nil {
		descs = append(descs, *mi.Config)
	}
	for _, desc := range descs {
		if desc.Size < 0 || len(desc.URLs) > 0 {
			continue
		}
		if _, err := store.ParseDigest(string(desc.Digest)); err != nil {
			continue
		}
		t.put(desc.Digest, desc.Size)
	}
}
