package clusters

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/outpost-mesh/outpost/consensus"
)

// reconcile brings one Cluster's status up to date, or finishes its
// deletion. requeue asks for the next resync; an error for a retry with
// backoff.
func (c *Controller) reconcile(ctx context.Context, name string) (requeue bool, err error) {
	store := c.cfg.Store
	obj, err := store.Get(ctx, &ClusterKind, "", name, consensus.ReadOptions{Stale: true})
	if apierrors.IsNotFound(err) {
		c.forget(name)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if obj.DeletionTimestamp != nil {
		return false, c.finalize(ctx, obj)
	}
	// The finalizer is written with the first status (one Raft write, not
	// two), and before anything is bound that deletion must release.
	addFinalizer := !slices.Contains(obj.Finalizers, Finalizer)
	if addFinalizer {
		obj.Finalizers = append(obj.Finalizers, Finalizer)
	}
	open, err := store.Unseal(&ClusterKind, obj)
	if err != nil {
		return false, err
	}
	var spec ClusterSpec
	var st ClusterStatus
	if err := open.DecodeSpec(&spec); err != nil {
		return false, err
	}
	if err := obj.DecodeStatus(&st); err != nil {
		return false, err
	}
	now := metav1.Now()
	st.LastProbeTime = &now
	st.ObservedGeneration = obj.Generation
	r := &round{c: c, obj: obj, spec: &spec, st: &st, now: now.Time, metaDirty: addFinalizer}
	requeue, err = r.run(ctx)
	// Written on every round: lastProbeTime and lastHeardTime say how
	// fresh the conditions are.
	if werr := r.write(ctx); werr != nil {
		return false, errors.Join(err, werr)
	}
	return requeue, err
}

// round is one reconcile of one Cluster.
type round struct {
	c    *Controller
	obj  *consensus.Object
	spec *ClusterSpec
	st   *ClusterStatus
	now  time.Time
	// metaDirty: obj's metadata (the finalizer) is not stored yet.
	metaDirty bool
}

// write stores the status, and the metadata with it when it changed.
func (r *round) write(ctx context.Context) error {
	if !r.metaDirty {
		return r.c.writeStatus(ctx, r.obj, r.st)
	}
	next := r.obj.DeepCopy()
	if err := next.SetStatus(r.st); err != nil {
		return err
	}
	out, err := r.c.cfg.Store.UpdateWithStatus(ctx, &ClusterKind, next)
	if err != nil {
		return fmt.Errorf("write finalizer and status: %w", err)
	}
	r.obj.ResourceVersion, r.obj.Status, r.metaDirty = out.ResourceVersion, out.Status, false
	return nil
}

func (r *round) set(typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&r.st.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: r.obj.Generation,
	})
}

// blocked sets Ready, and Schedulable Unknown, for a cluster that
// cannot be probed.
func (r *round) blocked(status metav1.ConditionStatus, reason, msg string) {
	r.set(ConditionReady, status, reason, msg)
	r.set(ConditionSchedulable, metav1.ConditionUnknown, reason, msg)
}

// notInitialized sets Initialized False with reason and what follows from
// it for the other conditions.
func (r *round) notInitialized(reason, msg string) {
	r.set(ConditionInitialized, metav1.ConditionFalse, reason, msg)
	r.set(ConditionAgentAvailable, metav1.ConditionUnknown, ReasonNotInitialized, "see Initialized")
	r.blocked(metav1.ConditionFalse, ReasonNotInitialized, "see Initialized")
}

