package node

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/ota"
)

// API verbs, as Kubernetes names them.
const (
	verbGet    = "get"
	verbList   = "list"
	verbWatch  = "watch"
	verbCreate = "create"
	verbUpdate = "update"
	verbPatch  = "patch"
	verbDelete = "delete"
)

// readVerbs are the verbs a rule's read role covers; every other verb is a
// write.
var readVerbs = []string{verbGet, verbList, verbWatch}

// SecretOutputAnnotation on a Task ("true") withholds its devices' output
// (step stdout and stderr, read and playbook results, `task logs`) from
// viewers; operators and admins see it.
const SecretOutputAnnotation = ota.Group + "/secret-output"

// roleRank orders the roles: each may do what the ones below it may.
var roleRank = map[string]int{RoleViewer: 1, RoleOperator: 2, RoleAdmin: 3}

// rule is the least role that may read (get, list, watch) and write
// (create, update, patch, delete) one resource; verbs overrides single
// verbs.
type rule struct {
	read, write string
	verbs       map[string]string
}

// policy is the whole access policy, by "group/resource": resource is a
// plural, "plural/subresource", or "*" for the group's other resources;
// "*" is every other group. A kind registered later falls under its
// group's rule or under "*": readable by every role, writable by admins.
var policy = map[string]rule{
	CoreGroup + "/accesstokens": {read: RoleAdmin, write: RoleAdmin},
	CoreGroup + "/auditevents":  {read: RoleOperator, write: RoleAdmin},
	CoreGroup + "/jointokens":   {read: RoleOperator, write: RoleAdmin},
	CoreGroup + "/nodes":        {read: RoleViewer, write: RoleOperator, verbs: map[string]string{verbDelete: RoleAdmin}}, // delete revokes
	CoreGroup + "/sites":        {read: RoleViewer, write: RoleOperator},
	CoreGroup + "/backups":      {read: RoleAdmin, write: RoleAdmin},
	ota.Group + "/*":            {read: RoleViewer, write: RoleOperator},
	"clusters.outpost.dev/*":    {read: RoleViewer, write: RoleOperator},
	"images.outpost.dev/*":      {read: RoleViewer, write: RoleOperator}, // a registry push is a create of repositories
	"*":                         {read: RoleViewer, write: RoleAdmin},
}

// statusWriter is the least role that writes any status subresource:
// controllers own status, so only an admin may overwrite one.
const statusWriter = RoleAdmin

// requiredRole returns the least role that may do verb to group/resource
// (resource may be "plural/subresource").
func requiredRole(verb, group, resource string) string {
	plural, sub, _ := strings.Cut(resource, "/")
	r, ok := policy[group+"/"+resource]
	if !ok {
		r, ok = policy[group+"/"+plural]
	}
	if !ok {
		r, ok = policy[group+"/*"]
	}
	if !ok {
		r = policy["*"]
	}
	if role, ok := r.verbs[verb]; ok {
		return role
	}
	for _, v := range readVerbs {
		if v == verb {
			return r.read
		}
	}
	if sub == "status" && roleRank[statusWriter] > roleRank[r.write] {
		return statusWriter
	}
	return r.write
}

// permits reports whether role may do verb to group/resource, and the least
// role that may.
func permits(role, verb, group, resource string) (ok bool, need string) {
	need = requiredRole(verb, group, resource)
	return roleRank[role] >= roleRank[need] && roleRank[role] > 0, need
}

// forbidden is the 403 that names the missing permission.
func forbidden(p Principal, verb, group, resource, name, need string) error {
	gr := resource + "." + group
	msg := fmt.Sprintf("%s role cannot %s %s: needs %s", p.Role, verb, gr, need)
	if p.Role == "" {
		msg = fmt.Sprintf("token %s has no role and cannot %s %s: needs %s", p.Name, verb, gr, need)
	}
	return apierrors.NewForbidden(schemaGR(group, resource), name, fmt.Errorf("%s", msg))
}

