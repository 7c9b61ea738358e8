package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	imagesapi "github.com/outpost-mesh/outpost/images/api"
)

// The resources of images.outpost.dev (images/api) live in the hub's
// group: Registry and ClusterRegistry give the hub's origin tier its
// credentials; the hub leader's controller keeps their finalizer and the
// Repositories' figures, aggregated from the ImageStats the sites report.
// See images/api/DESIGN.md.

const (
	// imageControlInterval is the pass of the hub leader's image
	// controllers (registries, repositories, syncs).
	imageControlInterval = time.Second
	// originLookupTimeout bounds reading a registry's settings for the
	// origin tier (a local, stale read).
	originLookupTimeout = 5 * time.Second
)

// registerImageKinds adds the image resources to the hub's group.
func (n *Node) registerImageKinds() error {
	return imagesapi.Register(n.group.Store().Registry())
}

// originRegistry returns the settings of the registry whose domain is ns
// from the hub's store, secrets unsealed: a ClusterRegistry first, else a
// Registry of any namespace (by namespace, then name), enabled ones only.
// Only hub members hold them (edge nodes reach the origin anonymously).
func (c *imageCache) originRegistry(ns string) (imagesapi.RegistrySpec, bool) {
	if !c.hub || ns == "" {
		return imagesapi.RegistrySpec{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), originLookupTimeout)
	defer cancel()
	st := c.n.group.Store()
	for _, k := range []*consensus.Kind{&imagesapi.ClusterRegistryKind, &imagesapi.RegistryKind} {
		list, err := st.List(ctx, k, "", nil, consensus.ReadOptions{Stale: true})
		if err != nil {
			c.log.Warn("read registries for the origin tier", "err", err)
			return imagesapi.RegistrySpec{}, false
		}
		sortObjects(list.Items)
		for _, o := range list.Items {
			var spec imagesapi.RegistrySpec
			if o.DecodeSpec(&spec) != nil || spec.Domain != ns || !spec.IsEnabled() {
				continue
			}
			plain, err := st.Unseal(k, o)
			if err == nil {
				err = plain.DecodeSpec(&spec)
			}
			if err != nil {
				c.log.Warn("registry credentials cannot be read", "registry", o.Namespace+"/"+o.Name, "err", err)
				spec.Credentials = nil
			}
			return spec, true
		}
	}
	return imagesapi.RegistrySpec{}, false
}

// originAuth is the origin tier's Auth: the matching registry's
// credentials, or anonymous.
func (c *imageCache) originAuth(ns string) authn.Authenticator {
	spec, ok := c.originRegistry(ns)
	if !ok || spec.Credentials == nil || spec.Credentials.Username == "" {
		return nil
	}
	return &authn.Basic{Username: spec.Credentials.Username, Password: spec.Credentials.Password}
}

// originInsecure is the origin tier's Insecure: the matching registry's
// insecure field.
func (c *imageCache) originInsecure(ns string) bool {
	spec, ok := c.originRegistry(ns)
	return ok && spec.Insecure
}

func sortObjects(items []*consensus.Object) {
	sort.Slice(items, func(i, j int) bool {
		if items[i].Namespace != items[j].Namespace {
			return items[i].Namespace < items[j].Namespace
		}
		return items[i].Name < items[j].Name
	})
}

// runImageControllers runs the hub leader's image controllers.
func (c *imageCache) runImageControllers(ctx context.Context) error {
	return c.n.whileLeader(ctx, imageControlInterval, "image controllers", func(ctx context.Context) error {
		return errors.Join(c.reconcileRegistries(ctx), c.reconcileSyncs(ctx), c.reconcileRepositories(ctx))
	})
}

// registryPair is a registry kind and the repository kind that names it.
type registryPair struct{ registry, repository *consensus.Kind }

var registryPairs = []registryPair{
	{&imagesapi.RegistryKind, &imagesapi.RepositoryKind},
	{&imagesapi.ClusterRegistryKind, &imagesapi.ClusterRepositoryKind},
}

