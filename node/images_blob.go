package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/outpost-mesh/outpost/images/fetch"
	"github.com/outpost-mesh/outpost/images/store"
	"github.com/outpost-mesh/outpost/transport"
)

// Blob streams (transport.KindBlob) carry plain HTTP/1.1: each stream is
// one connection of an http.Server that serves the OCI pull API, fed by
// the stream handler as the forwarded admin API is (connListener). The
// dialing side is an http.Transport whose DialContext opens a stream.
const (
	// blobDialTimeout bounds reaching a peer or hub member.
	blobDialTimeout = 5 * time.Second
	// peerHeaderTimeout bounds a peer's answer: it serves from its store.
	peerHeaderTimeout = 10 * time.Second
	// hubHeaderTimeout bounds the hub tier's answer, which may wait for
	// the origin's first byte.
	hubHeaderTimeout = 60 * time.Second
	// hubTierHost is the URL host of the hub tier; its dialer picks a hub
	// member.
	hubTierHost = "outpost-hub"
)

// authorizeBlobStream admits a KindBlob stream: hub members serve every
// mesh member (their tier is what sites read, and the transport has
// authenticated the certificate); other nodes serve their own site only.
func (n *Node) authorizeBlobStream(p transport.Peer) error {
	if n.id.Role == RoleHub || p.Site == n.id.Site {
		return nil
	}
	return fmt.Errorf("%s of site %s may not read blobs of site %s", p.Name, p.Site, n.id.Site)
}

// serveBlobStream hands an accepted KindBlob stream to the blob server and
// returns when the server is done with it.
func (c *imageCache) serveBlobStream(ctx context.Context, s *transport.Stream) {
	dc := &doneConn{Conn: s, done: make(chan struct{})}
	select {
	case c.blobLn.conns <- dc:
	case <-c.blobLn.closed:
		s.Close()
		return
	case <-ctx.Done():
		s.Close()
		return
	}
	select {
	case <-dc.done:
	case <-ctx.Done():
		s.Close()
	}
}

type streamPeerKey struct{}

// withStreamPeer puts the peer of a blob stream into its requests'
// context (http.Server.ConnContext).
func withStreamPeer(ctx context.Context, c net.Conn) context.Context {
	if dc, ok := c.(*doneConn); ok {
		if s, ok := dc.Conn.(*transport.Stream); ok {
			return context.WithValue(ctx, streamPeerKey{}, s.Peer())
		}
	}
	return ctx
}

// streamPeer is the node a blob-stream request came from.
func streamPeer(ctx context.Context) (transport.Peer, bool) {
	p, ok := ctx.Value(streamPeerKey{}).(transport.Peer)
	return p, ok && p.Name != ""
}

// blobHandler serves blob streams: the OCI pull API (store only for peers
// of this site; the full chain for sites asking a hub member), the blob
// index reports (site leader) and re-verification requests.
func (c *imageCache) blobHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /outpost/v1/holdings", c.index.serveLeaderOp(c.index.serveReportOp, maxHoldingsReport))
	mux.HandleFunc("POST /outpost/v1/claim", c.index.serveLeaderOp(c.agree.serveClaimOp, maxLeaderOp))
	mux.HandleFunc("POST /outpost/v1/tag", c.index.serveLeaderOp(c.agree.serveTagOp, maxLeaderOp))
	mux.HandleFunc("POST /outpost/v1/verify", c.serveVerify)
	mux.HandleFunc("GET "+contentPath, c.serveContent)
	mux.HandleFunc("POST /outpost/v1/imagestats", c.serveStatsPost) // images_sync.go
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		p, ok := streamPeer(r.Context())
		if !ok {
			http.Error(w, "blob streams are for mesh members", http.StatusForbidden)
			return
		}
		h, counter := http.Handler(c.peerAPI), &c.servedPeers
		if c.hub && p.Site != HubSite {
			h, counter = c.tierAPI, &c.servedSites
		}
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			w = &countingWriter{ResponseWriter: w, n: counter}
		}
		h.ServeHTTP(w, r)
	})
	return mux
}

// countingWriter counts the body bytes written through it.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Uint64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(uint64(n))
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush sends what is buffered.
func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// peerTiers makes the tiers that read other nodes over blob streams: one
// per site peer (by name, dialled at its gossiped QUIC address) and the
// hub tier (edge nodes).
type peerTiers struct {
	c       *imageCache
	client  *http.Client // to peers; the URL host is the node name
	hub     *http.Client // to the hub tier
	hubNext atomic.Int64 // the hub address that answered last

	mu    sync.Mutex
	tiers map[string]*fetch.HTTPTier

	verify chan verifyJob // peer copies to have re-verified
}

// verifyJob asks a peer to re-verify its copy of a digest.
type verifyJob struct {
	peer string
	d    digest.Digest
}

func newPeerTiers(c *imageCache) *peerTiers {
	p := &peerTiers{c: c, tiers: map[string]*fetch.HTTPTier{}, verify: make(chan verifyJob, 64)}
	p.client = &http.Client{Transport: &http.Transport{
		DialContext:           p.dialPeer,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: peerHeaderTimeout,
		DisableCompression:    true,
	}}
	p.hub = &http.Client{Transport: &http.Transport{
		DialContext:           p.dialHub,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: hubHeaderTimeout,
		DisableCompression:    true,
	}}
	return p
}