// requestVerb is the verb of an API call on a parsed resource path.
func requestVerb(r *http.Request, req request) string {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		switch {
		case req.name != "":
			return verbGet
		case queryBool(r, "watch"):
			return verbWatch
		}
		return verbList
	case http.MethodPost:
		return verbCreate
	case http.MethodPut:
		return verbUpdate
	case http.MethodPatch:
		return verbPatch
	case http.MethodDelete:
		return verbDelete
	}
	return strings.ToLower(r.Method)
}

// authorize checks the caller of a resource call against the policy (and,
// for a viewer reading a task's logs, the task's secret-output policy). A
// refused call is answered with 403 and audited, by the leader when there
// is one (a hub follower hands the call to it).
func (a *apiServer) authorize(w http.ResponseWriter, r *http.Request, req request, verb string) bool {
	p, _ := PrincipalFrom(r.Context())
	resource := req.kind.Plural
	if req.subresource != "" {
		resource += "/" + req.subresource
	}
	ok, need := permits(p.Role, verb, req.kind.Group, resource)
	var err error
	if !ok {
		err = forbidden(p, verb, req.kind.Group, resource, req.name, need)
	} else if req.subresource == "logs" && !canSeeSecretOutput(p.Role) && a.secretTask(r.Context(), req.name) {
		err = apierrors.NewForbidden(schemaGR(req.kind.Group, resource), req.name,
			fmt.Errorf("%s role cannot get tasks/logs of task %s: its output is secret (%s); needs %s", p.Role, req.name, SecretOutputAnnotation, RoleOperator))
	}
	if err == nil {
		return true
	}
	a.refuse(w, r, err, auditFor(r, req, verb))
	return false
}

// canSeeSecretOutput reports whether role sees the output of tasks marked
// with SecretOutputAnnotation.
func canSeeSecretOutput(role string) bool { return roleRank[role] >= roleRank[RoleOperator] }

// secretTask reports whether the task named name marks its output secret.
func (a *apiServer) secretTask(ctx context.Context, name string) bool {
	obj, err := a.store.Get(ctx, &ota.TaskKind, "", name, consensus.ReadOptions{Stale: true})
	return err == nil && obj.Annotations[SecretOutputAnnotation] == "true"
}

// redact is what the API returns of obj to the caller of r: without its
// kind's secret fields, and, for a viewer, without the output of a task
// whose output is secret.
func (a *apiServer) redact(r *http.Request, k *consensus.Kind, obj *consensus.Object) *consensus.Object {
	obj = k.Redact(obj)
	if k.Group != ota.Group || k.Kind != ota.DeviceResultKind.Kind {
		return obj
	}
	if p, _ := PrincipalFrom(r.Context()); canSeeSecretOutput(p.Role) {
		return obj
	}
	if !a.secretTask(r.Context(), obj.Labels[ota.LabelTask]) {
		return obj
	}
	return withholdOutput(obj)
}

// withholdOutput returns a DeviceResult without its steps' output; one
// whose status does not decode, without its status.
func withholdOutput(obj *consensus.Object) *consensus.Object {
	out := obj.DeepCopy()
	var st ota.DeviceResultStatus
	if obj.DecodeStatus(&st) == nil {
		for i := range st.Steps {
			s := &st.Steps[i]
			s.Stdout, s.Stderr, s.Read, s.Playbook = ota.Output{}, ota.Output{}, nil, nil
		}
		if out.SetStatus(st) != nil {
			out.Status = nil
		}
	} else {
		out.Status = nil
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[SecretOutputAnnotation+"-withheld"] = "true"
	return out
}

// refuse answers a refused call (401 or 403) and audits it. A hub follower
// hands a call it refuses to the leader, which refuses it again and audits
// it once; without a leader the follower refuses it unaudited.
func (a *apiServer) refuse(w http.ResponseWriter, r *http.Request, err error, ev AuditEventSpec) {
	if a.forward != nil && !a.group.IsLeader() && !viaMesh(r) {
		a.forward(w, r)
		return
	}
	writeError(w, err, a.log)
	if st, ok := err.(apierrors.APIStatus); ok {
		ev.Code, ev.Message = int(st.Status().Code), st.Status().Message
	}
	a.audit.record(r.Context(), ev)
}
