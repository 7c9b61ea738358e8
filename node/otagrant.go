package node

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/control"
	"github.com/outpost-mesh/outpost/ota/grant"
)

// grantSlack is how long a grant outlives its task's delivery deadline and
// device timeout: room for a site's queue, and for a site cut off from the
// hub, to work through the task. A device still queued past it fails with
// reason GrantRefused; `outpost task retry` signs new grants.
const grantSlack = 24 * time.Hour

// grantTTL is how long the grants of a task are valid.
func grantTTL(spec *ota.TaskSpec) time.Duration {
	return grantSlack + spec.DeliveryDeadlineOrDefault() + spec.DeviceTimeoutOrDefault()
}

// grantSigner signs grants with the mesh CA's key (hub members hold it).
type grantSigner struct {
	once sync.Once
	key  crypto.Signer
	err  error
}

func (n *Node) grantKey() (crypto.Signer, error) {
	n.access.grants.once.Do(func() {
		if n.ca == nil {
			n.access.grants.err = errors.New("only hub members hold the key that signs tasks")
			return
		}
		der, err := n.ca.KeyDER()
		if err != nil {
			n.access.grants.err = err
			return
		}
		k, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			n.access.grants.err = fmt.Errorf("parse the CA key: %w", err)
			return
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			n.access.grants.err = fmt.Errorf("the CA key (%T) cannot sign", k)
			return
		}
		n.access.grants.key = s
	})
	return n.access.grants.key, n.access.grants.err
}

// signAssignments gives every device an assignment starts (its devices
// when it carries the spec, and a retry's devices) a grant signed by the
// hub, and audits the dispatch: the event is in the hub's Raft before the
// assignment leaves, so no dispatch goes unaudited, whichever member
// leads. An assignment that cannot be signed or audited is left out: the
// site asks again at its next report.
func (n *Node) signAssignments(ctx context.Context, site string, as []control.Assignment) []control.Assignment {
	out := as[:0]
	for _, a := range as {
		devices := append(append([]string(nil), a.Retry...), a.Devices...)
		if len(devices) == 0 {
			out = append(out, a)
			continue
		}
		if err := n.signAssignment(ctx, site, &a, devices); err != nil {
			n.log.Warn("could not sign a task's grants; the site gets them at its next report", "task", a.Task, "site", site, "err", err)
			continue
		}
		out = append(out, a)
	}
	return out
}

func (n *Node) signAssignment(ctx context.Context, site string, a *control.Assignment, devices []string) error {
	key, err := n.grantKey()
	if err != nil {
		return err
	}
	spec := a.Spec
	if spec == nil {
		obj, err := n.group.Store().Get(ctx, &ota.TaskKind, "", a.Task, consensus.ReadOptions{Stale: true})
		if err != nil {
			return err
		}
		spec = &ota.TaskSpec{}
		if err := obj.DecodeSpec(spec); err != nil {
			return err
		}
	}
	expires := time.Now().Add(grantTTL(spec))
	var nodes []string
	seen := map[string]bool{}
	for _, d := range devices {
		if !seen[d] {
			seen[d] = true
			nodes = append(nodes, d)
		}
	}
	grants, err := grant.New(key, grant.Request{
		Task: a.Task, UID: a.UID, Attempt: a.Attempt, Site: site,
		Steps: spec.Steps, TimeoutMillis: spec.DeviceTimeoutOrDefault().Milliseconds(),
	}, nodes, expires)
	if err != nil {
		return err
	}
	a.Grants = append(a.Grants, grants...)
	wctx, cancel := context.WithTimeout(ctx, auditWriteTimeout)
	defer cancel()
	err = n.access.audit.write(wctx, AuditEventSpec{
		User: "hub/" + n.id.Name, Verb: "dispatch", Group: ota.Group, Resource: "tasks", Name: a.Task,
		Code: 200, Message: fmt.Sprintf("site %s: %d devices at attempt %d, grants valid until %s", site, len(seen), a.Attempt, expires.UTC().Format(time.RFC3339)),
	})
	if err != nil {
		return fmt.Errorf("audit the dispatch: %w", err)
	}
	return nil
}

// caPublicKey is the mesh CA's key, which checks the hub's grants.
func (id *identity) caPublicKey() *ecdsa.PublicKey {
	id.mu.RLock()
	defer id.mu.RUnlock()
	pub, _ := id.ca.PublicKey.(*ecdsa.PublicKey)
	return pub
}

// admit checks a run request's grant and records it: a forged, changed or
// expired grant is refused, and so is a grant used before whose run left
// no trace here (a replay). A grant used before whose run exists resolves
// to that run (a site leader re-dispatching after a failover), which the
// journal keeps from running any step twice. The caller audits a
// refusal (otarefusal.go).
func (a *agentService) admit(req control.RunRequest, key string) error {
	err := grant.Verify(a.id.caPublicKey(), req.Grant, grant.Request{
		Task: req.Task, UID: req.UID, Attempt: req.Attempt, Node: a.id.Name, Site: a.id.Site,
		Steps: req.Steps, TimeoutMillis: req.DeviceTimeout,
	}, time.Now())
	if err == nil {
		var seen bool
		if seen, err = a.grants.Admit(req.Grant); err == nil && seen && !a.hasTrace(key) {
			err = fmt.Errorf("%w: grant %s of task %s attempt %d", grant.ErrReplay, req.Grant.ID, req.Task, req.Attempt)
		}
	}
	return err
}

// hasTrace reports whether the run key has run here: in progress, with a
// result, or with a journal (its first step's Running marker is recorded
// before the step starts).
func (a *agentService) hasTrace(key string) bool {
	a.mu.Lock()
	_, running := a.running[key]
	a.mu.Unlock()
	if running {
		return true
	}
	if _, ok, _ := a.store.Result(key); ok {
		return true
	}
	_, ok, _ := a.store.Journal(key).Lookup(0)
	return ok
}
