package node

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sort"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/outpost-mesh/outpost/consensus"
)

// runMember waits for the group to elect a leader, bootstraps the admin
// credential and the site on a new hub, registers this node and keeps its
// heartbeat until ctx ends.
func (n *Node) runMember(ctx context.Context) error {
	store := n.group.Store()
	if err := n.waitLeader(ctx); err != nil {
		return nil
	}
	if n.group.IsLeader() {
		if err := n.ensureAdmin(ctx, store); err != nil {
			return err
		}
		if err := n.ensureSite(ctx, store); err != nil {
			return err
		}
	}
	t := time.NewTicker(n.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		if err := n.heartbeat(ctx, store); err != nil && ctx.Err() == nil {
			n.log.Debug("heartbeat not written", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (n *Node) waitLeader(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if n.group.Status().LeaderID != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// ensureAdmin creates the bootstrap admin token and writes
// <data-dir>/admin.yaml, once; later starts refresh the file's server and CA.
func (n *Node) ensureAdmin(ctx context.Context, store *consensus.Store) error {
	path := n.cfg.DataDir + "/admin.yaml"
	creds, err := LoadCredentials(path)
	if err == nil {
		if id, _, ok := splitToken(creds.Token); ok {
			if _, err := store.Get(ctx, &AccessTokenKind, "", id, consensus.ReadOptions{}); err == nil {
				creds.Server, creds.CA = n.APIURL(), string(n.ca.CertPEM)
				return creds.Write(path)
			}
		}
	}
	id := "admin-" + randomSuffix(6)
	token, hash := newToken(id)
	obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: id, Labels: map[string]string{"outpost.dev/bootstrap": "true"}}}
	if err := obj.SetSpec(AccessTokenSpec{Role: RoleAdmin, SecretHash: hash}); err != nil {
		return err
	}
	if _, err := store.Create(ctx, &AccessTokenKind, obj); err != nil {
		return fmt.Errorf("create admin token: %w", err)
	}
	creds = &Credentials{Server: n.APIURL(), CA: string(n.ca.CertPEM), Token: token}
	if err := creds.Write(path); err != nil {
		return err
	}
	n.log.Info("wrote admin credentials", "path", path)
	return nil
}

// ensureSite creates this node's Site object when it does not exist.
func (n *Node) ensureSite(ctx context.Context, store *consensus.Store) error {
	obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: n.cfg.Site}}
	_, err := store.Create(ctx, &SiteKind, obj)
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("register site %s: %w", n.cfg.Site, err)
	}
	return nil
}

// heartbeat creates this node's Node object if needed and refreshes its
// status; the hub's leader writes it.
func (n *Node) heartbeat(ctx context.Context, store *consensus.Store) error {
	if !n.group.IsLeader() {
		return nil
	}
	obj, err := store.Get(ctx, &NodeKind, "", n.cfg.Name, consensus.ReadOptions{Stale: true})
	if apierrors.IsNotFound(err) {
		obj, err = store.Create(ctx, &NodeKind, &consensus.Object{ObjectMeta: metav1.ObjectMeta{
			Name:   n.cfg.Name,
			Labels: map[string]string{"outpost.dev/site": n.cfg.Site, "kubernetes.io/arch": runtime.GOARCH, "kubernetes.io/os": runtime.GOOS},
		}})
	}
	if err != nil {
		return err
	}
	now := metav1.Now()
	start := metav1.NewTime(n.started)
	rs := n.group.Status()
	st := NodeStatus{
		Role: n.role(), Site: n.cfg.Site, State: "Ready", Version: BuildVersion(),
		OS: runtime.GOOS, Arch: runtime.GOARCH, Addresses: hostAddresses(),
		APIEndpoint: n.APIURL(), StartTime: &start, HeartbeatTime: &now,
		Raft: &NodeRaftState{State: rs.State, Term: rs.Term},
	}
	if err := obj.SetStatus(st); err != nil {
		return err
	}
	obj.ResourceVersion = ""
	if _, err = store.UpdateStatus(ctx, &NodeKind, obj); err != nil {
		return err
	}
	return n.refreshSite(ctx, store)
}

// refreshSite writes the status of this node's site from the nodes that
// registered in it. The leader of the site's group writes it.
func (n *Node) refreshSite(ctx context.Context, store *consensus.Store) error {
	sel := labels.SelectorFromSet(labels.Set{"outpost.dev/site": n.cfg.Site})
	nodes, err := store.List(ctx, &NodeKind, "", sel, consensus.ReadOptions{Stale: true})
	if err != nil {
		return err
	}
	versions := map[string]bool{}
	for _, o := range nodes.Items {
		var st NodeStatus
		if o.DecodeStatus(&st) == nil && st.Version != "" {
			versions[st.Version] = true
		}
	}
	now := metav1.Now()
	st := SiteStatus{Connected: true, Leader: n.group.Status().LeaderID, NodeCount: len(nodes.Items), LastSeen: &now}
	for v := range versions {
		st.Versions = append(st.Versions, v)
	}
	sort.Strings(st.Versions)
	site := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: n.cfg.Site}}
	if err := site.SetStatus(st); err != nil {
		return err
	}
	_, err = store.UpdateStatus(ctx, &SiteKind, site)
	return err
}

// hostAddresses lists the host's non-loopback unicast addresses.
func hostAddresses() []NodeAddress {
	var out []NodeAddress
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		out = append(out, NodeAddress{Type: "InternalIP", Address: ipn.IP.String()})
	}
	return out
}