// reconcileRegistries keeps the finalizer on every registry and, for one
// being deleted, deletes its repositories, then lets it go unless a
// pending ImageSync pulls from its domain (it waits for the sync to end).
func (c *imageCache) reconcileRegistries(ctx context.Context) error {
	st := c.n.group.Store()
	syncs, err := st.List(ctx, &imagesapi.ImageSyncKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range registryPairs {
		regs, err := st.List(ctx, p.registry, "", nil, consensus.ReadOptions{Stale: true})
		if err != nil {
			return err
		}
		repos, err := st.List(ctx, p.repository, "", nil, consensus.ReadOptions{Stale: true})
		if err != nil {
			return err
		}
		for _, reg := range regs.Items {
			errs = append(errs, c.reconcileRegistry(ctx, p, reg, repos.Items, syncs.Items))
		}
	}
	return errors.Join(errs...)
}

func (c *imageCache) reconcileRegistry(ctx context.Context, p registryPair, reg *consensus.Object, repos, syncs []*consensus.Object) error {
	st := c.n.group.Store()
	var spec imagesapi.RegistrySpec
	if err := reg.DecodeSpec(&spec); err != nil {
		return err
	}
	var mine []*consensus.Object
	for _, r := range repos {
		var rs imagesapi.RepositorySpec
		if r.Namespace == reg.Namespace && r.DecodeSpec(&rs) == nil && rs.RegistryName == reg.Name {
			mine = append(mine, r)
		}
	}
	if reg.DeletionTimestamp == nil {
		if !slices.Contains(reg.Finalizers, imagesapi.RegistryFinalizer) {
			next := reg.DeepCopy()
			next.Finalizers = append(next.Finalizers, imagesapi.RegistryFinalizer)
			if _, err := st.Update(ctx, p.registry, next); err != nil && !apierrors.IsConflict(err) {
				return fmt.Errorf("add the finalizer of %s %s: %w", p.registry.Kind, reg.Name, err)
			}
			return nil // the next pass writes the status
		}
		return c.writeRegistryStatus(ctx, p.registry, reg, imagesapi.RegistryStatus{Repositories: len(mine)})
	}
	if !slices.Contains(reg.Finalizers, imagesapi.RegistryFinalizer) {
		return nil
	}
	for _, r := range mine {
		if r.DeletionTimestamp != nil {
			continue
		}
		if _, err := st.Delete(ctx, p.repository, r.Namespace, r.Name, 0, ""); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete %s %s of %s %s: %w", p.repository.Kind, r.Name, p.registry.Kind, reg.Name, err)
		}
	}
	if len(mine) > 0 {
		return c.writeRegistryStatus(ctx, p.registry, reg, imagesapi.RegistryStatus{Repositories: len(mine), Message: fmt.Sprintf("deleting: removing %d repositories", len(mine))})
	}
	if held := pendingSyncsOf(spec.Domain, syncs); len(held) > 0 {
		return c.writeRegistryStatus(ctx, p.registry, reg, imagesapi.RegistryStatus{
			Message: fmt.Sprintf("deleting: held until ImageSync %s ends (it pulls from %s)", held[0], spec.Domain),
		})
	}
	next := reg.DeepCopy()
	next.Finalizers = slices.DeleteFunc(next.Finalizers, func(f string) bool { return f == imagesapi.RegistryFinalizer })
	if _, err := st.Update(ctx, p.registry, next); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
		return fmt.Errorf("release %s %s: %w", p.registry.Kind, reg.Name, err)
	}
	c.log.Info("registry deleted", "kind", p.registry.Kind, "name", reg.Namespace+"/"+reg.Name)
	return nil
}

// pendingSyncsOf lists the ImageSyncs not yet ended whose image is on
// domain.
func pendingSyncsOf(domain string, syncs []*consensus.Object) []string {
	var out []string
	for _, o := range syncs {
		var spec imagesapi.ImageSyncSpec
		var st imagesapi.ImageSyncStatus
		if o.DecodeSpec(&spec) != nil {
			continue
		}
		_ = o.DecodeStatus(&st)
		ref, err := imagesapi.ParseImage(spec.Image)
		if err == nil && ref.Registry == domain && !imagesapi.Terminal(st.Phase) && o.DeletionTimestamp == nil {
			out = append(out, o.Name)
		}
	}
	sort.Strings(out)
	return out
}

