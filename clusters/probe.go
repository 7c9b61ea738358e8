package clusters

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Labels of Node objects the probe reads.
const (
	labelZone   = "topology.kubernetes.io/zone"
	labelRegion = "topology.kubernetes.io/region"
)

// nodePage is how many nodes one list call returns.
const nodePage = 500

// clusterClient is a cached connection to one cluster, rebuilt when its
// rest.Config changes.
type clusterClient struct {
	key  string
	http *http.Client
	cs   *kubernetes.Clientset
}

func (cc *clusterClient) close() { cc.http.CloseIdleConnections() }

// client returns the cached client of cluster for cfg, building it on
// first use or when cfg changed.
func (c *Controller) client(cluster string, cfg *rest.Config) (*kubernetes.Clientset, error) {
	key := configKey(cfg)
	c.mu.Lock()
	cc := c.clients[cluster]
	c.mu.Unlock()
	if cc != nil && cc.key == key {
		return cc.cs, nil
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = c.cfg.ProbeTimeout
	cfg.QPS, cfg.Burst = -1, 0 // probes are few; the queue paces them
	dialer := &net.Dialer{Timeout: c.cfg.ProbeTimeout, KeepAlive: 30 * time.Second}
	cfg.Dial = dialer.DialContext // also keeps client-go from sharing transports across clusters
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if old := c.clients[cluster]; old != nil {
		old.close()
	}
	c.clients[cluster] = &clusterClient{key: key, http: hc, cs: cs}
	c.mu.Unlock()
	return cs, nil
}

// dropClient forgets cluster's connection.
func (c *Controller) dropClient(cluster string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc := c.clients[cluster]; cc != nil {
		cc.close()
		delete(c.clients, cluster)
	}
}

// configKey identifies the parts of cfg a connection depends on.
func configKey(cfg *rest.Config) string {
	h := sha256.New()
	for _, b := range [][]byte{
		[]byte(cfg.Host), []byte(cfg.BearerToken), []byte(cfg.Username), []byte(cfg.Password),
		cfg.TLSClientConfig.CAData, []byte(cfg.TLSClientConfig.CAFile), cfg.TLSClientConfig.CertData, cfg.TLSClientConfig.KeyData,
		[]byte(cfg.TLSClientConfig.CertFile), []byte(cfg.TLSClientConfig.KeyFile), []byte(cfg.TLSClientConfig.ServerName),
		[]byte(fmt.Sprint(cfg.TLSClientConfig.Insecure)),
	} {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	return string(h.Sum(nil))
}

// observation is what one probe saw.
type observation struct {
	// answered: the API server sent an HTTP response to something.
	answered bool
	// err is the first failure; kind says what it means.
	err  error
	kind failure

	version, uid  string
	readyzOK      bool
	readyzMessage string
	nodes         nodeSummary
}

// failure classifies a probe's error.
type failure int

const (
	failNone        failure = iota
	failUnreachable         // no answer: refused, timed out, reset
	failCredentials         // 401 or 403
	failCertificate         // the server's certificate did not verify
	failOther               // an answer that was not what a Kubernetes API server says
)

// nodeSummary is what the nodes say about where and whether pods can run.
type nodeSummary struct {
	count       int
	schedulable int
	region      string
	zones       []string
}

// probe asks the cluster's API server for its identity, health, version
// and nodes, each request bounded by ProbeTimeout.
func (c *Controller) probe(ctx context.Context, cs *kubernetes.Clientset) observation {
	var o observation
	fail := func(err error) observation {
		o.err, o.kind = err, classify(err)
		if o.kind != failUnreachable {
			o.answered = true
		}
		return o
	}
	call := func(f func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.ProbeTimeout)
		defer cancel()
		return f(ctx)
	}
	// The kube-system namespace needs working credentials: it tells a
	// wrong kubeconfig from a sick cluster before anything else.
	if err := call(func(ctx context.Context) error {
		ns, err := cs.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})
		if err == nil {
			o.uid = string(ns.UID)
		}
		return err
	}); err != nil {
		return fail(fmt.Errorf("read namespace kube-system: %w", err))
	}
	o.answered = true
	// The rest is independent: asked at once, over the one connection.
	var eg errgroup.Group
	var versionErr, readyzErr, nodesErr error
	eg.Go(func() error {
		versionErr = call(func(ctx context.Context) error {
			raw, err := cs.Discovery().RESTClient().Get().AbsPath("/version").Do(ctx).Raw()
			if err != nil {
				return err
			}
			var info version.Info
			if err := json.Unmarshal(raw, &info); err != nil {
				return fmt.Errorf("decode: %w", err)
			}
			o.version = info.GitVersion
			return nil
		})
		return nil
	})
	eg.Go(func() error {
		readyzErr = call(func(ctx context.Context) error {
			var code int
			raw, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).StatusCode(&code).Raw()
			o.readyzOK = err == nil && code == http.StatusOK
			if !o.readyzOK {
				o.readyzMessage = lastLines(string(raw), 3)
				if o.readyzMessage == "" && err != nil {
					o.readyzMessage = err.Error()
				}
			}
			if err != nil && classify(err) == failUnreachable {
				return err
			}
			return nil
		})
		return nil
	})
	eg.Go(func() error {
		nodesErr = c.listNodes(ctx, cs, &o.nodes)
		return nil
	})
	_ = eg.Wait()
	switch {
	case versionErr != nil:
		return fail(fmt.Errorf("read /version: %w", versionErr))
	case readyzErr != nil:
		return fail(fmt.Errorf("read /readyz: %w", readyzErr))
	case nodesErr != nil:
		return fail(fmt.Errorf("list nodes: %w", nodesErr))
	}
	return o
}

