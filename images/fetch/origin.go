package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	"github.com/outpost-mesh/outpost/images/registry"
)

// OriginConfig configures the Origin tier.
type OriginConfig struct {
	// Auth returns the credentials for registry ns (a host such as
	// "docker.io" or "registry.example.com:5000"); nil, or a nil result,
	// means anonymous. The node maps Registry/ClusterRegistry resources
	// onto it. It is called again when AuthTTL has passed or the registry
	// refused the credentials.
	Auth func(ns string) authn.Authenticator
	// Insecure reports whether ns is reached over plain HTTP. Nil: HTTPS,
	// except where go-containerregistry's name package already picks
	// HTTP (localhost, loopback and private addresses).
	Insecure func(ns string) bool
	// Transport is the base HTTP transport. Nil: a clone of
	// http.DefaultTransport with a 10 s dial and 30 s response-header
	// timeout.
	Transport http.RoundTripper
	// AuthTTL is how long an authenticated session with a repository
	// (the ping and token handshake) is reused.
	AuthTTL time.Duration
	// Logger receives the tier's logs. Nil discards.
	Logger *slog.Logger
	// Now is the clock for AuthTTL. Nil means time.Now.
	Now func() time.Time
}

// Origin is the Tier of origin registries (Docker Hub, ghcr.io, a private
// registry), reached with go-containerregistry: the namespace ns names the
// registry, Docker Hub's "docker.io" is reached at index.docker.io and a
// one-component name gets "library/" (the name package's conventions).
// The hub's own registry (ns "") is not an origin: ErrNotServed.
type Origin struct {
	cfg  OriginConfig
	base http.RoundTripper
	log  *slog.Logger
	now  func() time.Time

	mu       sync.Mutex
	sessions map[string]*session
}

var _ Tier = (*Origin)(nil)

// maxSessions bounds the cache of authenticated sessions.
const maxSessions = 1024

// session is an authenticated transport for one repository.
type session struct {
	repo    name.Repository
	client  *http.Client
	rt      http.RoundTripper
	expires time.Time
}

// NewOrigin returns the origin tier.
func NewOrigin(cfg OriginConfig) (*Origin, error) {
	if cfg.AuthTTL < 0 {
		return nil, fmt.Errorf("images fetch: origin: AuthTTL %s must not be negative", cfg.AuthTTL)
	}
	if cfg.AuthTTL == 0 {
		cfg.AuthTTL = 5 * time.Minute
	}
	base := cfg.Transport
	if base == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr.ResponseHeaderTimeout = 30 * time.Second
		base = tr
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Origin{cfg: cfg, base: base, log: logger.With("component", "images_origin"), now: now, sessions: map[string]*session{}}, nil
}

// Name returns "origin".
func (o *Origin) Name() string { return "origin" }

// Repository returns the go-containerregistry name of ns/repo, as the
// tier reaches it: "docker.io" + "nginx" is index.docker.io/library/nginx.
func (o *Origin) Repository(ns, repo string) (name.Repository, error) {
	if ns == "" {
		return name.Repository{}, fmt.Errorf("%w: the hub's own registry has no origin", ErrNotServed)
	}
	var opts []name.Option
	if o.cfg.Insecure != nil && o.cfg.Insecure(ns) {
		opts = append(opts, name.Insecure)
	}
	r, err := name.NewRepository(ns+"/"+repo, opts...)
	if err != nil {
		return name.Repository{}, fmt.Errorf("%w: %s/%s: %w", registry.ErrNameInvalid, ns, repo, err)
	}
	return r, nil
}

