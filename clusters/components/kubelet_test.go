package components

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	//lint:ignore SA1019 client-go v0.37 (portforward, transport/spdy) still takes these types, not k8s.io/streaming's
	"k8s.io/apimachinery/pkg/util/httpstream"
	//lint:ignore SA1019 client-go v0.37 (portforward, transport/spdy) still takes these types, not k8s.io/streaming's
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/portforward"
)

// fakeKubelet plays the kubelet of one Node for port-forwards, as no
// kubelet runs here: the API server sends a pod's /portForward to the
// kubelet of the pod's node (this one, on 127.0.0.1), and this carries
// each data stream to target, which stands for the pod's port. It speaks
// the kubelet's side of the portforward.k8s.io protocol over SPDY.
type fakeKubelet struct {
	node   string
	target string
	srv    *httptest.Server

	mu       sync.Mutex
	requests []string // paths of the port-forwards asked for
	conns    []httpstream.Connection
	wg       sync.WaitGroup
}

// startFakeKubelet serves port-forwards to target and registers Node
// node with its address and kubelet port in the API server of cs; the
// Node goes at the test's end.
func startFakeKubelet(t *testing.T, cs kubernetes.Interface, node, target string) *fakeKubelet {
	t.Helper()
	k := &fakeKubelet{node: node, target: target}
	k.srv = httptest.NewUnstartedServer(k)
	k.srv.StartTLS()
	t.Cleanup(k.close)
	ctx := context.Background()
	n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cs.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	})
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(k.srv.Listener.Addr().(*net.TCPAddr).Port)
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return k
}

// forwarded is how many port-forwards the kubelet was asked for, and
// the last one's path.
func (k *fakeKubelet) forwarded() (int, string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.requests) == 0 {
		return 0, ""
	}
	return len(k.requests), k.requests[len(k.requests)-1]
}

func (k *fakeKubelet) close() {
	k.srv.Close()
	k.mu.Lock()
	for _, c := range k.conns {
		c.Close()
	}
	k.mu.Unlock()
	k.wg.Wait()
}

// ServeHTTP serves /portForward/NAMESPACE/POD.
func (k *fakeKubelet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/portForward/") {
		http.NotFound(w, r)
		return
	}
	if _, err := httpstream.Handshake(r, w, []string{portforward.PortForwardProtocolV1Name}); err != nil {
		return
	}
	done := make(chan struct{})
	defer close(done)
	streams := make(chan httpstream.Stream)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, _ <-chan struct{}) error {
		select {
		case streams <- s:
			return nil
		case <-done:
			return io.ErrClosedPipe
		}
	})
	if conn == nil {
		return
	}
	k.mu.Lock()
	k.requests = append(k.requests, r.URL.Path)
	k.conns = append(k.conns, conn)
	k.mu.Unlock()
	defer conn.Close()
	errStreams := map[string]httpstream.Stream{}
	for {
		select {
		case <-conn.CloseChan():
			return
		case s := <-streams:
			id := s.Headers().Get(corev1.PortForwardRequestIDHeader)
			if s.Headers().Get(corev1.StreamType) == corev1.StreamTypeError {
				// The client opens the error stream first and waits for
				// its reply before it opens the data stream.
				errStreams[id] = s
				continue
			}
			errStream := errStreams[id]
			delete(errStreams, id)
			k.wg.Add(1)
			go func() {
				defer k.wg.Done()
				k.carry(s, errStream)
			}()
		}
	}
}

// carry copies one data stream to the target and back, as the kubelet
// does with a connection into the pod's network namespace.
func (k *fakeKubelet) carry(data, errStream httpstream.Stream) {
	defer data.Close()
	if errStream != nil {
		defer errStream.Close()
	}
	c, err := net.Dial("tcp", k.target)
	if err != nil {
		if errStream != nil {
			_, _ = io.WriteString(errStream, err.Error())
		}
		return
	}
	defer c.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(c, data)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	_, _ = io.Copy(data, c)
	data.Close()
	c.Close()
	wg.Wait()
}

// playStatefulSetPod does what the scheduler, the StatefulSet controller
// and the kubelet would for the vcluster release name in ns: pod
// name-0 on node, running and ready (with the namespace's default
// service account the pod needs).
func playStatefulSetPod(t *testing.T, cs kubernetes.Interface, ns, name, node string) {
	t.Helper()
	ctx := context.Background()
	core := cs.CoreV1()
	if _, err := core.ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-0", Labels: map[string]string{"app": "vcluster", "release": name}},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "syncer", Image: "ghcr.io/loft-sh/vcluster-pro:0.28.0", Ports: []corev1.ContainerPort{{ContainerPort: 8443}}}},
		},
	}
	p, err := core.Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if _, err := core.Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