// listNodes pages through the cluster's nodes.
func (c *Controller) listNodes(ctx context.Context, cs *kubernetes.Clientset, sum *nodeSummary) error {
	zones := map[string]bool{}
	opts := metav1.ListOptions{Limit: nodePage}
	for {
		var list *corev1.NodeList
		err := func() error {
			ctx, cancel := context.WithTimeout(ctx, c.cfg.ProbeTimeout)
			defer cancel()
			var err error
			list, err = cs.CoreV1().Nodes().List(ctx, opts)
			return err
		}()
		if err != nil {
			return err
		}
		for i := range list.Items {
			n := &list.Items[i]
			sum.count++
			if schedulable(n) {
				sum.schedulable++
			}
			if z := n.Labels[labelZone]; z != "" {
				zones[z] = true
			}
			if r := n.Labels[labelRegion]; r != "" && sum.region == "" {
				sum.region = r
			}
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	for z := range zones {
		sum.zones = append(sum.zones, z)
	}
	slices.Sort(sum.zones)
	return nil
}

// schedulable reports whether pods can be placed on n: Ready, not
// cordoned, and with CPU and memory to allocate.
func schedulable(n *corev1.Node) bool {
	if n.Spec.Unschedulable {
		return false
	}
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	cpu, mem := n.Status.Allocatable[corev1.ResourceCPU], n.Status.Allocatable[corev1.ResourceMemory]
	return ready && cpu.Sign() > 0 && mem.Sign() > 0
}

// classify says what a probe error means for the conditions.
func classify(err error) failure {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verify           *tls.CertificateVerificationError
		status           apierrors.APIStatus
	)
	switch {
	case err == nil:
		return failNone
	case errors.As(err, &verify), errors.As(err, &unknownAuthority), errors.As(err, &hostname), errors.As(err, &invalid):
		return failCertificate
	case apierrors.IsUnauthorized(err), apierrors.IsForbidden(err):
		return failCredentials
	case errors.As(err, &status) && status.Status().Code != 0 && !apierrors.IsTimeout(err) && !apierrors.IsServerTimeout(err):
		// An HTTP answer (a 5xx while the server starts, say).
		return failOther
	}
	return failUnreachable
}

// lastLines returns the last n non-empty lines of s.
func lastLines(s string, n int) string {
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' })
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
