package node

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	imagesapi "github.com/outpost-mesh/outpost/images/api"
	"github.com/outpost-mesh/outpost/transport"
)

// methodAudit: hub member → hub leader: an audit event of a call the
// member served itself (a push to its registry).
const methodAudit = "audit"

// auditedPushes wraps a hub member's registry so that its writes are in
// the audit log as the API's are: every manifest put and every delete
// (what makes an image appear, change or go), and every write refused for
// its token. Blob uploads, a push's many staging calls, are not recorded
// one by one: the manifest that names them is.
func (c *imageCache) auditedPushes(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			h.ServeHTTP(w, r)
			return
		}
		rec := &auditRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		part, name := registryTarget(r.URL.Path)
		refused := rec.code == http.StatusUnauthorized || rec.code == http.StatusForbidden
		if !refused && part != "manifests" && r.Method != http.MethodDelete {
			return
		}
		p, _ := c.principal(r)
		verb := "push"
		if r.Method == http.MethodDelete {
			verb = verbDelete
		}
		ev := AuditEventSpec{
			User: p.Name, Role: p.Role, Verb: verb, Group: imagesapi.Group, Resource: "repositories",
			Subresource: part, Name: name, Code: rec.code,
		}
		ev.Source, _ = requestSource(r)
		if rec.code >= 400 {
			ev.Message = strings.TrimSpace(string(rec.body))
		}
		c.n.recordAudit(r.Context(), ev)
	})
}

// registryTarget splits a registry path /v2/<repository>/<part>/<ref>
// into its part (manifests, blobs) and "<repository>:<ref>" (or
// "<repository>@<digest>").
func registryTarget(path string) (part, name string) {
	p := strings.TrimPrefix(path, "/v2/")
	for _, part := range []string{"/manifests/", "/blobs/uploads", "/blobs/"} {
		if repo, ref, ok := strings.Cut(p, part); ok {
			sep := ":"
			if strings.Contains(ref, ":") {
				sep = "@"
			}
			if ref == "" || part == "/blobs/uploads" {
				return "blobs", repo
			}
			return strings.Trim(part, "/"), repo + sep + strings.TrimPrefix(ref, "/")
		}
	}
	return "", p
}

// recordAudit writes ev to the audit log: here when this member leads,
// else through the leader. A failure is logged: the call has happened.
func (n *Node) recordAudit(ctx context.Context, ev AuditEventSpec) {
	l := n.access.audit
	if l == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = metav1.Now()
	}
	if n.group.IsLeader() {
		l.record(ctx, ev)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditWriteTimeout)
	defer cancel()
	err := errors.New("the hub has no leader right now")
	if rf := n.group.Raft(); rf != nil {
		if addr, _ := rf.LeaderWithID(); addr != "" {
			var reply refusalsReply
			if err = n.call(ctx, string(addr), methodAudit, ev, &reply); err == nil && reply.Error != "" {
				err = errors.New(reply.Error)
			}
		}
	}
	if err != nil {
		l.log.Warn("audit event not written", "user", ev.User, "verb", ev.Verb, "resource", ev.Resource, "name", ev.Name, "err", err)
	}
}

// serveAudit writes an event a hub member sends its leader.
func (n *Node) serveAudit(ctx context.Context, s *transport.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(auditWriteTimeout + 5*time.Second))
	var ev AuditEventSpec
	if err := readMessage(s, &ev, 64<<10); err != nil {
		return
	}
	var reply refusalsReply
	if ev.Via == "" {
		ev.Via = s.Peer().Name
	}
	wctx, cancel := context.WithTimeout(ctx, auditWriteTimeout)
	defer cancel()
	if err := n.access.audit.write(wctx, ev); err != nil {
		reply.Error = err.Error()
	}
	_ = writeMessage(s, reply)
}