func (c *imageCache) writeRegistryStatus(ctx context.Context, k *consensus.Kind, obj *consensus.Object, want imagesapi.RegistryStatus) error {
	var cur imagesapi.RegistryStatus
	if len(obj.Status) > 0 && obj.DecodeStatus(&cur) == nil && cur == want {
		return nil
	}
	next := obj.DeepCopy()
	if err := next.SetStatus(want); err != nil {
		return err
	}
	if _, err := c.n.group.Store().UpdateStatus(ctx, k, next); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// reconcileRepositories writes each Repository's and ClusterRepository's
// status from the nodes' ImageStats: pulls summed, the largest copy's
// size and artifacts, the latest pull, the nodes holding it.
func (c *imageCache) reconcileRepositories(ctx context.Context) error {
	st := c.n.group.Store()
	stats, err := st.List(ctx, &imagesapi.ImageStatsKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return err
	}
	agg := aggregateUsage(stats.Items)
	var errs []error
	for _, p := range registryPairs {
		regs, err := st.List(ctx, p.registry, "", nil, consensus.ReadOptions{Stale: true})
		if err != nil {
			return err
		}
		domains := map[[2]string]string{}
		for _, r := range regs.Items {
			var spec imagesapi.RegistrySpec
			if r.DecodeSpec(&spec) == nil {
				domains[[2]string{r.Namespace, r.Name}] = spec.Domain
			}
		}
		repos, err := st.List(ctx, p.repository, "", nil, consensus.ReadOptions{Stale: true})
		if err != nil {
			return err
		}
		for _, r := range repos.Items {
			var spec imagesapi.RepositorySpec
			if r.DecodeSpec(&spec) != nil || r.DeletionTimestamp != nil {
				continue
			}
			want := imagesapi.RepositoryStatus{}
			domain, ok := domains[[2]string{r.Namespace, spec.RegistryName}]
			if !ok {
				want.Message = fmt.Sprintf("%s %q not found", p.registry.Kind, spec.RegistryName)
			} else {
				want = agg[[2]string{domain, spec.RepositoryName}]
			}
			errs = append(errs, writeRepositoryStatus(ctx, st, p.repository, r, want))
		}
	}
	return errors.Join(errs...)
}

// aggregateUsage sums the nodes' figures by (registry domain, repository).
func aggregateUsage(stats []*consensus.Object) map[[2]string]imagesapi.RepositoryStatus {
	out := map[[2]string]imagesapi.RepositoryStatus{}
	for _, o := range stats {
		var s imagesapi.ImageStatsStatus
		if o.DecodeStatus(&s) != nil {
			continue
		}
		for _, u := range s.Repositories {
			k := [2]string{u.Registry, u.Repository}
			a := out[k]
			a.PullCount += u.Pulls
			a.ArtifactCount = max(a.ArtifactCount, u.Artifacts)
			a.SizeBytes = max(a.SizeBytes, u.SizeBytes)
			if u.SizeBytes > 0 || u.Artifacts > 0 {
				a.Nodes++
			}
			if u.LastPulled != nil && (a.LastPulled == nil || a.LastPulled.Before(u.LastPulled)) {
				a.LastPulled = u.LastPulled
			}
			out[k] = a
		}
	}
	return out
}

func writeRepositoryStatus(ctx context.Context, st *consensus.Store, k *consensus.Kind, obj *consensus.Object, want imagesapi.RepositoryStatus) error {
	var cur imagesapi.RepositoryStatus
	if len(obj.Status) > 0 && obj.DecodeStatus(&cur) == nil && jsonEq(cur, want) {
		return nil
	}
	next := obj.DeepCopy()
	if err := next.SetStatus(want); err != nil {
		return err
	}
	if _, err := st.UpdateStatus(ctx, k, next); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// writeImageStats records a node's figures at the hub, if the node is of
// site (a site reports for its own nodes only).
func (n *Node) writeImageStats(ctx context.Context, site, node string, s imagesapi.ImageStatsStatus) error {
	st := n.group.Store()
	nd, err := st.Get(ctx, &NodeKind, "", node, consensus.ReadOptions{Stale: true})
	if apierrors.IsNotFound(err) {
		return nil // not on the roster (yet): the node reports again
	}
	if err != nil {
		return err
	}
	if nd.Labels["outpost.dev/site"] != site {
		n.log.Warn("a site reported image figures for a node of another site", "peer_site", site, "peer", node)
		return nil
	}
	s.Site = site
	now := metav1.Now()
	s.Updated = &now
	cur, err := st.Get(ctx, &imagesapi.ImageStatsKind, "", node, consensus.ReadOptions{Stale: true})
	if apierrors.IsNotFound(err) {
		o := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{imagesapi.SiteLabel: site}}}
		cur, err = st.Create(ctx, &imagesapi.ImageStatsKind, o)
	}
	if err != nil {
		return err
	}
	next := cur.DeepCopy()
	if next.Labels[imagesapi.SiteLabel] != site {
		if next.Labels == nil {
			next.Labels = map[string]string{}
		}
		next.Labels[imagesapi.SiteLabel] = site
		if next, err = st.Update(ctx, &imagesapi.ImageStatsKind, next); err != nil {
			return err
		}
		next = next.DeepCopy()
	}
	if err := next.SetStatus(s); err != nil {
		return err
	}
	_, err = st.UpdateStatus(ctx, &imagesapi.ImageStatsKind, next)
	return err
}

