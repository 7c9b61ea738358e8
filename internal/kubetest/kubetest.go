// Package kubetest runs a real Kubernetes API server for tests: etcd and
// kube-apiserver on loopback, with their data in a temporary directory, a
// serving certificate for 127.0.0.1 and a static admin token. There is no
// kubelet, scheduler or controller manager: tests that need Nodes create
// them, and say so.
//
// The binaries come from scripts/kube-peers.sh (kube-apiserver, kubectl)
// and Debian's etcd-server; OUTPOST_KUBE_BIN and OUTPOST_ETCD override
// where they are looked for.
package kubetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/outpost-mesh/outpost/internal/pki"
)

// KubeVersion is the Kubernetes version scripts/kube-peers.sh builds.
const KubeVersion = "v1.37.2"

// AdminToken is the static token of the API server's admin user (group
// system:masters).
const AdminToken = "kubetest-admin-token"

// ServerName is a DNS name the serving certificate holds besides
// 127.0.0.1, as an in-cluster API server's does.
const ServerName = "kubernetes.default.svc"

// startTimeout bounds how long the API server may take to become ready.
const startTimeout = 90 * time.Second

// Server is a running etcd and kube-apiserver.
type Server struct {
	// URL is the API server's https:// address.
	URL string
	// CAPEM is the CA of its serving certificate.
	CAPEM []byte
	// Config is an admin rest.Config and Client an admin clientset.
	Config *rest.Config
	Client *kubernetes.Clientset

	dir       string
	apiserver *proc
	etcd      *proc
}

// proc is a child process and the result of its Wait.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan error
	log  string
}

// Binaries returns the paths of kube-apiserver, kubectl and etcd, or an
// error that says how to get them.
func Binaries() (apiserver, kubectl, etcd string, err error) {
	dir := os.Getenv("OUTPOST_KUBE_BIN")
	if dir == "" {
		root, rerr := repoRoot()
		if rerr != nil {
			return "", "", "", rerr
		}
		dir = filepath.Join(root, ".build", "tools", "kube-"+KubeVersion)
	}
	apiserver, kubectl = filepath.Join(dir, "kube-apiserver"), filepath.Join(dir, "kubectl")
	for _, p := range []string{apiserver, kubectl} {
		if _, err := os.Stat(p); err != nil {
			return "", "", "", fmt.Errorf("%s not found: run scripts/kube-peers.sh (make test-deps runs it) or set OUTPOST_KUBE_BIN", p)
		}
	}
	etcd = os.Getenv("OUTPOST_ETCD")
	if etcd == "" {
		if etcd, err = exec.LookPath("etcd"); err != nil {
			return "", "", "", errors.New("etcd not found in PATH: install Debian's etcd-server (scripts/test-deps.sh does) or set OUTPOST_ETCD")
		}
	}
	return apiserver, kubectl, etcd, nil
}

// repoRoot finds the module root above the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("kubetest: no go.mod above the working directory; set OUTPOST_KUBE_BIN")
		}
		dir = parent
	}
}

// Start runs etcd and kube-apiserver on free loopback ports with their
// data under a new temporary directory, and waits until the API server is
// ready. Stop ends both.
func Start(ctx context.Context) (s *Server, err error) {
	apiserverBin, _, etcdBin, err := Binaries()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kubetest-")
	if err != nil {
		return nil, err
	}
	s = &Server{dir: dir}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Stop())
		}
	}()
	ports, err := freePorts(3)
	if err != nil {
		return s, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	if s.etcd, err = start(dir, "etcd", etcdBin,
		"--name=kubetest", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=kubetest="+peerURL, "--log-level=error",
	); err != nil {
		return s, err
	}
	if err := s.writeCredentials(); err != nil {
		return s, err
	}
	s.URL = "https://127.0.0.1:" + strconv.Itoa(ports[2])
	if s.apiserver, err = start(dir, "kube-apiserver", apiserverBin,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(ports[2]),
		"--endpoint-reconciler-type=none",
		"--tls-cert-file="+filepath.Join(dir, "serving.crt"), "--tls-private-key-file="+filepath.Join(dir, "serving.key"),
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://"+ServerName,
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/24",
		"--enable-priority-and-fairness=false",
		// As every distribution's API server does (kubeadm, k3s): DaemonSets
		// that act on their hosts are privileged.
		"--allow-privileged=true",
		"--profiling=false",
		"-v=0",
	); err != nil {
		return s, err
	}
	s.Config = &rest.Config{Host: s.URL, BearerToken: AdminToken, TLSClientConfig: rest.TLSClientConfig{CAData: s.CAPEM}}
	if s.Client, err = kubernetes.NewForConfig(s.Config); err != nil {
		return s, err
	}
	return s, s.waitReady(ctx)
}