// tier returns the Tier of site peer name.
func (p *peerTiers) tier(name string) fetch.Tier {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.tiers[name]; ok {
		return t
	}
	t, err := fetch.NewHTTPTier(fetch.HTTPTierConfig{Name: name, URL: "http://" + name, Client: p.client})
	if err != nil { // a node name is a DNS subdomain, so a valid URL host
		p.c.log.Warn("peer tier", "peer", name, "err", err)
		return nil
	}
	if len(p.tiers) > 4096 {
		clear(p.tiers)
	}
	p.tiers[name] = t
	return t
}

// hubTier is the Tier of the hub: a hub member's full chain.
func (p *peerTiers) hubTier() (*fetch.HTTPTier, error) {
	return fetch.NewHTTPTier(fetch.HTTPTierConfig{Name: "hub", URL: "http://" + hubTierHost, Client: p.hub})
}

// dialPeer opens a blob stream to the site peer named by addr's host,
// checking that the node that answers is that peer.
func (p *peerTiers) dialPeer(ctx context.Context, _, addr string) (net.Conn, error) {
	name, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	quic := p.c.n.memberAddr(name)
	if quic == "" {
		quic = p.c.index.leaderAddr(name)
	}
	if quic == "" {
		return nil, fmt.Errorf("node %s is not a known member of site %s", name, p.c.n.id.Site)
	}
	ctx, cancel := context.WithTimeout(ctx, blobDialTimeout)
	defer cancel()
	s, err := p.c.n.ep.Dial(ctx, quic, transport.KindBlob)
	if err != nil {
		return nil, err
	}
	if got := s.Peer(); got.Name != name {
		s.Close()
		return nil, fmt.Errorf("%s answered as %s, not %s", quic, got, name)
	}
	return s, nil
}

// dialHub opens a blob stream to a hub member, starting with the one that
// answered last and trying the others in turn.
func (p *peerTiers) dialHub(ctx context.Context, _, _ string) (net.Conn, error) {
	id := p.c.n.id
	id.mu.RLock()
	addrs := append([]string(nil), id.HubAddrs...)
	id.mu.RUnlock()
	if len(addrs) == 0 {
		return nil, errors.New("no hub address known yet")
	}
	start := int(p.hubNext.Load())
	var errs []error
	for i := range addrs {
		j := (start + i) % len(addrs)
		dctx, cancel := context.WithTimeout(ctx, blobDialTimeout)
		s, err := p.c.n.ep.Dial(dctx, addrs[j], transport.KindBlob)
		cancel()
		if err == nil && s.Peer().Role != RoleHub {
			s.Close()
			err = fmt.Errorf("%s answered as %s, not a hub member", addrs[j], s.Peer())
		}
		if err == nil {
			p.hubNext.Store(int64(j))
			return s, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("reach the hub's image tier: %w", errors.Join(errs...))
}

// corrupt is fetch's OnCorrupt: a peer whose bytes failed verification is
// asked to re-verify its copy (and drops it if it is bad). A full queue
// drops the request: the chain has excluded that peer for this fetch, and
// the next corrupt read asks again.
func (p *peerTiers) corrupt(t fetch.Tier, d digest.Digest) {
	p.mu.Lock()
	known := p.tiers[t.Name()] == t
	p.mu.Unlock()
	if !known {
		return // the hub or the origin: the chain has moved on
	}
	select {
	case p.verify <- verifyJob{peer: t.Name(), d: d}:
	default:
	}
}

// runVerify sends the re-verification requests until ctx ends.
func (p *peerTiers) runVerify(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-p.verify:
			if err := p.askVerify(ctx, j); err != nil && ctx.Err() == nil {
				p.c.log.Warn("could not have a peer re-verify its copy", "peer", j.peer, "digest", j.d, "err", err)
			}
		}
	}
}

func (p *peerTiers) askVerify(ctx context.Context, j verifyJob) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	u := "http://" + j.peer + "/outpost/v1/verify?digest=" + url.QueryEscape(j.d.String())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	p.c.log.Info("peer re-verified its copy", "peer", j.peer, "digest", j.d, "result", strings.TrimSpace(string(b)))
	return nil
}

// serveVerify re-hashes this node's copy of a digest for a peer of the
// site that read bytes of it which failed verification, and deletes the
// copy if it does not match (the blob index follows through OnChange).
func (c *imageCache) serveVerify(w http.ResponseWriter, r *http.Request) {
	if p, ok := streamPeer(r.Context()); !ok || p.Site != c.n.id.Site {
		http.Error(w, "only peers of this site may ask for a re-verification", http.StatusForbidden)
		return
	}
	d, err := store.ParseDigest(r.URL.Query().Get("digest"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.verifyMu.Lock()
	defer c.verifyMu.Unlock()
	rd, err := c.store.Open(r.Context(), d)
	if errors.Is(err, store.ErrNotFound) {
		_, _ = io.WriteString(w, "absent\n")
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if rd.InProgress() {
		rd.Close()
		_, _ = io.WriteString(w, "in progress: verified at its commit\n")
		return
	}
	v := d.Verifier()
	_, err = io.Copy(v, rd)
	rd.Close()
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	case v.Verified():
		_, _ = io.WriteString(w, "intact\n")
	default:
		c.log.Warn("a stored blob failed re-verification; deleting it", "digest", d, "asked_by", r.Context().Value(streamPeerKey{}))
		if err := c.store.Delete(d); err != nil && !errors.Is(err, store.ErrNotFound) {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "corrupt: deleted\n")
	}
}
