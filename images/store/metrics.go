package store

import "github.com/prometheus/client_golang/prometheus"

// Stats is a snapshot of the store's size and counters since New.
type Stats struct {
	// Bytes and Blobs are what is stored now; Quota is the configured
	// limit (0: none).
	Bytes int64
	Blobs int
	Quota int64
	// Writes is how many blob writes are in progress (fetches and
	// uploads); Readers how many blobs are open for reading.
	Writes  int
	Readers int
	// BlobHits counts Opens served from this node (stored, or following
	// a write in progress); BlobMisses those that found nothing.
	BlobHits, BlobMisses uint64
	// ManifestHits and ManifestMisses count Manifest lookups.
	ManifestHits, ManifestMisses uint64
	// Evictions and EvictedBytes count the blobs the quota removed.
	Evictions, EvictedBytes uint64
}

// Stats returns the current size and counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	st := Stats{Bytes: s.bytes, Blobs: s.count, Quota: s.quota, Writes: len(s.writes) + len(s.uploads), Readers: len(s.readers)}
	s.mu.Unlock()
	st.BlobHits, st.BlobMisses = s.blobHits.Load(), s.blobMisses.Load()
	st.ManifestHits, st.ManifestMisses = s.manifestHits.Load(), s.manifestMisses.Load()
	st.Evictions, st.EvictedBytes = s.evictions.Load(), s.evictedBytes.Load()
	return st
}

var (
	descBytes     = prometheus.NewDesc("outpost_images_store_bytes", "Bytes of blobs stored.", nil, nil)
	descBlobs     = prometheus.NewDesc("outpost_images_store_blobs", "Blobs stored.", nil, nil)
	descQuota     = prometheus.NewDesc("outpost_images_store_quota_bytes", "Disk quota of the image store (0: none).", nil, nil)
	descWrites    = prometheus.NewDesc("outpost_images_store_writes_in_progress", "Blob writes in progress.", nil, nil)
	descHits      = prometheus.NewDesc("outpost_images_store_hits_total", "Lookups served from this node.", []string{"kind"}, nil)
	descMisses    = prometheus.NewDesc("outpost_images_store_misses_total", "Lookups that found nothing on this node.", []string{"kind"}, nil)
	descEvictions = prometheus.NewDesc("outpost_images_store_evictions_total", "Blobs evicted to keep the quota.", nil, nil)
	descEvicted   = prometheus.NewDesc("outpost_images_store_evicted_bytes_total", "Bytes evicted to keep the quota.", nil, nil)
)

// Collector returns the store's Prometheus metrics. Register it once.
func (s *Store) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Store }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBytes, descBlobs, descQuota, descWrites, descHits, descMisses, descEvictions, descEvicted} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(st.Bytes))
	ch <- prometheus.MustNewConstMetric(descBlobs, prometheus.GaugeValue, float64(st.Blobs))
	ch <- prometheus.MustNewConstMetric(descQuota, prometheus.GaugeValue, float64(st.Quota))
	ch <- prometheus.MustNewConstMetric(descWrites, prometheus.GaugeValue, float64(st.Writes))
	ch <- prometheus.MustNewConstMetric(descHits, prometheus.CounterValue, float64(st.BlobHits), "blob")
	ch <- prometheus.MustNewConstMetric(descHits, prometheus.CounterValue, float64(st.ManifestHits), "manifest")
	ch <- prometheus.MustNewConstMetric(descMisses, prometheus.CounterValue, float64(st.BlobMisses), "blob")
	ch <- prometheus.MustNewConstMetric(descMisses, prometheus.CounterValue, float64(st.ManifestMisses), "manifest")
	ch <- prometheus.MustNewConstMetric(descEvictions, prometheus.CounterValue, float64(st.Evictions))
	ch <- prometheus.MustNewConstMetric(descEvicted, prometheus.CounterValue, float64(st.EvictedBytes))
}