func (r *round) run(ctx context.Context) (bool, error) {
	if !r.spec.Enabled() {
		r.set(ConditionInitialized, metav1.ConditionTrue, ReasonInitialized, "")
		r.set(ConditionAgentAvailable, metav1.ConditionUnknown, ReasonDisabled, "spec.enable is false")
		r.blocked(metav1.ConditionFalse, ReasonDisabled, "spec.enable is false: the hub does not connect to this cluster")
		return false, nil
	}
	if r.spec.Provisioned() {
		if ok, err := r.provision(ctx); !ok || err != nil {
			return true, err
		}
	}
	cfg, err := r.connect(ctx)
	if err != nil || cfg == nil {
		return true, err
	}
	cs, err := r.c.client(r.obj.Name, cfg)
	if err != nil {
		r.notInitialized(ReasonInvalidSpec, err.Error())
		return true, nil
	}
	o := r.c.probe(ctx, cs)
	if o.answered {
		t := metav1.NewTime(r.now)
		r.st.LastHeardTime = &t
	}
	switch o.kind {
	case failUnreachable:
		r.unreachable(o.err)
		return true, nil
	case failCredentials:
		r.set(ConditionAgentAvailable, metav1.ConditionFalse, ReasonUnauthorized, "the API server refused the credentials: "+o.err.Error())
		r.blocked(metav1.ConditionFalse, ReasonUnauthorized, "see AgentAvailable")
		return true, nil
	case failCertificate:
		r.set(ConditionAgentAvailable, metav1.ConditionFalse, ReasonCertificate, "the API server's certificate did not verify: "+o.err.Error())
		r.blocked(metav1.ConditionFalse, ReasonCertificate, "see AgentAvailable")
		return true, nil
	case failOther:
		r.set(ConditionAgentAvailable, metav1.ConditionTrue, ReasonConnected, "")
		r.set(ConditionReady, metav1.ConditionFalse, ReasonProbeFailed, o.err.Error())
		r.set(ConditionSchedulable, metav1.ConditionUnknown, ReasonProbeFailed, "see Ready")
		return true, nil
	}
	r.set(ConditionAgentAvailable, metav1.ConditionTrue, ReasonConnected, "")
	r.st.KubernetesVersion, r.st.UID = o.version, o.uid
	r.st.NodeCount, r.st.Region, r.st.Zones = o.nodes.count, o.nodes.region, o.nodes.zones
	if o.nodes.schedulable > 0 {
		r.set(ConditionSchedulable, metav1.ConditionTrue, ReasonSchedulableNodes, fmt.Sprintf("%d of %d nodes are Ready and schedulable with allocatable CPU and memory", o.nodes.schedulable, o.nodes.count))
	} else {
		r.set(ConditionSchedulable, metav1.ConditionFalse, ReasonNoSchedulable, fmt.Sprintf("none of %d nodes is Ready and schedulable with allocatable CPU and memory", o.nodes.count))
	}
	if r.c.cfg.SharedAPIServer {
		// benchmarks: no duplicate rule
	} else if other, err := r.c.claimedBy(ctx, r.obj, o.uid); err != nil {
		return false, err
	} else if other != "" {
		r.set(ConditionReady, metav1.ConditionFalse, ReasonDuplicateCluster,
			fmt.Sprintf("this is the same physical cluster (kube-system UID %s) as Cluster %s, registered first; delete one of them", o.uid, other))
		r.set(ConditionSchedulable, metav1.ConditionFalse, ReasonDuplicateCluster, "see Ready")
		return true, nil
	}
	installErr := r.install(ctx, cfg)
	core := meta.FindStatusCondition(r.st.Conditions, ConditionCoreReady)
	switch {
	case !o.readyzOK:
		r.set(ConditionReady, metav1.ConditionFalse, ReasonUnhealthy, "/readyz: "+o.readyzMessage)
	case core != nil && core.Status != metav1.ConditionTrue:
		r.set(ConditionReady, metav1.ConditionFalse, ReasonCoreNotReady, "core components: "+core.Reason+" "+core.Message)
	default:
		r.set(ConditionReady, metav1.ConditionTrue, ReasonHealthy, "")
	}
	return true, installErr
}

// connect returns a rest.Config for the cluster and sets Initialized; a
// nil config (with the conditions set) when there is none to probe with.
func (r *round) connect(ctx context.Context) (*rest.Config, error) {
	switch r.spec.Connection.Type {
	case ConnectionDirect:
		cfg, err := restConfigFromKubeconfig(r.spec.Connection.Kubeconfig, r.spec.Connection.KubernetesAPIEndpoint)
		if err != nil {
			r.notInitialized(ReasonInvalidSpec, "spec.connection.kubeconfig: "+err.Error())
			return nil, nil
		}
		r.set(ConditionInitialized, metav1.ConditionTrue, ReasonInitialized, "")
		return cfg, nil
	case ConnectionProxy:
		return r.connectProxy(ctx)
	}
	r.notInitialized(ReasonInvalidSpec, "spec.connection.type must be direct or proxy")
	return nil, nil
}

