package components

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	//lint:ignore SA1019 client-go v0.37 (portforward, transport/spdy) still takes these types, not k8s.io/streaming's
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	"github.com/outpost-mesh/outpost/clusters"
)

// ErrNotRunning is returned when a virtual cluster needs a forward and
// the Installer's Run is not running.
var ErrNotRunning = errors.New("the component installer is not running")

// forwardTarget is where a virtual cluster's forward leads: port Port of
// a running pod of the vcluster release in Namespace of the host
// cluster, reached through the host's API server.
type forwardTarget struct {
	host      *rest.Config // the host's connection: direct or its tunnel
	cs        kubernetes.Interface
	key       string // configKey(host)
	Namespace string
	Release   string
	Port      int
}

// forward is one virtual cluster's loopback port on the hub. Each
// connection accepted there is carried, as `vcluster connect` does, by a
// port-forward through the host cluster's API server to the vcluster
// pod's API port: the hub reaches a virtual cluster wherever it reaches
// its host (directly or through the host's tunnel), and TLS runs end to
// end between the hub and the virtual API server.
type forward struct {
	ln   net.Listener
	port int

	mu     sync.Mutex
	target forwardTarget
	conns  map[net.Conn]struct{}
	closed bool
}

// forwards holds the Installer's forwards, by Cluster name. Their
// goroutines run in Run's errgroup.
type forwards struct {
	log *slog.Logger

	mu     sync.Mutex
	g      *errgroup.Group // nil while Run is not running
	ctx    context.Context
	byName map[string]*forward
}

// run serves the forwards until ctx is done, then closes them all.
func (f *forwards) run(ctx context.Context) error {
	f.mu.Lock()
	if f.g != nil {
		f.mu.Unlock()
		return errors.New("components: Run called twice")
	}
	g, gctx := errgroup.WithContext(ctx)
	// In g before anything else is, so g's counter never goes from zero
	// to one while Wait runs.
	g.Go(func() error {
		<-gctx.Done()
		f.mu.Lock()
		f.g = nil // ensure refuses from now on
		all := f.byName
		f.byName = map[string]*forward{}
		f.mu.Unlock()
		for _, fw := range all {
			fw.close()
		}
		return nil
	})
	f.g, f.ctx = g, gctx
	f.mu.Unlock()
	return g.Wait()
}

// ensure returns the loopback port of cluster's forward, started (on
// port prefer when it is free, so the address a Cluster stored stays
// valid) or pointed at want.
func (f *forwards) ensure(cluster string, want forwardTarget, prefer int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.g == nil {
		return 0, ErrNotRunning
	}
	if fw := f.byName[cluster]; fw != nil {
		fw.mu.Lock()
		if fw.target.key != want.key || fw.target.Namespace != want.Namespace || fw.target.Release != want.Release || fw.target.Port != want.Port {
			fw.target = want
		}
		fw.mu.Unlock()
		return fw.port, nil
	}
	ln, err := listenLoopback(prefer)
	if err != nil {
		return 0, fmt.Errorf("listen for virtual cluster %s: %w", cluster, err)
	}
	fw := &forward{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, target: want, conns: map[net.Conn]struct{}{}}
	f.byName[cluster] = fw
	g, ctx, log := f.g, f.ctx, f.log.With("cluster", cluster)
	g.Go(func() error { fw.accept(ctx, g, log); return nil })
	return fw.port, nil
}

// close stops cluster's forward and its connections.
func (f *forwards) close(cluster string) {
	f.mu.Lock()
	fw := f.byName[cluster]
	delete(f.byName, cluster)
	f.mu.Unlock()
	if fw != nil {
		fw.close()
	}
}

// listenLoopback listens on 127.0.0.1:prefer, or on a free port when
// prefer is 0 or taken.
func listenLoopback(prefer int) (net.Listener, error) {
	if prefer > 0 {
		if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(prefer))); err == nil {
			return ln, nil
		}
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

// accept serves connections until the listener is closed.
func (fw *forward) accept(ctx context.Context, g *errgroup.Group, log *slog.Logger) {
	for {
		c, err := fw.ln.Accept()
		if err != nil {
			return
		}
		fw.mu.Lock()
		if fw.closed {
			fw.mu.Unlock()
			c.Close()
			return
		}
		fw.conns[c] = struct{}{}
		t := fw.target
		fw.mu.Unlock()
		g.Go(func() error {
			defer func() {
				fw.mu.Lock()
				delete(fw.conns, c)
				fw.mu.Unlock()
				c.Close()
			}()
			if err := carry(ctx, c, t); err != nil {
				log.Debug("virtual cluster connection ended", "err", err)
			}
			return nil
		})
	}
}

