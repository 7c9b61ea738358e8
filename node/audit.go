package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
)

// Audit defaults (--audit-max-age, --audit-max-events).
const (
	DefaultAuditMaxAge    = 30 * 24 * time.Hour
	DefaultAuditMaxEvents = 100000
)

const (
	// auditPruneInterval is how often the hub leader prunes the log.
	auditPruneInterval = time.Minute
	// auditWriteTimeout bounds writing one event.
	auditWriteTimeout = 5 * time.Second
	// labelAuditUser carries the event's user, for `outpost audit --user`.
	labelAuditUser = "outpost.dev/user"
	// forwardedByHeader names the hub member that forwarded a call.
	forwardedByHeader = "X-Outpost-Forwarded-By"
)

// AuditEventSpec is one entry of the audit log: who did what to which
// object, from where, and how it ended.
type AuditEventSpec struct {
	Time metav1.Time `json:"time"`
	// User is the AccessToken's name, or "hub/<member>" and "site/<site>"
	// for what the mesh does itself.
	User        string `json:"user"`
	Role        string `json:"role,omitempty"`
	Verb        string `json:"verb"`
	Group       string `json:"group,omitempty"`
	Resource    string `json:"resource"`
	Subresource string `json:"subresource,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	Name        string `json:"name,omitempty"`
	// Source is the client's address; Via the hub member that forwarded
	// the call to the leader.
	Source  string `json:"source,omitempty"`
	Via     string `json:"via,omitempty"`
	Code    int    `json:"code"`
	Message string `json:"message,omitempty"`
}

// AuditEventKind is the audit log's kind: written by the hub leader only,
// read-only through the API.
var AuditEventKind = consensus.Kind{
	Group: CoreGroup, Version: "v1alpha1", Kind: "AuditEvent", Plural: "auditevents", ReadOnly: true,
	NewSpec: func() any { return &AuditEventSpec{} },
	Columns: []consensus.Column{
		{Name: "Time", Type: "date", JSONPath: ".spec.time"},
		{Name: "User", Type: "string", JSONPath: ".spec.user"},
		{Name: "Verb", Type: "string", JSONPath: ".spec.verb"},
		{Name: "Resource", Type: "string", JSONPath: ".spec.resource"},
		{Name: "Object", Type: "string", JSONPath: ".spec.name"},
		{Name: "Code", Type: "integer", JSONPath: ".spec.code"},
		{Name: "Source", Type: "string", JSONPath: ".spec.source", Priority: 1},
		{Name: "Message", Type: "string", JSONPath: ".spec.message", Priority: 1},
	},
}

// auditLog writes AuditEvents to the hub's Raft group, each before what
// it records is answered, so nothing is held in a member's memory that a
// change of leader could lose. API calls are recorded before their answer
// is complete, by the member that serves them (the leader: followers
// forward every write and every refusal), so an acknowledged write has
// its event in Raft. A task's dispatch is recorded before its assignment
// leaves the hub (otagrant.go), and a site's refusals before the hub tells
// the site it has them (otarefusal_site.go).
type auditLog struct {
	store     *consensus.Store
	isLeader  func() bool
	log       *slog.Logger
	maxAge    time.Duration
	maxEvents int
	now       func() time.Time
}

func newAuditLog(store *consensus.Store, isLeader func() bool, maxAge time.Duration, maxEvents int, logger *slog.Logger) *auditLog {
	return &auditLog{
		store: store, isLeader: isLeader, log: logger.With("component", "audit"),
		maxAge: maxAge, maxEvents: maxEvents, now: time.Now,
	}
}

// record writes ev now. A failure is logged: the call it describes has
// already happened.
func (l *auditLog) record(ctx context.Context, ev AuditEventSpec) {
	if l == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditWriteTimeout)
	defer cancel()
	if err := l.write(ctx, ev); err != nil {
		l.log.Warn("audit event not written", "user", ev.User, "verb", ev.Verb, "resource", ev.Resource, "name", ev.Name, "err", err)
	}
}

func (l *auditLog) write(ctx context.Context, ev AuditEventSpec) error {
	now := l.now()
	if ev.Time.IsZero() {
		ev.Time = metav1.NewTime(now)
	}
	obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{
		Name: fmt.Sprintf("%x-%s", ev.Time.UnixNano(), randomSuffix(6)),
	}}
	if u := auditUserLabel(ev.User); u != "" {
		obj.Labels = map[string]string{labelAuditUser: u}
	}
	if err := obj.SetSpec(ev); err != nil {
		return err
	}
	_, err := l.store.Create(ctx, &AuditEventKind, obj)
	return err
}

// auditUserLabel is a user name as a label value: characters a label may
// not hold become '.', cut to 63.
func auditUserLabel(u string) string {
	v := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '.'
	}, u)
	if len(v) > 63 {
		v = v[:63]
	}
	return strings.Trim(v, "._-")
}

// run prunes the log by age and count while this member leads, until ctx
// ends.
func (l *auditLog) run(ctx context.Context) error {
	t := time.NewTicker(auditPruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if l.isLeader() {
				if err := l.prune(ctx, l.now()); err != nil && ctx.Err() == nil {
					l.log.Warn("prune the audit log", "err", err)
				}
			}
		}
	}
}

// prune deletes events older than maxAge at now, then the oldest beyond
// maxEvents.
func (l *auditLog) prune(ctx context.Context, now time.Time) error {
	list, err := l.store.List(ctx, &AuditEventKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return err
	}
	items := list.Items
	sort.Slice(items, func(i, j int) bool { return items[i].CreationTimestamp.Before(&items[j].CreationTimestamp) })
	cutoff := now.Add(-l.maxAge)
	var drop []*consensus.Object
	for i, o := range items {
		if (l.maxAge > 0 && o.CreationTimestamp.Time.Before(cutoff)) || (l.maxEvents > 0 && len(items)-i > l.maxEvents) {
			drop = append(drop, o)
		}
	}
	var eg errgroup.Group
	eg.SetLimit(64)
	for _, o := range drop {
		eg.Go(func() error {
			_, err := l.store.Delete(ctx, &AuditEventKind, "", o.Name, 0, "")
			return err
		})
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	if len(drop) > 0 {
		l.log.Debug("audit log pruned", "deleted", len(drop))
	}
	return nil
}

// auditFor is the event of an API call, before its outcome is known.
func auditFor(r *http.Request, req request, verb string) AuditEventSpec {
	p, _ := PrincipalFrom(r.Context())
	ev := AuditEventSpec{
		User: p.Name, Role: p.Role, Verb: verb, Resource: req.kind.Plural, Subresource: req.subresource,
		Namespace: req.namespace, Name: req.name, Group: req.kind.Group,
	}
	ev.Source, ev.Via = requestSource(r)
	return ev
}

// requestSource is the client's address, and the hub member that forwarded
// the call when it came over the mesh. Only a call that came over the mesh
// (a QUIC stream from a hub member, so a UDP local address) is trusted to
// name its client in X-Forwarded-For.
func requestSource(r *http.Request) (source, via string) {
	source = r.RemoteAddr
	if host, _, err := net.SplitHostPort(source); err == nil {
		source = host
	}
	if viaMesh(r) {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			source = strings.TrimSpace(xff[strings.LastIndex(xff, ",")+1:])
		}
		via = r.Header.Get(forwardedByHeader)
	}
	return source, via
}

// viaMesh reports whether a call came over the mesh, forwarded by a hub
// member: the admin API listens on TCP, the mesh on QUIC (UDP).
func viaMesh(r *http.Request) bool {
	_, ok := r.Context().Value(http.LocalAddrContextKey).(*net.UDPAddr)
	return ok
}

// auditRecorder keeps an answer's status code and, for a failure, the
// start of its body (the Status message).
type auditRecorder struct {
	http.ResponseWriter
	code int
	body []byte
}

func (w *auditRecorder) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *auditRecorder) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	if w.code >= 400 && len(w.body) < 4096 {
		w.body = append(w.body, b[:min(len(b), 4096-len(w.body))]...)
	}
	return w.ResponseWriter.Write(b)
}

// audited serves a call with serve and records it: every call but reads
// (reads are audited only when refused, in refuse).
func (a *apiServer) audited(w http.ResponseWriter, r *http.Request, req request, verb string, serve func(http.ResponseWriter)) {
	if a.audit == nil || verb == verbGet || verb == verbList || verb == verbWatch {
		serve(w)
		return
	}
	rec := &auditRecorder{ResponseWriter: w}
	serve(rec)
	ev := auditFor(r, req, verb)
	ev.Code = rec.code
	if rec.code >= 400 {
		ev.Message = statusMessage(rec.body)
	}
	a.audit.record(r.Context(), ev)
}

// statusMessage is the message of a Status body, or the body itself.
func statusMessage(body []byte) string {
	var s metav1.Status
	if json.Unmarshal(body, &s) == nil && s.Message != "" {
		return s.Message
	}
	return strings.TrimSpace(string(body))
}

// refuseUnauthenticated answers a call without a valid token (401) and
// audits it like a refused call.
func (a *apiServer) refuseUnauthenticated(w http.ResponseWriter, r *http.Request, err error) {
	ev := AuditEventSpec{Verb: strings.ToLower(r.Method), Resource: r.URL.Path, Code: http.StatusUnauthorized}
	if id, _, ok := splitToken(strings.TrimSpace(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))); ok {
		ev.User = id
	}
	ev.Source, ev.Via = requestSource(r)
	a.refuse(w, r, err, ev)
}

// accessState is a node's share of access control: on hub members the
// audit log and the key that signs task grants (otagrant.go); on every
// node the lock that orders its site's refusal records
// (otarefusal_site.go).
type accessState struct {
	audit     *auditLog
	grants    grantSigner
	refusalMu sync.Mutex
}

// newAccess wires the audit log and the admin calls (backup) into a hub
// member's API.
func (n *Node) newAccess() {
	n.access.audit = newAuditLog(n.group.Store(), n.group.IsLeader, n.cfg.AuditMaxAge, n.cfg.AuditMaxEvents, n.log)
	n.api.audit = n.access.audit
	n.api.admin = n.adminHandler()
}

// runAccess restores a prepared backup (backup.go), then prunes the audit
// log while this member leads, until ctx ends.
func (n *Node) runAccess(ctx context.Context) error {
	if err := n.restorePending(ctx); err != nil {
		return err
	}
	return n.access.audit.run(ctx)
}