// connectProxy allocates (or keeps) the cluster's tunnel ports, records
// them before binding, and asks the tunnel for the agent's state.
func (r *round) connectProxy(ctx context.Context) (*rest.Config, error) {
	notInit := func(reason, msg string) (*rest.Config, error) {
		r.notInitialized(reason, msg)
		return nil, nil
	}
	c := r.c
	if r.spec.Connection.TokenHash == "" {
		return notInit(ReasonNoToken, "no cluster token: issue one with `outpost cluster token "+r.obj.Name+"`")
	}
	if c.cfg.Tunnels == nil {
		return notInit(ReasonNoTunnel, "this hub serves no tunnels")
	}
	if r.st.Connection == nil || r.st.Connection.IsZero() {
		ports, err := c.allocate(ctx, r.obj.Name)
		if errors.Is(err, ErrPortsExhausted) {
			return notInit(ReasonPortsExhausted, err.Error())
		}
		if err != nil {
			return nil, err
		}
		r.st.Connection = &ports
		// Recorded before binding: a new leader binds the same ports.
		if err := r.write(ctx); err != nil {
			return nil, err
		}
	}
	c.hold(r.obj.Name, *r.st.Connection)
	ts, err := c.cfg.Tunnels.Ensure(ctx, r.obj.Name, Binding{Ports: *r.st.Connection, External: r.spec.ExternalKubeAPIEnabled})
	switch {
	case errors.Is(err, ErrPortInUse):
		return notInit(ReasonPortInUse, err.Error())
	case err != nil:
		return notInit(ReasonTunnelFailed, err.Error())
	}
	c.mu.Lock()
	c.tunnels[r.obj.Name] = ts
	c.mu.Unlock()
	r.set(ConditionInitialized, metav1.ConditionTrue, ReasonInitialized, "")
	if !ts.Connected {
		if r.st.LastHeardTime == nil && ts.LastSeen.IsZero() {
			r.set(ConditionAgentAvailable, metav1.ConditionFalse, ReasonAgentNotConnected,
				"no agent has connected yet: kubectl apply the output of `outpost cluster agent-manifest "+r.obj.Name+"` in the cluster")
			r.blocked(metav1.ConditionFalse, ReasonAgentNotConnected, "see AgentAvailable")
			return nil, nil
		}
		r.unreachable(errors.New("the cluster's agent is not connected"))
		return nil, nil
	}
	// A connected agent is not the cluster answering: lastHeardTime moves
	// only when the API server answers the probe through the tunnel, so a
	// cut link (which the hub notices only at the agent's heartbeat
	// timeout) or an agent that cannot reach its API server goes Unknown
	// after the grace period all the same.
	return tunnelConfig(ts), nil
}

// tunnelConfig reaches the edge API server through the tunnel's loopback
// port, verifying its certificate end to end.
func tunnelConfig(ts TunnelState) *rest.Config {
	return &rest.Config{
		Host:        "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ts.Ports.KubernetesAPI)),
		BearerToken: ts.BearerToken,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: ts.ServerCA, ServerName: ts.ServerName, CertData: ts.ClientCert, KeyData: ts.ClientKey,
		},
	}
}

// unreachable keeps the conditions while the cluster was heard from within
// the grace period, and makes them Unknown after it. The period is judged
// now, when the failure is known, not when the round began: a probe that
// timed out may have taken ProbeTimeout.
func (r *round) unreachable(err error) {
	if h := r.st.LastHeardTime; h != nil && time.Since(h.Time) < r.c.cfg.GracePeriod {
		return
	}
	msg := "nothing heard within the grace period"
	if r.st.LastHeardTime == nil {
		msg = "never reached"
	}
	r.set(ConditionAgentAvailable, metav1.ConditionUnknown, ReasonUnreachable, msg+": "+err.Error())
	r.set(ConditionReady, metav1.ConditionUnknown, ReasonUnreachable, "see AgentAvailable")
	r.set(ConditionSchedulable, metav1.ConditionUnknown, ReasonUnreachable, "see AgentAvailable")
}

