package registry

import (
	"sync"
	"time"
)

// pullWindow is how long after an index is served a platform manifest of
// the same repository fetched by digest counts as part of that pull.
const pullWindow = time.Minute

// pullCounter decides which manifest GETs are pulls. A client pulling an
// image GETs its manifest (by tag or digest, after a HEAD by tag) and, for
// a multi-platform image, the index first and then one platform manifest by
// digest. So: every index served is a pull; an image manifest served by tag
// is a pull; an image manifest served by digest is a pull unless an index
// of the same repository was served within pullWindow. HEADs never count.
type pullCounter struct {
	fn  func(ns, repo string)
	now func() time.Time

	mu     sync.Mutex
	recent map[[2]string]time.Time // last index served per repository
}

func newPullCounter(fn func(ns, repo string)) *pullCounter {
	return &pullCounter{fn: fn, now: time.Now, recent: map[[2]string]time.Time{}}
}

func (p *pullCounter) manifestServed(ns, repo string, byDigest, index bool) {
	if p.fn == nil {
		return
	}
	key := [2]string{ns, repo}
	now := p.now()
	count := true
	p.mu.Lock()
	switch {
	case index:
		p.recent[key] = now
	case byDigest:
		if t, ok := p.recent[key]; ok && now.Sub(t) < pullWindow {
			count = false
		}
	}
	if len(p.recent) > 4096 {
		for k, t := range p.recent {
			if now.Sub(t) >= pullWindow {
				delete(p.recent, k)
			}
		}
	}
	p.mu.Unlock()
	if count {
		p.fn(ns, repo)
	}
}
