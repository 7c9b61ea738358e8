package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/outpost-mesh/outpost/images/registry"
	"github.com/outpost-mesh/outpost/images/store"
)

// manifestAccept is the Accept header of manifest requests: every
// manifest type the store keeps.
var manifestAccept = strings.Join([]string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}, ", ")

// HTTPTierConfig configures an HTTPTier.
type HTTPTierConfig struct {
	// Name identifies the tier ("hub", or the peer node's name).
	Name string
	// URL is the base URL of the other node's registry handler, e.g.
	// "https://hub.example:8443"; requests go to URL + "/v2/...".
	URL string
	// Client sends the requests. Nil: a client with a 10 s connect and
	// response-header timeout (bodies are bounded by the chain's idle
	// timeout instead). The lead can give it a Transport that dials over
	// a QUIC stream.
	Client *http.Client
	// Prepare, if set, adjusts each request before it is sent (e.g. adds
	// the hub's pull credentials).
	Prepare func(r *http.Request) error
}

// HTTPTier is a Tier that speaks the OCI pull API to another Outpost
// node's registry handler: a site peer's, or the hub's (tier 2). Every
// request carries ?ns=<ns>, so the other node answers for the same
// upstream registry (ns "" is the hub's own registry).
type HTTPTier struct {
	cfg  HTTPTierConfig
	base *url.URL
	c    *http.Client
}

var _ Tier = (*HTTPTier)(nil)

// NewHTTPTier validates cfg and returns the tier.
func NewHTTPTier(cfg HTTPTierConfig) (*HTTPTier, error) {
	if cfg.Name == "" {
		return nil, errors.New("images fetch: HTTP tier: Name is required")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("images fetch: HTTP tier %s: URL %q must be http(s)://host[:port]", cfg.Name, cfg.URL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c := cfg.Client
	if c == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = 10 * time.Second
		c = &http.Client{Transport: tr}
	}
	return &HTTPTier{cfg: cfg, base: u, c: c}, nil
}

// Name returns the configured name.
func (t *HTTPTier) Name() string { return t.cfg.Name }

// do sends a GET for path (under /v2/) with ns.
func (t *HTTPTier) do(ctx context.Context, ns, path string, query url.Values, hdr http.Header) (*http.Response, error) {
	u := *t.base
	u.Path += "/v2/" + path
	if query == nil {
		query = url.Values{}
	}
	query.Set("ns", ns)
	u.RawQuery = query.Encode()
	return t.get(ctx, u.String(), hdr)
}

func (t *HTTPTier) get(ctx context.Context, u string, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if t.cfg.Prepare != nil {
		if err := t.cfg.Prepare(req); err != nil {
			return nil, fmt.Errorf("%s: prepare request: %w", t.cfg.Name, err)
		}
	}
	resp, err := t.c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.cfg.Name, err)
	}
	return resp, nil
}

// Blob asks for d from offset with a Range request. A 200 answer to a
// Range (a peer whose copy is still arriving and has no size yet) is
// skipped to offset.
func (t *HTTPTier) Blob(ctx context.Context, ns, repo string, d digest.Digest, offset int64) (io.ReadCloser, int64, error) {
	hdr := http.Header{}
	if offset > 0 {
		hdr.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := t.do(ctx, ns, repo+"/blobs/"+d.String(), nil, hdr)
	if err != nil {
		return nil, 0, err
	}
	body, total, err := rangeBody(t.cfg.Name, resp, offset, registry.ErrBlobUnknown)
	if err != nil {
		return nil, 0, err
	}
	if v := resp.Header.Get(registry.MarksHeader); v != "" {
		// Marks this node cannot use are left out: the chain then holds
		// the bytes until the whole blob is verified.
		if marks, merr := store.ParseMarks(v); merr == nil {
			return markedBody{ReadCloser: body, marks: marks}, total, nil
		}
	}
	return body, total, nil
}

// markedBody is a blob body that came with its marks.
type markedBody struct {
	io.ReadCloser
	marks []byte
}

func (b markedBody) Marks() []byte { return b.marks }

// rangeBody checks a blob response to a request from offset and returns
// the body from offset and the blob's total size (-1 if unknown).
func rangeBody(tier string, resp *http.Response, offset int64, notFound error) (io.ReadCloser, int64, error) {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != offset {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("%s: answered Range bytes=%d- with Content-Range %q", tier, offset, resp.Header.Get("Content-Range"))
		}
		return resp.Body, total, nil
	case http.StatusOK:
		total := resp.ContentLength
		if offset > 0 {
			if total >= 0 && total < offset {
				resp.Body.Close()
				return nil, 0, fmt.Errorf("%s: the whole blob is %d bytes, less than the offset %d", tier, total, offset)
			}
			if _, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
				resp.Body.Close()
				return nil, 0, fmt.Errorf("%s: skip to offset %d: %w", tier, offset, err)
			}
		}
		return resp.Body, total, nil
	}
	defer resp.Body.Close()
	return nil, 0, responseError(tier, resp, notFound)
}