// install runs the installer and sets the conditions it returns.
func (r *round) install(ctx context.Context, cfg *rest.Config) error {
	if r.c.cfg.Installer == nil {
		return nil
	}
	conds, err := r.c.cfg.Installer.Install(ctx, r.target(ctx, cfg))
	r.setAll(conds)
	if err != nil {
		return fmt.Errorf("install components: %w", err)
	}
	return nil
}

// target is the cluster as the Installer sees it, with a Report that
// writes each condition as it comes.
func (r *round) target(ctx context.Context, cfg *rest.Config) *Target {
	t := &Target{Name: r.obj.Name, UID: r.obj.UID, Spec: *r.spec, Status: *r.st.deepCopy()}
	if cfg != nil {
		t.Config = rest.CopyConfig(cfg)
	}
	t.Report = func(cond metav1.Condition) {
		r.setAll([]metav1.Condition{cond})
		if err := r.write(ctx); err != nil {
			r.c.log.Debug("write progress", "cluster", r.obj.Name, "condition", cond.Type, "err", err)
		}
	}
	return t
}

// setAll sets conds for this generation.
func (r *round) setAll(conds []metav1.Condition) {
	for _, cond := range conds {
		cond.ObservedGeneration = r.obj.Generation
		meta.SetStatusCondition(&r.st.Conditions, cond)
	}
}

// provision asks the Installer to make a provisioned (virtual) cluster
// and stores the kubeconfig it returns; false when there is none yet.
func (r *round) provision(ctx context.Context) (bool, error) {
	p, ok := r.c.cfg.Installer.(Provisioner)
	if !ok {
		r.notInitialized(ReasonProvisioning, "this hub has no installer that provisions virtual clusters")
		return false, nil
	}
	kc, conds, err := p.Provision(ctx, r.target(ctx, nil))
	r.setAll(conds)
	if err != nil || len(kc) == 0 {
		r.notInitialized(ReasonProvisioning, "the hub is making this virtual cluster: see VirtualClusterReady")
		if err != nil {
			return false, fmt.Errorf("provision: %w", err)
		}
		return false, nil
	}
	if bytes.Equal(kc, r.spec.Connection.Kubeconfig) {
		return true, nil
	}
	// The stored spec keeps its other secrets sealed; the store seals
	// the new kubeconfig.
	var stored ClusterSpec
	if err := r.obj.DecodeSpec(&stored); err != nil {
		return false, err
	}
	stored.Connection.Kubeconfig = kc
	next := r.obj.DeepCopy()
	if err := next.SetSpec(stored); err != nil {
		return false, err
	}
	if err := next.SetStatus(r.st); err != nil {
		return false, err
	}
	out, err := r.c.cfg.Store.UpdateWithStatus(ctx, &ClusterKind, next)
	if err != nil {
		return false, fmt.Errorf("store the virtual cluster's kubeconfig: %w", err)
	}
	r.obj, r.metaDirty = out, false
	r.spec.Connection.Kubeconfig = kc
	r.st.ObservedGeneration = out.Generation
	r.c.log.Info("virtual cluster's kubeconfig stored", "cluster", r.obj.Name)
	return true, nil
}