// writeCredentials makes the CA, the serving certificate, the
// service-account key pair and the static token file.
func (s *Server) writeCredentials() error {
	ca, err := pki.LoadOrCreate(filepath.Join(s.dir, "ca"), "kubetest CA")
	if err != nil {
		return err
	}
	s.CAPEM = ca.CertPEM
	cert, err := ca.Issue(pki.Request{
		CommonName: "kube-apiserver", DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", ServerName},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true, Validity: 24 * time.Hour,
	})
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return err
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	saDER, err := x509.MarshalPKCS8PrivateKey(sa)
	if err != nil {
		return err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"serving.crt": chain,
		"serving.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"sa.key":      pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: saDER}),
		"sa.pub":      pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
		"tokens.csv":  []byte(AdminToken + ",kubetest-admin,kubetest-admin-uid,\"system:masters\"\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(s.dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// waitReady polls /readyz until it answers 200, a process exits, or the
// start timeout passes.
func (s *Server) waitReady(ctx context.Context) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		for _, p := range []*proc{s.etcd, s.apiserver} {
			select {
			case err := <-p.done:
				p.done <- err
				return fmt.Errorf("%s exited while starting (%v): %s", p.name, err, tail(p.log))
			default:
			}
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+AdminToken)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("kube-apiserver not ready within %s: %s", startTimeout, tail(s.apiserver.log))
}

// Kubeconfig returns a kubeconfig for the server with the given bearer
// token (AdminToken for the admin).
func (s *Server) Kubeconfig(token string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: s.URL, CertificateAuthorityData: s.CAPEM}
	cfg.AuthInfos["kubetest"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "kubetest"}
	cfg.CurrentContext = "kubetest"
	return clientcmd.Write(*cfg)
}

// Stop ends kube-apiserver, then etcd (the API server's shutdown hangs
// when etcd goes first), and removes the data.
func (s *Server) Stop() error {
	var errs []error
	for _, p := range []*proc{s.apiserver, s.etcd} {
		if p != nil {
			errs = append(errs, p.stop())
		}
	}
	if s.dir != "" {
		errs = append(errs, os.RemoveAll(s.dir))
	}
	return errors.Join(errs...)
}

// start runs bin with args, logging to dir/name.log.
func start(dir, name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan error, 1), log: logPath}
	// Wait's result is kept in done for whoever looks first: waitReady
	// (an early exit) or stop.
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

// stop sends SIGTERM and, after a grace period, SIGKILL.
func (p *proc) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(15 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s did not stop on SIGTERM within 15s", p.name)
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tail returns the end of a log file.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	s := string(b)
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return strings.TrimSpace(s)
}

// APIServerPID returns kube-apiserver's process ID, for CPU accounting.
func (s *Server) APIServerPID() int { return s.apiserver.cmd.Process.Pid }

// ForTest starts a Server for one test, stops it when the test ends, and
// returns it with a kubeconfig for AdminToken.
func ForTest(t testing.TB) (*Server, []byte) {
	t.Helper()
	s, err := Start(t.Context())
	if err != nil {
		t.Fatalf("real kube-apiserver: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	kc, err := s.Kubeconfig(AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	return s, kc
}
