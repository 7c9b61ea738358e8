package components

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/outpost-mesh/outpost/clusters"
)

// requestTimeout bounds each request to a cluster's API server.
const requestTimeout = 30 * time.Second

// env is what the components of every cluster share: where charts come
// from and a connection per cluster.
type env struct {
	charts ChartSource
	log    *slog.Logger

	mu    sync.Mutex
	conns map[string]*conn // by cluster name
}

// conn is the clients of one cluster's connection.
type conn struct {
	key    string
	cfg    *rest.Config
	cs     kubernetes.Interface
	dyn    dynamic.Interface
	disc   discovery.CachedDiscoveryInterface
	mapper meta.RESTMapper
}

// conn returns the clients for t's connection, made again when it changed.
func (e *env) conn(t *clusters.Target) (*conn, error) {
	if t.Config == nil {
		return nil, fmt.Errorf("cluster %s is not reachable", t.Name)
	}
	key := configKey(t.Config)
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.conns[t.Name]; c != nil && c.key == key {
		return c, nil
	}
	cfg := rest.CopyConfig(t.Config)
	cfg.Timeout = requestTimeout
	c := &conn{key: key, cfg: cfg}
	var err error
	if c.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if c.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if c.disc, c.mapper, err = newDiscovery(cfg); err != nil {
		return nil, err
	}
	e.conns[t.Name] = c
	return c, nil
}

// drop forgets cluster's connection.
func (e *env) drop(cluster string) {
	e.mu.Lock()
	delete(e.conns, cluster)
	e.mu.Unlock()
}

// helm returns a Helm action configuration for namespace ns of the
// cluster, releases kept as Secrets there.
func (c *conn) helm(ns string, log *slog.Logger) (*action.Configuration, error) {
	ac := new(action.Configuration)
	logf := func(format string, v ...any) { log.Debug(fmt.Sprintf(format, v...), "namespace", ns) }
	if err := ac.Init(newRESTGetter(c.cfg, ns, c.disc, c.mapper), ns, "secret", logf); err != nil {
		return nil, fmt.Errorf("helm in namespace %s: %w", ns, err)
	}
	return ac, nil
}

// configKey identifies what a connection depends on.
func configKey(cfg *rest.Config) string {
	h := sha256.New()
	for _, s := range []string{cfg.Host, cfg.BearerToken, cfg.ServerName, string(cfg.CAData), string(cfg.CertData), string(cfg.KeyData)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}