// close closes the listener and every connection.
func (fw *forward) close() {
	fw.mu.Lock()
	fw.closed = true
	conns := fw.conns
	fw.conns = map[net.Conn]struct{}{}
	fw.mu.Unlock()
	fw.ln.Close()
	for c := range conns {
		c.Close()
	}
}

// carry forwards c to t's pod through the host's API server and back.
func carry(ctx context.Context, c net.Conn, t forwardTarget) error {
	pod, err := vclusterPod(ctx, t)
	if err != nil {
		return err
	}
	rt, upgrader, err := spdy.RoundTripperFor(t.host)
	if err != nil {
		return err
	}
	u := t.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(t.Namespace).Name(pod).SubResource("portforward").URL()
	sc, _, err := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, u).Dial(portforward.PortForwardProtocolV1Name)
	if err != nil {
		return fmt.Errorf("port-forward to pod %s/%s: %w", t.Namespace, pod, err)
	}
	defer sc.Close()
	stop := context.AfterFunc(ctx, func() { c.Close(); sc.Close() })
	defer stop()
	return pipeStreams(c, sc, t.Port)
}

// pipeStreams opens the port-forward protocol's error and data streams
// for port on sc (as kubectl port-forward does) and copies c through the
// data stream both ways until the pod's side ends.
func pipeStreams(c net.Conn, sc httpstream.Connection, port int) error {
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, strconv.Itoa(port))
	h.Set(corev1.PortForwardRequestIDHeader, "0")
	errStream, err := sc.CreateStream(h)
	if err != nil {
		return fmt.Errorf("create error stream: %w", err)
	}
	errStream.Close() // nothing is written to it
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := sc.CreateStream(h)
	if err != nil {
		return fmt.Errorf("create data stream: %w", err)
	}
	var g errgroup.Group
	var msg []byte
	g.Go(func() error {
		// Read errors here only say the connection closed.
		msg, _ = io.ReadAll(errStream)
		return nil
	})
	g.Go(func() error {
		// The client's end: the pod sees EOF. An error here is the
		// client's connection closing.
		_, _ = io.Copy(data, c)
		data.Close()
		return nil
	})
	_, err = io.Copy(c, data)
	// The pod's side ended: so does the client's connection, which ends
	// the other copy, and the SPDY connection, which ends the error
	// stream.
	c.Close()
	sc.Close()
	_ = g.Wait()
	if len(msg) > 0 {
		err = errors.Join(err, fmt.Errorf("forward to port %d: %s", port, msg))
	}
	return err
}

// vclusterPod names a running pod of the vcluster release, a ready one
// when there is one.
func vclusterPod(ctx context.Context, t forwardTarget) (string, error) {
	pods, err := t.cs.CoreV1().Pods(t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=vcluster,release=" + t.Release})
	if err != nil {
		return "", fmt.Errorf("list vcluster pods in %s: %w", t.Namespace, err)
	}
	var running string
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return p.Name, nil
			}
		}
		if running == "" {
			running = p.Name
		}
	}
	if running == "" {
		return "", fmt.Errorf("no running pod of vcluster %s in namespace %s", t.Release, t.Namespace)
	}
	return running, nil
}

// forwardTo starts (or keeps) virtual cluster t's forward through its
// host and returns the forward's https:// address on the hub. The pod
// port is the one the vcluster's own kubeconfig names (vcluster serves
// on 8443); the loopback port is the one t's stored kubeconfig names
// when it is free, so the stored address survives a hub restart.
func (in *Installer) forwardTo(t, host *clusters.Target, cfg *Config, kubeconfig []byte) (string, error) {
	server, err := kubeconfigServer(kubeconfig)
	if err != nil {
		return "", fmt.Errorf("secret %s/vc-%s: %w", cfg.Namespace, cfg.Release, err)
	}
	port := 443
	if p := server.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil {
			return "", fmt.Errorf("secret %s/vc-%s: server %s: bad port", cfg.Namespace, cfg.Release, server)
		}
	}
	conn, err := in.env.conn(host)
	if err != nil {
		return "", err
	}
	prefer := 0
	if stored, err := kubeconfigServer(t.Spec.Connection.Kubeconfig); err == nil && stored.Hostname() == "127.0.0.1" {
		prefer, _ = strconv.Atoi(stored.Port())
	}
	want := forwardTarget{host: conn.cfg, cs: conn.cs, key: conn.key, Namespace: cfg.Namespace, Release: cfg.Release, Port: port}
	p, err := in.fwd.ensure(t.Name, want, prefer)
	if err != nil {
		return "", err
	}
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}