// session returns the authenticated session for ns/repo, doing the ping
// and token handshake when there is none or it expired.
func (o *Origin) session(ctx context.Context, ns, repo string) (*session, error) {
	key := ns + "/" + repo
	now := o.now()
	o.mu.Lock()
	if s, ok := o.sessions[key]; ok && now.Before(s.expires) {
		o.mu.Unlock()
		return s, nil
	}
	o.mu.Unlock()
	r, err := o.Repository(ns, repo)
	if err != nil {
		return nil, err
	}
	var auth authn.Authenticator = authn.Anonymous
	if o.cfg.Auth != nil {
		if a := o.cfg.Auth(ns); a != nil {
			auth = a
		}
	}
	rt, err := transport.NewWithContext(ctx, r.Registry, auth, o.base, []string{r.Scope(transport.PullScope)})
	if err != nil {
		return nil, classifyUpstream("origin "+ns, err, registry.ErrNameUnknown)
	}
	s := &session{repo: r, rt: rt, expires: now.Add(o.cfg.AuthTTL),
		client: &http.Client{Transport: rt, CheckRedirect: checkRedirect}}
	o.mu.Lock()
	if len(o.sessions) >= maxSessions {
		for k, old := range o.sessions {
			if !now.Before(old.expires) || len(o.sessions) >= maxSessions {
				delete(o.sessions, k)
			}
		}
	}
	o.sessions[key] = s
	o.mu.Unlock()
	return s, nil
}

// forget drops a session whose credentials the registry refused, so the
// next request asks Auth again.
func (o *Origin) forget(ns, repo string, err error) {
	if errors.Is(err, registry.ErrDenied) || errors.Is(err, registry.ErrUnauthorized) {
		o.mu.Lock()
		delete(o.sessions, ns+"/"+repo)
		o.mu.Unlock()
	}
}

// checkRedirect refuses a redirect from a public host to a private,
// loopback or link-local address (a registry must not make the node
// fetch from its own network), as go-containerregistry's own client does.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	from, to := via[0].URL.Hostname(), req.URL.Hostname()
	if from == to {
		return nil
	}
	if ip, err := netip.ParseAddr(to); err == nil && (ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast()) {
		if fip, err := netip.ParseAddr(from); err != nil || !(fip.IsPrivate() || fip.IsLoopback()) {
			return fmt.Errorf("redirect from %s to the private address %s refused", from, to)
		}
	}
	return nil
}

func (o *Origin) url(s *session, kind, ref string) string {
	u := url.URL{Scheme: s.repo.Scheme(), Host: s.repo.RegistryStr(), Path: "/v2/" + s.repo.RepositoryStr() + "/" + kind + "/" + ref}
	return u.String()
}

// Blob fetches d from offset (a Range request; a registry that ignores
// Range is skipped to offset). Redirects to blob storage are followed.
func (o *Origin) Blob(ctx context.Context, ns, repo string, d digest.Digest, offset int64) (io.ReadCloser, int64, error) {
	s, err := o.session(ctx, ns, repo)
	if err != nil {
		return nil, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.url(s, "blobs", d.String()), nil)
	if err != nil {
		return nil, 0, err
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("origin %s: %w", ns, err)
	}
	body, total, err := rangeBody("origin "+ns, resp, offset, registry.ErrBlobUnknown)
	if err != nil {
		o.forget(ns, repo, err)
	}
	return body, total, err
}

// Manifest fetches a manifest by tag or digest (at most 4 MiB).
func (o *Origin) Manifest(ctx context.Context, ns, repo, reference string) (registry.Manifest, error) {
	s, err := o.session(ctx, ns, repo)
	if err != nil {
		return registry.Manifest{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.url(s, "manifests", reference), nil)
	if err != nil {
		return registry.Manifest{}, err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := s.client.Do(req)
	if err != nil {
		return registry.Manifest{}, fmt.Errorf("origin %s: %w", ns, err)
	}
	m, err := readManifest("origin "+ns, resp)
	if err != nil {
		o.forget(ns, repo, err)
	}
	return m, err
}

// Tags lists the repository's tags with remote.List (which follows the
// pages).
func (o *Origin) Tags(ctx context.Context, ns, repo string) ([]string, error) {
	s, err := o.session(ctx, ns, repo)
	if err != nil {
		return nil, err
	}
	tags, err := remote.List(s.repo, remote.WithContext(ctx), remote.WithTransport(s.rt))
	if err != nil {
		err = classifyUpstream("origin "+ns, err, registry.ErrNameUnknown)
		o.forget(ns, repo, err)
		return nil, err
	}
	return tags, nil
}
