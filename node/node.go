package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/internal/pki"
)

// Node is the daemon of one host.
type Node struct {
	cfg     Config
	log     *slog.Logger
	lock    *os.File
	ca      *pki.CA
	group   *consensus.Group
	api     *apiServer
	apiLn   net.Listener
	ctlLn   net.Listener
	reg     *prometheus.Registry
	started time.Time
}

// New validates cfg, takes the data dir, opens the stores and binds the API
// and control sockets. It starts no goroutines; Run does.
func New(cfg Config, logger *slog.Logger) (n *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n = &Node{cfg: cfg, log: logger.With("component", "node", "node", cfg.Name, "site", cfg.Site), started: time.Now()}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.close())
		}
	}()
	if err = os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return n, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	if err = os.Chmod(cfg.DataDir, 0o700); err != nil {
		return n, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	if n.lock, err = lockDir(cfg.DataDir); err != nil {
		return n, err
	}
	if n.ca, err = pki.LoadOrCreate(filepath.Join(cfg.DataDir, "pki"), "Outpost mesh CA"); err != nil {
		return n, err
	}
	gcfg := consensus.DefaultConfig()
	gcfg.ID = cfg.Name
	gcfg.Dir = filepath.Join(cfg.DataDir, "consensus")
	gcfg.Bootstrap = true
	gcfg.Logger = logger
	// One member until mesh networking joins others: an in-memory
	// transport with no peers.
	_, gcfg.Transport = raft.NewInmemTransport(raft.ServerAddress(cfg.Name))
	if n.group, err = consensus.New(gcfg, CoreKinds()); err != nil {
		return n, err
	}
	n.reg = prometheus.NewRegistry()
	n.reg.MustRegister(n.group.Collector())
	n.api = newAPIServer(n.group, &authenticator{store: n.group.Store(), now: time.Now}, n.log.With("component", "api"))
	if n.apiLn, err = net.Listen("tcp", cfg.APIAddr); err != nil {
		return n, fmt.Errorf("--api-addr %s: %w", cfg.APIAddr, err)
	}
	if n.ctlLn, err = listenControl(filepath.Join(cfg.DataDir, SocketName)); err != nil {
		return n, err
	}
	return n, nil
}

// lockDir takes an exclusive lock on the data dir, so two daemons never
// share one.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("--data-dir %s is in use by another outpost node; stop it or choose another --data-dir", dir)
	}
	return f, nil
}

// APIAddr returns the admin API's bound address.
func (n *Node) apiAddr() string {
	if n.apiLn == nil {
		return ""
	}
	return n.apiLn.Addr().String()
}

// APIURL returns the admin API's base URL.
func (n *Node) APIURL() string { return "https://" + n.apiAddr() }

// Group returns the node's Raft group member.
func (n *Node) Group() *consensus.Group { return n.group }

func (n *Node) role() string {
	if n.cfg.Site == "hub" {
		return "hub"
	}
	return "edge"
}

// Run serves until ctx is done, then stops the servers, hands off Raft
// leadership when it can, and closes everything.
func (n *Node) Run(ctx context.Context) (err error) {
	defer func() { err = errors.Join(err, n.close()) }()
	cert, err := n.servingCert()
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", n.serveReady)
	mux.Handle("GET /metrics", n.metricsHandler())
	n.api.register(mux)

	// Servers stop before the group so no request outlives the store.
	srvCtx, stopServers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServers()
	apiSrv := &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return srvCtx },
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	ctlSrv := &http.Server{Handler: n.controlHandler(), ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return srvCtx }}

	groupCtx, stopGroup := context.WithCancel(context.WithoutCancel(ctx))
	defer stopGroup()
	eg, egCtx := errgroup.WithContext(ctx)
	eg.Go(func() error { return n.group.Run(groupCtx) })
	eg.Go(func() error { return serve(apiSrv.ServeTLS(n.apiLn, "", "")) })
	eg.Go(func() error { return serve(ctlSrv.Serve(n.ctlLn)) })
	eg.Go(func() error { return n.runMember(egCtx) })
	n.log.Info("node started", "api", n.APIURL(), "data_dir", n.cfg.DataDir, "version", BuildVersion())

	<-egCtx.Done()
	n.log.Info("shutting down")
	stopServers()
	shutCtx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
	defer cancel()
	err = errors.Join(apiSrv.Shutdown(shutCtx), ctlSrv.Shutdown(shutCtx))
	stopGroup()
	if werr := eg.Wait(); werr != nil && !errors.Is(werr, context.Canceled) {
		err = errors.Join(err, werr)
	}
	return err
}

// serve treats a server's normal close as success.
func serve(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// servingCert issues the admin API's certificate from the node CA, for
// localhost, the host name and the bound address.
func (n *Node) servingCert() (tls.Certificate, error) {
	host, _, _ := net.SplitHostPort(n.cfg.APIAddr)
	names := []string{"localhost", n.cfg.Name}
	if h, err := os.Hostname(); err == nil {
		names = append(names, strings.ToLower(h))
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		ips = append(ips, ip)
	} else if host != "" && ip == nil {
		names = append(names, host)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if ipn, ok := a.(*net.IPNet); ok {
					ips = append(ips, ipn.IP)
				}
			}
		}
	}
	return n.ca.Issue(pki.Request{CommonName: n.cfg.Name, DNSNames: names, IPs: ips, Server: true, Validity: 365 * 24 * time.Hour})
}

// serveReady is 200 once this member has a leader and a healthy store.
func (n *Node) serveReady(w http.ResponseWriter, _ *http.Request) {
	st := n.group.Status()
	switch {
	case n.group.Healthy() != nil:
		http.Error(w, "state store failed: "+n.group.Healthy().Error(), http.StatusServiceUnavailable)
	case st.LeaderID == "":
		http.Error(w, "no raft leader", http.StatusServiceUnavailable)
	default:
		_, _ = w.Write([]byte("ok\n"))
	}
}

func (n *Node) close() error {
	var errs []error
	for _, ln := range []net.Listener{n.apiLn, n.ctlLn} {
		if ln != nil {
			if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	if n.lock != nil {
		errs = append(errs, n.lock.Close())
		n.lock = nil
	}
	return errors.Join(errs...)
}