// claimedBy returns the name of another Cluster that holds the physical
// cluster uid, or "" after recording obj as its holder. The holder is the
// first Cluster to claim it in this term, or, when the term has not seen
// uid yet, the oldest live Cluster the store shows holding it (uid recorded
// and not refused as a duplicate). Claims are kept in memory, so
// concurrent reconciles of two names for one cluster cannot both win.
func (c *Controller) claimedBy(ctx context.Context, obj *consensus.Object, uid string) (string, error) {
	if uid == "" {
		return "", nil
	}
	c.claimMu.Lock()
	defer c.claimMu.Unlock()
	if holder, ok := c.claims[uid]; ok && holder != obj.Name {
		return holder, nil
	}
	if _, ok := c.claims[uid]; !ok {
		list, err := c.cfg.Store.List(ctx, &ClusterKind, "", nil, consensus.ReadOptions{Stale: true})
		if err != nil {
			return "", err
		}
		var holder *consensus.Object
		for _, o := range list.Items {
			var st ClusterStatus
			if o.Name == obj.Name || o.DeletionTimestamp != nil || o.DecodeStatus(&st) != nil || st.UID != uid {
				continue
			}
			if r := meta.FindStatusCondition(st.Conditions, ConditionReady); r != nil && r.Reason == ReasonDuplicateCluster {
				continue
			}
			if holder == nil || o.CreationTimestamp.Before(&holder.CreationTimestamp) ||
				(o.CreationTimestamp.Equal(&holder.CreationTimestamp) && o.Name < holder.Name) {
				holder = o
			}
		}
		if holder != nil {
			c.claim(uid, holder.Name)
			return holder.Name, nil
		}
	}
	c.claim(uid, obj.Name)
	return "", nil
}

// claim records name as uid's holder, dropping any other claim of name's.
// claimMu is held.
func (c *Controller) claim(uid, name string) {
	if old, ok := c.claimOf[name]; ok && old != uid {
		delete(c.claims, old)
	}
	c.claims[uid], c.claimOf[name] = name, uid
}

// unclaim drops name's claim.
func (c *Controller) unclaim(name string) {
	c.claimMu.Lock()
	defer c.claimMu.Unlock()
	if uid, ok := c.claimOf[name]; ok {
		delete(c.claims, uid)
		delete(c.claimOf, name)
	}
}

// allocate picks two free tunnel ports for cluster: free of every
// Cluster's recorded ports and of those handed out but not yet recorded.
func (c *Controller) allocate(ctx context.Context, cluster string) (Ports, error) {
	list, err := c.cfg.Store.List(ctx, &ClusterKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return Ports{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	used := map[int]bool{}
	for _, o := range list.Items {
		var st ClusterStatus
		if o.Name != cluster && o.DecodeStatus(&st) == nil && st.Connection != nil {
			used[st.Connection.KubernetesAPI], used[st.Connection.PlatformAPI] = true, true
		}
	}
	for name, p := range c.reserved {
		if name != cluster {
			used[p.KubernetesAPI], used[p.PlatformAPI] = true, true
		}
	}
	p, err := c.cfg.TunnelPorts.allocate(used)
	if err == nil {
		c.reserved[cluster] = p
	}
	return p, err
}

// hold records ports as cluster's, so no other cluster is given them.
func (c *Controller) hold(cluster string, p Ports) {
	c.mu.Lock()
	c.reserved[cluster] = p
	c.mu.Unlock()
}

// forget drops what the controller keeps of a cluster that is gone.
func (c *Controller) forget(name string) {
	c.dropClient(name)
	c.mu.Lock()
	delete(c.tunnels, name)
	delete(c.reserved, name)
	delete(c.seen, name)
	c.mu.Unlock()
	c.unclaim(name)
}

// writeStatus stores st as obj's status and moves obj to the new
// resourceVersion.
func (c *Controller) writeStatus(ctx context.Context, obj *consensus.Object, st *ClusterStatus) error {
	next := obj.DeepCopy()
	if err := next.SetStatus(st); err != nil {
		return err
	}
	out, err := c.cfg.Store.UpdateStatus(ctx, &ClusterKind, next)
	if err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	obj.ResourceVersion, obj.Status = out.ResourceVersion, out.Status
	return nil
}

func (s *ClusterStatus) deepCopy() *ClusterStatus {
	out := *s
	out.Conditions = slices.Clone(s.Conditions)
	out.Zones = slices.Clone(s.Zones)
	if s.Connection != nil {
		p := *s.Connection
		out.Connection = &p
	}
	return &out
}
