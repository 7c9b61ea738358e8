package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/outpost-mesh/outpost/consensus"
)

// maxBodyBytes is the largest request body the admin API reads: room for
// the largest valid object (a task with 1 MiB of inline content), as
// Kubernetes allows 3 MiB.
const maxBodyBytes = 3 << 20

// apiServer serves the Kubernetes-style admin API over the object store.
type apiServer struct {
	group *consensus.Group
	store *consensus.Store
	reg   *consensus.Registry
	auth  *authenticator
	log   *slog.Logger
	table *tableConvertor
	// forward, when set, proxies a call that needs the leader to it; a
	// hub follower sets it.
	forward func(w http.ResponseWriter, r *http.Request)
	// onDelete, when set, runs before an object is deleted and may refuse.
	onDelete func(ctx context.Context, k *consensus.Kind, namespace, name string) error
	// subresources serves GET of read-only subresources other than
	// status, keyed "plural/sub" (tasks/logs).
	subresources map[string]func(w http.ResponseWriter, r *http.Request, name string)
	// audit records mutating and refused calls (audit.go); nil records
	// nothing.
	audit *auditLog
	// admin serves the /outpost/v1/ admin calls (backup.go), when set.
	admin http.Handler
}

func newAPIServer(g *consensus.Group, auth *authenticator, logger *slog.Logger) *apiServer {
	a := &apiServer{
		group: g, store: g.Store(), reg: g.Store().Registry(), auth: auth,
		log: logger, table: newTableConvertor(),
	}
	auth.refused = a.refuseUnauthenticated // audit.go
	return a
}

// register adds the API's routes to mux.
func (a *apiServer) register(mux *http.ServeMux) {
	mux.Handle("/apis", a.auth.require(http.HandlerFunc(a.serveDiscovery)))
	mux.Handle("/apis/", a.auth.require(http.HandlerFunc(a.serveAPIs)))
	mux.Handle("/api", a.auth.require(http.HandlerFunc(a.serveLegacy)))
	mux.Handle("/api/", a.auth.require(http.HandlerFunc(a.serveLegacy)))
	mux.Handle("GET /version", a.auth.require(http.HandlerFunc(serveVersion)))
	a.registerKubectl(mux) // api_kubectl.go: OpenAPI v3 for kubectl apply
	a.registerUI(mux)      // ui.go: the web dashboard and whoami
	if a.admin != nil {
		mux.Handle("/outpost/v1/", a.auth.require(a.admin)) // backup.go: admin calls (backup)
	}
}

// request is a parsed resource path.
type request struct {
	kind        *consensus.Kind
	namespace   string
	name        string
	subresource string
}

// serveAPIs routes /apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}[/status]].
func (a *apiServer) serveAPIs(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch len(parts) {
	case 1: // "/apis/" trims to "apis"
		a.serveDiscovery(w, r)
		return
	case 2:
		a.serveGroup(w, r, parts[1])
		return
	case 3:
		a.serveResourceList(w, r, parts[1], parts[2])
		return
	}
	group, version, rest := parts[1], parts[2], parts[3:]
	var req request
	if rest[0] == "namespaces" && len(rest) >= 3 {
		req.namespace, rest = rest[1], rest[2:]
	}
	kind, ok := a.reg.ForResource(group, version, rest[0])
	switch {
	case !ok || kind.Hidden:
		writeError(w, notFound(group, rest[0], fmt.Sprintf("the server has no resource %q in %s/%s", rest[0], group, version)), a.log)
		return
	case req.namespace != "" && !kind.Namespaced:
		writeError(w, notFound(group, rest[0], fmt.Sprintf("%s is cluster-scoped: drop /namespaces/%s from the path", kind.Plural, req.namespace)), a.log)
		return
	case len(rest) > 3:
		writeError(w, apierrors.NewNotFound(kind.GroupResource(), strings.Join(rest[1:], "/")), a.log)
		return
	}
	req.kind = kind
	if len(rest) >= 2 {
		req.name = rest[1]
	}
	if len(rest) == 3 {
		if h, ok := a.subresources[kind.Plural+"/"+rest[2]]; ok && r.Method == http.MethodGet {
			if !a.authorize(w, r, request{kind: kind, namespace: req.namespace, name: rest[1], subresource: rest[2]}, verbGet) { // rbac.go
				return
			}
			if a.forward != nil && !a.group.IsLeader() && !queryBool(r, "stale") {
				a.forward(w, r)
				return
			}
			h(w, r, rest[1])
			return
		}
		if rest[2] != "status" {
			writeError(w, apierrors.NewNotFound(kind.GroupResource(), req.name+"/"+rest[2]), a.log)
			return
		}
		req.subresource = "status"
	}
	if req.name != "" && kind.Namespaced && req.namespace == "" {
		writeError(w, apierrors.NewBadRequest(fmt.Sprintf("%s is namespaced: use /apis/%s/%s/namespaces/{namespace}/%s/%s", kind.Plural, group, version, kind.Plural, req.name)), a.log)
		return
	}
	verb := requestVerb(r, req)
	if !a.authorize(w, r, req, verb) { // rbac.go: every call is checked against the caller's role
		return
	}
	if a.forward != nil && needsLeader(r) && !a.group.IsLeader() {
		a.forward(w, r)
		return
	}
	a.audited(w, r, req, verb, func(w http.ResponseWriter) { a.serveResource(w, r, req) }) // audit.go
}