func hitRatio(hits, misses uint64) float64 {
	if hits+misses == 0 {
		return 0
	}
	return float64(hits) / float64(hits+misses)
}

// Node figures travel node → site leader (POST /outpost/v1/imagestats on
// a blob stream, every statsInterval when they changed, at least every
// statsRefresh) → hub (the site link, at most statsPerReport nodes a
// report, each acknowledged by its sequence number) → ImageStats. The
// answer to a node's post carries the site's pins.
const (
	statsInterval  = 2 * time.Second
	statsRefresh   = 10 * time.Second
	statsPerReport = 16
	maxStatsReport = 1 << 20
)

// statsPost is what a node posts to its site leader.
type statsPost struct {
	// Stats is nil when unchanged since the last post (the node only asks
	// for the pins).
	Stats *imagesapi.ImageStatsStatus `json:"stats,omitempty"`
}

// statsAnswer is the site leader's answer: the pins the hub asks of the
// site, once the leader has heard from the hub.
type statsAnswer struct {
	PinsKnown bool     `json:"pinsKnown"`
	Pins      []pinRef `json:"pins,omitempty"`
}

// nodeStats reads this node's figures.
func (c *imageCache) nodeStats() (imagesapi.ImageStatsStatus, error) {
	fs, ss := c.chain.Stats(), c.store.Stats()
	out := imagesapi.ImageStatsStatus{
		BlobHits: fs.BlobHits, BlobMisses: fs.BlobMisses, HitRatio: hitRatio(fs.BlobHits, fs.BlobMisses),
		BytesFromPeers: fs.Tiers["peer"].Bytes, BytesFromHub: fs.Tiers["hub"].Bytes, BytesFromOrigin: fs.Tiers["origin"].Bytes,
		BytesSaved: fs.Tiers["peer"].Bytes, StoreBytes: ss.Bytes,
	}
	repos, err := c.store.Repositories()
	if err != nil {
		return out, err
	}
	sort.SliceStable(repos, func(i, j int) bool {
		if repos[i].Pulls != repos[j].Pulls {
			return repos[i].Pulls > repos[j].Pulls
		}
		return repos[i].Size > repos[j].Size
	})
	if len(repos) > imagesapi.MaxStatsRepositories {
		repos, out.Truncated = repos[:imagesapi.MaxStatsRepositories], true
	}
	for _, r := range repos {
		u := imagesapi.RepositoryUsage{Registry: r.Namespace, Repository: r.Name, Artifacts: r.Manifests, Pulls: r.Pulls, SizeBytes: r.Size}
		if !r.LastPulled.IsZero() {
			t := metav1.NewTime(r.LastPulled.Truncate(time.Second))
			u.LastPulled = &t
		}
		out.Repositories = append(out.Repositories, u)
	}
	return out, nil
}

