package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/outpost-mesh/outpost/internal/pki"
	"github.com/outpost-mesh/outpost/transport"
)

// joinRequest is what a new node sends on a KindJoin stream.
type joinRequest struct {
	TokenID    string `json:"tokenID"`
	Secret     string `json:"secret"`
	Name       string `json:"name"`
	Site       string `json:"site"`
	CSR        []byte `json:"csr"`
	QUICAddr   string `json:"quicAddr"`
	GossipAddr string `json:"gossipAddr"`
}

// joinResponse is the hub's answer: a certificate and what the node needs
// to find its site, or why not.
type joinResponse struct {
	Error string `json:"error,omitempty"`
	// Retry marks an Error the hub expects to pass (its leadership moved,
	// or a write failed): the node asks again, within joinPatience.
	Retry         bool     `json:"retry,omitempty"`
	Redirect      string   `json:"redirect,omitempty"`
	Site          string   `json:"site,omitempty"`
	Cert          []byte   `json:"cert,omitempty"`
	CA            []byte   `json:"ca,omitempty"`
	CAKey         []byte   `json:"caKey,omitempty"`
	GossipKey     []byte   `json:"gossipKey,omitempty"`
	BootstrapSite bool     `json:"bootstrapSite,omitempty"`
	GossipSeeds   []string `json:"gossipSeeds,omitempty"`
	HubAddrs      []string `json:"hubAddrs,omitempty"`
}

// ParseJoinToken splits a token "<id>.<secret>.<ca-fingerprint>".
func ParseJoinToken(token string) (id, secret, fingerprint string, err error) {
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || len(parts[2]) != 64 {
		return "", "", "", errors.New("--token is malformed: expected <id>.<secret>.<ca-fingerprint> as printed by `outpost token create`")
	}
	return parts[0], parts[1], parts[2], nil
}

// joinSite is the site a joining node asks for: --site when given, else
// whatever its token says.
func joinSite(cfg Config) string {
	if cfg.SiteSet {
		return cfg.Site
	}
	return ""
}

// maxJoinRedirects bounds how often a join follows "ask the leader".
const maxJoinRedirects = 3

// Join makes this node a member of the mesh when it is not one yet: it
// dials the hub given by --join, pins it by the CA fingerprint in --token,
// sends a certificate request and stores the identity it gets back. A node
// that already has an identity needs no token and Join does nothing. On
// any error nothing is written.
func Join(ctx context.Context, cfg Config, logger *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	id, err := loadIdentity(cfg.DataDir)
	if err != nil || id != nil {
		if id != nil && cfg.Token != "" {
			logger.Info("already a member of the mesh; --token is not needed and was ignored", "node", id.Name, "site", id.Site)
		}
		return err
	}
	if cfg.JoinAddr == "" {
		return nil // a new hub bootstraps in New
	}
	if cfg.Token == "" {
		return fmt.Errorf("--join %s needs --token (create one on the hub with `outpost token create --site %s`)", cfg.JoinAddr, cfg.Site)
	}
	tokenID, secret, fp, err := ParseJoinToken(cfg.Token)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cfg.Name}}, key)
	if err != nil {
		return err
	}
	req := joinRequest{
		TokenID: tokenID, Secret: secret, Name: cfg.Name, Site: joinSite(cfg),
		CSR:        pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}),
		QUICAddr:   cfg.quicAdvertise(),
		GossipAddr: cfg.gossipAdvertise(),
	}
	resp, err := askToJoin(ctx, cfg, fp, &req, logger)
	if err != nil {
		return err
	}
	if resp.Error != "" {
		return fmt.Errorf("join refused by the hub: %s", resp.Error)
	}
	if resp.Redirect != "" {
		return fmt.Errorf("join %s: the hub has no stable leader yet; retry in a moment", cfg.JoinAddr)
	}
	block, _ := pem.Decode(resp.Cert)
	if block == nil {
		return errors.New("join: the hub sent no certificate")
	}
	cert := &tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}
	id = &identity{
		Name: cfg.Name, Site: resp.Site, Role: roleOf(resp.Site), dir: identityDir(cfg.DataDir),
		BootstrapSite: resp.BootstrapSite, GossipKey: resp.GossipKey, GossipSeeds: resp.GossipSeeds, HubAddrs: resp.HubAddrs,
	}
	if err := id.setCerts(cert, resp.CA); err != nil {
		return err
	}
	if len(resp.CAKey) > 0 {
		if _, err := pki.Install(caDir(cfg.DataDir), resp.CA, resp.CAKey); err != nil {
			return fmt.Errorf("store mesh CA: %w", err)
		}
	}
	if err := id.save(); err != nil {
		return err
	}
	logger.Info("joined the mesh", "node", id.Name, "site", id.Site, "role", id.Role, "bootstrap_site", id.BootstrapSite)
	return nil
}

// joinPatience is how long Join keeps retrying a hub it cannot reach (down,
// restarting, or refusing handshakes while many nodes join at once).
const joinPatience = 2 * time.Minute

// askToJoin sends the join request to the hub, following redirects to its
// leader and retrying, with jittered backoff for up to joinPatience, while
// the hub cannot be reached or its answer asks to retry. Any other answer,
// a refusal included, is final.
func askToJoin(ctx context.Context, cfg Config, fp string, req *joinRequest, logger *slog.Logger) (joinResponse, error) {
	local := ""
	if ip := net.ParseIP(cfg.BindAddr); ip != nil && !ip.IsUnspecified() {
		local = cfg.BindAddr
	}
	deadline := time.Now().Add(joinPatience)
	backoff := 250 * time.Millisecond
	addr := cfg.JoinAddr
	for attempt, redirects := 1, 0; ; attempt++ {
		resp, err := requestJoin(ctx, local, addr, fp, req)
		switch {
		case err == nil && resp.Redirect != "" && redirects < maxJoinRedirects:
			logger.Info("hub member is not the leader; asking the leader", "leader", resp.Redirect)
			addr = resp.Redirect
			redirects++
			continue
		case err == nil && resp.Retry && time.Now().Before(deadline):
			addr, redirects = cfg.JoinAddr, 0 // the leader may have moved: start from the given hub
			err = errors.New(resp.Error)
		case err == nil:
			return resp, nil
		case errors.Is(err, transport.ErrFingerprintMismatch) || ctx.Err() != nil || time.Now().After(deadline):
			return resp, fmt.Errorf("join %s: %w", addr, err)
		}
		wait := backoff/2 + mrand.N(backoff)
		logger.Info("hub not reachable, or asks to retry; retrying", "hub", addr, "attempt", attempt, "in", wait.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return resp, fmt.Errorf("join %s: %w", addr, ctx.Err())
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// requestJoin sends one join request from the local IP local ("" lets the
// system choose) and reads the answer.
func requestJoin(ctx context.Context, local, addr, fingerprint string, req *joinRequest) (joinResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, _, err := transport.DialPinnedFrom(ctx, local, addr, fingerprint, transport.KindJoin)
	if err != nil {
		return joinResponse{}, err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(30 * time.Second))
	if err := writeMessage(s, req); err != nil {
		return joinResponse{}, err
	}
	var resp joinResponse
	if err := readMessage(s, &resp, maxMessageBytes); err != nil {
		return joinResponse{}, fmt.Errorf("read answer: %w", err)
	}
	return resp, nil
}

func roleOf(site string) string {
	if site == HubSite {
		return RoleHub
	}
	return RoleEdge
}

// Site roles.
const (
	HubSite  = "hub"
	RoleHub  = "hub"
	RoleEdge = "edge"
)

// splitHostPort is net.SplitHostPort for addresses known to be valid.
func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}
