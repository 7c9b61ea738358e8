package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/node"
)

// tableAccept asks the API for server-side printed tables.
const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io, application/json"

// client talks to a hub's admin API.
type client struct {
	server    string
	token     string
	http      *http.Client
	resources []resource
}

// resource is one kind as discovery describes it.
type resource struct {
	Group, Version, Plural, Singular, Kind string
	Namespaced                             bool
	ShortNames                             []string
}

func (r *resource) apiVersion() string { return r.Group + "/" + r.Version }

// path returns the API path of the collection, or of one object.
func (r *resource) path(namespace, name string) string {
	p := "/apis/" + r.Group + "/" + r.Version
	if r.Namespaced && namespace != "" {
		p += "/namespaces/" + url.PathEscape(namespace)
	}
	p += "/" + r.Plural
	if name != "" {
		p += "/" + url.PathEscape(name)
	}
	return p
}

func newClient(g *globals) (*client, error) {
	path := g.credentialPath()
	creds, err := node.LoadCredentials(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if creds.CA != "" && !pool.AppendCertsFromPEM([]byte(creds.CA)) {
		return nil, fmt.Errorf("%s: ca is not a PEM certificate; copy <data-dir>/admin.yaml from a hub member again", path)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &client{
		server: strings.TrimRight(creds.Server, "/"),
		token:  creds.Token,
		http:   &http.Client{Transport: tr},
	}, nil
}

// apiError is a failed call, printed as kubectl prints it.
type apiError struct {
	status metav1.Status
}

func (e *apiError) Error() string {
	msg := e.status.Message
	if msg == "" {
		msg = http.StatusText(int(e.status.Code))
	}
	if e.status.Reason != "" {
		msg += " (" + string(e.status.Reason) + ")"
	}
	if strings.Contains(e.status.Message, "`outpost ") {
		return msg // the server said what to do next
	}
	return msg + hint(e.status)
}

// hint says what to do next for the errors an operator meets most.
func hint(s metav1.Status) string {
	switch s.Reason {
	case metav1.StatusReasonUnauthorized:
		return "; check the token in your --config file"
	case metav1.StatusReasonForbidden:
		return "; your token's role does not allow this: ask an admin for a token with the role it needs"
	case metav1.StatusReasonConflict:
		return "" // the server's message already says to retry on the latest version
	case metav1.StatusReasonAlreadyExists:
		return "; change it with `outpost apply -f`, or pick another name"
	case metav1.StatusReasonInvalid:
		return "; fix the fields named and try again"
	case metav1.StatusReasonNotFound:
		return "; list what exists with `outpost get`"
	case metav1.StatusReasonServiceUnavailable:
		return "; retry in a moment"
	}
	return ""
}

// do sends a request and returns the body of a 2xx answer, or an error.
func (c *client) do(ctx context.Context, method, path string, body []byte, contentType, accept string) ([]byte, error) {
	resp, err := c.send(ctx, method, path, body, contentType, accept)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, statusError(resp.StatusCode, b)
	}
	return b, nil
}

// send sends a request and returns the response of any status.
func (c *client) send(ctx context.Context, method, path string, body []byte, contentType, accept string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.server+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if accept == "" {
		accept = "application/json"
	}
	req.Header.Set("Accept", accept)
	resp, err := c.http.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) && !errors.Is(err, context.Canceled) {
			return nil, fmt.Errorf("cannot reach the hub at %s: %v; is `outpost node` running?", c.server, uerr.Err)
		}
		return nil, err
	}
	return resp, nil
}

func statusError(code int, body []byte) error {
	var s metav1.Status
	if json.Unmarshal(body, &s) != nil || s.Kind != "Status" {
		s = metav1.Status{Code: int32(code), Message: strings.TrimSpace(string(body))}
	}
	if s.Code == 0 {
		s.Code = int32(code)
	}
	return &apiError{status: s}
}

// discover loads the served resources once.
func (c *client) discover(ctx context.Context) error {
	if c.resources != nil {
		return nil
	}
	b, err := c.do(ctx, http.MethodGet, "/apis", nil, "", "")
	if err != nil {
		return err
	}
	var groups metav1.APIGroupList
	if err := json.Unmarshal(b, &groups); err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	c.resources = []resource{}
	for _, g := range groups.Groups {
		for _, v := range g.Versions {
			b, err := c.do(ctx, http.MethodGet, "/apis/"+v.GroupVersion, nil, "", "")
			if err != nil {
				return err
			}
			var list metav1.APIResourceList
			if err := json.Unmarshal(b, &list); err != nil {
				return fmt.Errorf("discovery of %s: %w", v.GroupVersion, err)
			}
			for _, r := range list.APIResources {
				if strings.Contains(r.Name, "/") {
					continue
				}
				c.resources = append(c.resources, resource{
					Group: g.Name, Version: v.Version, Plural: r.Name, Singular: r.SingularName,
					Kind: r.Kind, Namespaced: r.Namespaced, ShortNames: r.ShortNames,
				})
			}
		}
	}
	return nil
}

// resolve finds a resource by plural, singular, short name or kind, with an
// optional ".group" suffix, case-insensitively.
func (c *client) resolve(ctx context.Context, name string) (*resource, error) {
	if err := c.discover(ctx); err != nil {
		return nil, err
	}
	name = strings.ToLower(name)
	base, group, _ := strings.Cut(name, ".")
	var names []string
	for i := range c.resources {
		r := &c.resources[i]
		names = append(names, r.Plural)
		if group != "" && r.Group != group {
			continue
		}
		if base == r.Plural || base == r.Singular || base == strings.ToLower(r.Kind) {
			return r, nil
		}
		for _, s := range r.ShortNames {
			if base == s {
				return r, nil
			}
		}
	}
	return nil, fmt.Errorf("the server has no resource type %q; known types: %s", name, strings.Join(names, ", "))
}

// resolveKind finds a resource by apiVersion and kind, as in a manifest.
func (c *client) resolveKind(ctx context.Context, apiVersion, kind string) (*resource, error) {
	if err := c.discover(ctx); err != nil {
		return nil, err
	}
	for i := range c.resources {
		r := &c.resources[i]
		if r.apiVersion() == apiVersion && r.Kind == kind {
			return r, nil
		}
	}
	return nil, fmt.Errorf("the server does not serve kind %q in apiVersion %q", kind, apiVersion)
}

// requestTimeout bounds one non-watch call.
const requestTimeout = 30 * time.Second

// connect loads the credentials and resolves kind: the start of most verbs.
func connect(ctx context.Context, g *globals, kind string) (*client, *resource, error) {
	c, err := newClient(g)
	if err != nil {
		return nil, nil, err
	}
	r, err := c.resolve(ctx, kind)
	if err != nil {
		return nil, nil, err
	}
	return c, r, nil
}
