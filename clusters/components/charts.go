package components

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/registry"
)

// ErrChartNotFound is returned when a chart is not in the hub's registry.
var ErrChartNotFound = errors.New("chart not found")

// ChartSource loads charts by repository and version.
type ChartSource interface {
	// Load returns the chart repo (a repository in the hub's registry,
	// "charts/vcluster") at version.
	Load(repo, version string) (*chart.Chart, error)
}

// OCICharts loads charts from an OCI registry (the hub's own) with Helm's
// registry client: oci://Host/REPO:VERSION. Charts are kept by digest, so
// a version pushed again is picked up and an unchanged one is pulled once.
type OCICharts struct {
	host   string
	client *registry.Client

	mu    sync.Mutex
	cache map[string]*chart.Chart // by manifest digest
}

// OCIChartsConfig configures OCICharts.
type OCIChartsConfig struct {
	// Host is the registry's host:port (the hub's --registry-addr).
	Host string
	// PlainHTTP talks HTTP, as the hub's registry serves.
	PlainHTTP bool
	// Username and Password authenticate (any user name and an API token
	// for the hub's registry); empty for anonymous pulls.
	Username, Password string
	// Timeout bounds each request; default 30 s.
	Timeout time.Duration
	// Transport carries the requests; nil dials Host. A hub member
	// reaches its own registry in process.
	Transport http.RoundTripper
}

// NewOCICharts returns a ChartSource over the registry at cfg.Host.
func NewOCICharts(cfg OCIChartsConfig) (*OCICharts, error) {
	if cfg.Host == "" || strings.Contains(cfg.Host, "/") {
		return nil, fmt.Errorf("charts registry %q must be host:port", cfg.Host)
	}
	client, err := newRegistryClient(cfg)
	if err != nil {
		return nil, err
	}
	return &OCICharts{host: cfg.Host, client: client, cache: map[string]*chart.Chart{}}, nil
}

// newRegistryClient returns a Helm registry client for cfg that reads no
// credential files (neither the hub's nor the user's).
func newRegistryClient(cfg OCIChartsConfig) (*registry.Client, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	rt := cfg.Transport
	if rt == nil {
		rt = http.DefaultTransport.(*http.Transport).Clone()
	}
	opts := []registry.ClientOption{
		registry.ClientOptHTTPClient(&http.Client{Timeout: cfg.Timeout, Transport: rt}),
		registry.ClientOptCredentialsFile(filepath.Join(os.TempDir(), "outpost-no-registry-credentials.json")),
	}
	if cfg.PlainHTTP {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	if cfg.Username != "" && cfg.Password != "" {
		opts = append(opts, registry.ClientOptBasicAuth(cfg.Username, cfg.Password))
	}
	return registry.NewClient(opts...)
}

// Ref returns the OCI reference of repo at version in this registry.
func (o *OCICharts) Ref(repo, version string) string {
	return o.host + "/" + strings.TrimPrefix(repo, "/") + ":" + version
}

// Load pulls repo:version, or returns it from the cache when its digest
// has not changed.
func (o *OCICharts) Load(repo, version string) (*chart.Chart, error) {
	ref := o.Ref(repo, version)
	desc, err := o.client.Resolve(ref)
	if err != nil {
		if strings.Contains(err.Error(), "not found") {
			return nil, fmt.Errorf("%w: oci://%s is not in the hub's registry (mirror it with `outpost charts push`)", ErrChartNotFound, ref)
		}
		return nil, fmt.Errorf("resolve oci://%s: %w", ref, err)
	}
	key := desc.Digest.String()
	o.mu.Lock()
	ch, ok := o.cache[key]
	o.mu.Unlock()
	if ok {
		return ch, nil
	}
	res, err := o.client.Pull(ref)
	if err != nil {
		return nil, fmt.Errorf("pull oci://%s: %w", ref, err)
	}
	if ch, err = loader.LoadArchive(bytes.NewReader(res.Chart.Data)); err != nil {
		return nil, fmt.Errorf("chart oci://%s: %w", ref, err)
	}
	o.mu.Lock()
	o.cache[key] = ch
	o.mu.Unlock()
	return ch, nil
}