// runStatsReport posts this node's figures to its site leader and applies
// the site's pins from the answer.
func (r *imageResources) runStatsReport(ctx context.Context) error {
	t := time.NewTicker(statsInterval)
	defer t.Stop()
	var last imagesapi.ImageStatsStatus
	var lastLeader string
	var lastSent time.Time
	sent := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		st, err := r.c.nodeStats()
		if err != nil {
			r.c.log.Debug("read image figures", "err", err)
			continue
		}
		leader := r.leaderName()
		post := statsPost{}
		if !sent || leader != lastLeader || !jsonEq(st, last) || time.Since(lastSent) > statsRefresh {
			post.Stats = &st
		}
		ans, err := r.postStats(ctx, leader, post)
		if err != nil {
			r.c.log.Debug("image figures not delivered", "err", err)
			sent = false
			continue
		}
		if post.Stats != nil {
			last, lastLeader, lastSent, sent = st, leader, time.Now(), true
		}
		if ans.PinsKnown {
			r.reconcilePins(ans.Pins)
		}
	}
}

// leaderName is the site leader's name, "" when there is none.
func (r *imageResources) leaderName() string {
	g := r.c.n.group.Raft()
	if g == nil {
		return ""
	}
	_, id := g.LeaderWithID()
	return string(id)
}

// postStats delivers a post to the site leader (itself included).
func (r *imageResources) postStats(ctx context.Context, leader string, post statsPost) (statsAnswer, error) {
	n := r.c.n
	switch leader {
	case "":
		return statsAnswer{}, fmt.Errorf("site %s has no leader", n.id.Site)
	case n.id.Name:
		return r.acceptStats(n.id.Name, post), nil
	}
	var ans statsAnswer
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := r.c.postJSON(ctx, leader, "/outpost/v1/imagestats", post, &ans, maxStatsReport)
	return ans, err
}

// acceptStats queues a node's figures for the hub (site leader) and
// answers with the site's pins.
func (r *imageResources) acceptStats(node string, post statsPost) statsAnswer {
	r.mu.Lock()
	defer r.mu.Unlock()
	if post.Stats != nil {
		r.seq++
		r.outStats[node] = nodeStatsReport{Node: node, Seq: r.seq, Status: *post.Stats}
	}
	return statsAnswer{PinsKnown: r.pinsKnown, Pins: slices.Clone(r.pins)}
}

// reconcilePins makes this node's store pins the site's: every pin in the
// store is the hub's (pins have no other source).
func (r *imageResources) reconcilePins(want []pinRef) {
	have, err := r.c.store.Pins()
	if err != nil {
		r.c.log.Debug("list pins", "err", err)
		return
	}
	wantSet := map[pinRef]bool{}
	for _, p := range want {
		wantSet[p] = true
	}
	for _, p := range have {
		k := pinRef{Registry: p.Namespace, Repository: p.Repository, Reference: p.Reference}
		if wantSet[k] {
			delete(wantSet, k)
			continue
		}
		if err := r.c.store.Unpin(p.Namespace, p.Repository, p.Reference); err != nil {
			r.c.log.Debug("unpin", "image", k, "err", err)
		} else {
			r.c.log.Info("image unpinned", "image", k.String())
		}
	}
	for p := range wantSet {
		if err := r.c.store.Pin(p.Registry, p.Repository, p.Reference); err != nil {
			r.c.log.Warn("pin", "image", p.String(), "err", err)
		} else {
			r.c.log.Info("image pinned", "image", p.String())
		}
	}
}