// needsLeader reports whether a call must be served by the group's leader:
// every write, and every read that is neither stale nor a watch.
func needsLeader(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return true
	}
	return !queryBool(r, "stale") && !queryBool(r, "watch")
}

func (a *apiServer) serveResource(w http.ResponseWriter, r *http.Request, req request) {
	collection := req.name == ""
	if req.kind.ReadOnly && r.Method != http.MethodGet {
		writeError(w, &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusMethodNotAllowed,
			Reason: metav1.StatusReasonMethodNotAllowed, Message: req.kind.Plural + " are read-only: their controller writes them"}}, a.log)
		return
	}
	switch {
	case r.Method == http.MethodGet && collection && queryBool(r, "watch"):
		a.watch(w, r, req)
	case r.Method == http.MethodGet && collection:
		a.list(w, r, req)
	case r.Method == http.MethodGet:
		a.get(w, r, req)
	case r.Method == http.MethodPost && collection && req.subresource == "":
		a.create(w, r, req)
	case r.Method == http.MethodPut && !collection:
		a.update(w, r, req)
	case r.Method == http.MethodPatch && !collection:
		a.patch(w, r, req)
	case r.Method == http.MethodDelete && !collection && req.subresource == "":
		a.delete(w, r, req)
	default:
		writeError(w, apierrors.NewMethodNotSupported(req.kind.GroupResource(), r.Method), a.log)
	}
}

// serveLegacy answers the core group's discovery with nothing: Outpost
// serves no /api resources, and Kubernetes clients accept a 404 here.
func (a *apiServer) serveLegacy(w http.ResponseWriter, _ *http.Request) {
	writeError(w, apierrors.NewNotFound(schemaGR("", ""), "/api"), a.log)
}

// notFound is a 404 whose message says what is wrong with the path.
func notFound(group, resource, msg string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
		Details: &metav1.StatusDetails{Group: group, Kind: resource}, Message: msg,
	}}
}

// readBody reads a JSON or YAML request body of at most maxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("the body is over the %d-byte limit", maxBodyBytes))
	}
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("read body: %v", err))
	}
	if len(b) == 0 {
		return nil, apierrors.NewBadRequest("empty body")
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if strings.HasSuffix(ct, "yaml") {
		j, err := yaml.YAMLToJSON(b)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("malformed YAML body: %v", err))
		}
		return j, nil
	}
	return b, nil
}

// writeJSON writes v with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// writeError writes err as a Kubernetes Status. A NotLeaderError is a 503
// that names the leader.
func writeError(w http.ResponseWriter, err error, logger *slog.Logger) {
	var status apierrors.APIStatus
	var nl *consensus.NotLeaderError
	switch {
	case errors.As(err, &status):
	case errors.As(err, &nl):
		status = apierrors.NewServiceUnavailable(nl.Error())
	case errors.Is(err, consensus.ErrWatchDropped):
		status = apierrors.NewServiceUnavailable(err.Error())
	case errors.Is(err, context.Canceled):
		// The client went away; there is no one to answer.
		return
	default:
		if logger != nil {
			logger.Error("request failed", "err", err)
		}
		status = apierrors.NewInternalError(err)
	}
	s := status.Status()
	s.APIVersion, s.Kind = "v1", "Status"
	writeJSON(w, int(s.Code), s)
}

func queryBool(r *http.Request, name string) bool {
	v := r.URL.Query().Get(name)
	return v == "true" || v == "1"
}

func listKind(k *consensus.Kind) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: k.APIVersion(), Kind: k.Kind + "List"}
}
