package fetch

import (
	"maps"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// TierStats counts what one tier served. Peers are counted together under
// "peer".
type TierStats struct {
	// BlobHits counts blob transfers the tier started (a resumed blob
	// counts once per tier that served part of it); BlobMisses the
	// requests it could not serve (not there, refused, unreachable).
	BlobHits, BlobMisses uint64
	// ManifestHits and ManifestMisses are the same for manifests (and
	// tag resolutions).
	ManifestHits, ManifestMisses uint64
	// Bytes counts blob bytes received from the tier and written.
	Bytes uint64
	// Corrupt counts content from the tier that failed verification.
	Corrupt uint64
}

// Stats is a snapshot of the chain's counters since New.
type Stats struct {
	// BlobHits counts blob requests answered from this node's store
	// (stored, or following this node's fetch in progress); BlobMisses
	// those that started a fetch.
	BlobHits, BlobMisses uint64
	// ManifestHits and ManifestMisses are the same for manifests (a tag
	// inside its TagTTL is a hit).
	ManifestHits, ManifestMisses uint64
	// Tiers holds the counters of each tier by metric label.
	Tiers map[string]TierStats
	// Resumes counts blob transfers resumed at an offset by another
	// source; Restarts blob writes dropped after failing verification
	// and begun again.
	Resumes, Restarts uint64
	// TagFallbacks counts tags answered from the last agreed digest
	// because no upstream answered.
	TagFallbacks uint64
	// Fetches is the number of blob fetches in progress.
	Fetches int
}

type tierCounters struct {
	blobHits, blobMisses         atomic.Uint64
	manifestHits, manifestMisses atomic.Uint64
	bytes, corrupt               atomic.Uint64
}

type metrics struct {
	blobHits, blobMisses         atomic.Uint64
	manifestHits, manifestMisses atomic.Uint64
	resumes, restarts            atomic.Uint64
	tagFallbacks                 atomic.Uint64

	mu    sync.Mutex
	tiers map[string]*tierCounters
}

func (m *metrics) tier(label string) *tierCounters {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tiers == nil {
		m.tiers = map[string]*tierCounters{}
	}
	c, ok := m.tiers[label]
	if !ok {
		c = &tierCounters{}
		m.tiers[label] = c
	}
	return c
}

func (m *metrics) snapshot() Stats {
	st := Stats{
		BlobHits: m.blobHits.Load(), BlobMisses: m.blobMisses.Load(),
		ManifestHits: m.manifestHits.Load(), ManifestMisses: m.manifestMisses.Load(),
		Resumes: m.resumes.Load(), Restarts: m.restarts.Load(), TagFallbacks: m.tagFallbacks.Load(),
		Tiers: map[string]TierStats{},
	}
	m.mu.Lock()
	tiers := maps.Clone(m.tiers)
	m.mu.Unlock()
	for name, c := range tiers {
		st.Tiers[name] = TierStats{
			BlobHits: c.blobHits.Load(), BlobMisses: c.blobMisses.Load(),
			ManifestHits: c.manifestHits.Load(), ManifestMisses: c.manifestMisses.Load(),
			Bytes: c.bytes.Load(), Corrupt: c.corrupt.Load(),
		}
	}
	return st
}

// Stats returns the chain's counters.
func (s *Source) Stats() Stats {
	st := s.m.snapshot()
	s.mu.Lock()
	st.Fetches = len(s.jobs)
	s.mu.Unlock()
	return st
}

var (
	descLocalHits   = prometheus.NewDesc("outpost_images_fetch_local_hits_total", "Requests answered from this node's store.", []string{"kind"}, nil)
	descLocalMisses = prometheus.NewDesc("outpost_images_fetch_local_misses_total", "Requests that went past this node's store.", []string{"kind"}, nil)
	descTierHits    = prometheus.NewDesc("outpost_images_fetch_tier_hits_total", "Requests a tier served.", []string{"tier", "kind"}, nil)
	descTierMisses  = prometheus.NewDesc("outpost_images_fetch_tier_misses_total", "Requests a tier could not serve.", []string{"tier", "kind"}, nil)
	descTierBytes   = prometheus.NewDesc("outpost_images_fetch_tier_bytes_total", "Blob bytes received from a tier.", []string{"tier"}, nil)
	descTierCorrupt = prometheus.NewDesc("outpost_images_fetch_tier_corrupt_total", "Content from a tier that failed verification.", []string{"tier"}, nil)
	descResumes     = prometheus.NewDesc("outpost_images_fetch_resumes_total", "Blob transfers resumed at an offset by another source.", nil, nil)
	descRestarts    = prometheus.NewDesc("outpost_images_fetch_restarts_total", "Blob writes dropped after failing verification and begun again.", nil, nil)
	descFallbacks   = prometheus.NewDesc("outpost_images_fetch_tag_fallbacks_total", "Tags answered from the last agreed digest because no upstream answered.", nil, nil)
	descFetches     = prometheus.NewDesc("outpost_images_fetch_in_progress", "Blob fetches in progress.", nil, nil)
)

// Collector returns the chain's Prometheus metrics. Register it once.
func (s *Source) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Source }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLocalHits, descLocalMisses, descTierHits, descTierMisses, descTierBytes, descTierCorrupt, descResumes, descRestarts, descFallbacks, descFetches} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descLocalHits, st.BlobHits, "blob")
	counter(descLocalHits, st.ManifestHits, "manifest")
	counter(descLocalMisses, st.BlobMisses, "blob")
	counter(descLocalMisses, st.ManifestMisses, "manifest")
	names := make([]string, 0, len(st.Tiers))
	for name := range st.Tiers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t := st.Tiers[name]
		counter(descTierHits, t.BlobHits, name, "blob")
		counter(descTierHits, t.ManifestHits, name, "manifest")
		counter(descTierMisses, t.BlobMisses, name, "blob")
		counter(descTierMisses, t.ManifestMisses, name, "manifest")
		counter(descTierBytes, t.Bytes, name)
		counter(descTierCorrupt, t.Corrupt, name)
	}
	counter(descResumes, st.Resumes)
	counter(descRestarts, st.Restarts)
	counter(descFallbacks, st.TagFallbacks)
	ch <- prometheus.MustNewConstMetric(descFetches, prometheus.GaugeValue, float64(st.Fetches))
}