// parseContentRange reads "bytes <start>-<end>/<total or *>".
func parseContentRange(v string) (start, total int64, err error) {
	spec, ok := strings.CutPrefix(v, "bytes ")
	rng, size, ok2 := strings.Cut(spec, "/")
	first, _, ok3 := strings.Cut(rng, "-")
	if !ok || !ok2 || !ok3 {
		return 0, 0, fmt.Errorf("malformed Content-Range %q", v)
	}
	if start, err = strconv.ParseInt(first, 10, 64); err != nil {
		return 0, 0, err
	}
	if size == "*" {
		return start, -1, nil
	}
	total, err = strconv.ParseInt(size, 10, 64)
	return start, total, err
}

// Manifest fetches a manifest by tag or digest, at most
// store.MaxManifestSize bytes.
func (t *HTTPTier) Manifest(ctx context.Context, ns, repo, reference string) (registry.Manifest, error) {
	resp, err := t.do(ctx, ns, repo+"/manifests/"+reference, nil, http.Header{"Accept": {manifestAccept}})
	if err != nil {
		return registry.Manifest{}, err
	}
	return readManifest(t.cfg.Name, resp)
}

// readManifest reads a manifest response, bounded by MaxManifestSize.
func readManifest(tier string, resp *http.Response) (registry.Manifest, error) {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return registry.Manifest{}, responseError(tier, resp, registry.ErrManifestUnknown)
	}
	if resp.ContentLength > store.MaxManifestSize {
		return registry.Manifest{}, fmt.Errorf("%w: %s announced %d bytes", registry.ErrManifestTooLarge, tier, resp.ContentLength)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, store.MaxManifestSize+1))
	if err != nil {
		return registry.Manifest{}, fmt.Errorf("%s: read manifest: %w", tier, err)
	}
	if len(body) > store.MaxManifestSize {
		return registry.Manifest{}, fmt.Errorf("%w: %s served more than %d bytes", registry.ErrManifestTooLarge, tier, store.MaxManifestSize)
	}
	m := registry.Manifest{MediaType: resp.Header.Get("Content-Type"), Body: body}
	if d, err := store.ParseDigest(resp.Header.Get("Docker-Content-Digest")); err == nil {
		m.Digest = d
	}
	return m, nil
}

// maxTagPages bounds how many pages of a tag list are followed.
const maxTagPages = 1000

// Tags lists the repository's tags, following the Link header's pages.
func (t *HTTPTier) Tags(ctx context.Context, ns, repo string) ([]string, error) {
	resp, err := t.do(ctx, ns, repo+"/tags/list", nil, nil)
	var tags []string
	for page := 0; ; page++ {
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			err := responseError(t.cfg.Name, resp, registry.ErrNameUnknown)
			resp.Body.Close()
			return nil, err
		}
		var list struct {
			Tags []string `json:"tags"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&list)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: read tag list: %w", t.cfg.Name, err)
		}
		tags = append(tags, list.Tags...)
		next := nextLink(resp)
		if next == "" || page >= maxTagPages {
			return tags, nil
		}
		resp, err = t.get(ctx, next, nil)
	}
}

// nextLink returns the absolute URL of a Link: <...>; rel="next" header.
func nextLink(resp *http.Response) string {
	link := resp.Header.Get("Link")
	if link == "" {
		return ""
	}
	start, end := strings.Index(link, "<"), strings.Index(link, ">")
	if start < 0 || end < start || !strings.Contains(link[end:], `rel="next"`) {
		return ""
	}
	u, err := resp.Request.URL.Parse(link[start+1 : end])
	if err != nil {
		return ""
	}
	return u.String()
}
