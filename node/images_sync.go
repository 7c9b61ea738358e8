package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/gossip"
	imagesapi "github.com/outpost-mesh/outpost/images/api"
	"github.com/outpost-mesh/outpost/images/store"
)

// ImageSync: the hub leader's controller keeps each sync's status; the
// assignments of a site cross the site link in the reply to its report
// (as OTA's do); the site leader places the image on itself through its
// fetch chain (so a blob crosses the WAN once per site, and the site's
// other nodes get it from that peer) and reports progress in its next
// reports. See images/api/DESIGN.md.
const (
	// maxAssignments bounds the syncs one reply assigns to a site.
	maxAssignments = 32
	// maxPins bounds the pins one reply carries.
	maxPins = 256
	// syncWorkers bounds the syncs a site leader runs at once.
	syncWorkers = 2
	// blobAttempts is how often a sync asks the chain for one blob.
	blobAttempts = 3
	// maxSyncErrors bounds the errors a site's progress keeps.
	maxSyncErrors = 10
)

// imagesLinkReport is the images part of a site's report to the hub.
type imagesLinkReport struct {
	Stats []nodeStatsReport `json:"stats,omitempty"`
	Syncs []syncReport      `json:"syncs,omitempty"`
}

// imagesLinkReply is the images part of the hub's answer.
type imagesLinkReply struct {
	StatsAcked  []statsAck       `json:"statsAcked,omitempty"`
	Assignments []syncAssignment `json:"assignments,omitempty"`
	Pins        []pinRef         `json:"pins,omitempty"`
}

// nodeStatsReport is one node's figures, numbered by the site leader.
type nodeStatsReport struct {
	Node   string                     `json:"node"`
	Seq    uint64                     `json:"seq"`
	Status imagesapi.ImageStatsStatus `json:"status"`
}

// statsAck acknowledges a nodeStatsReport.
type statsAck struct {
	Node string `json:"node"`
	Seq  uint64 `json:"seq"`
}

// syncAssignment asks a site to place an image.
type syncAssignment struct {
	Name      string   `json:"name"`
	UID       string   `json:"uid"`
	Image     pinRef   `json:"image"`
	Platforms []string `json:"platforms,omitempty"`
}

// syncReport is a site's progress on an assignment.
type syncReport struct {
	Name     string                 `json:"name"`
	UID      string                 `json:"uid"`
	Progress imagesapi.SiteProgress `json:"progress"`
}

// pinRef names an image: registry domain, repository, tag or digest.
type pinRef struct {
	Registry   string `json:"registry"`
	Repository string `json:"repository"`
	Reference  string `json:"reference"`
}

func (p pinRef) String() string {
	return imagesapi.ImageRef{Registry: p.Registry, Repository: p.Repository, Reference: p.Reference}.String()
}

// imageResources is a node's share of the image resources: its figures
// and pins, and, while it leads its site, the site's figures owed to the
// hub and the syncs it runs.
type imageResources struct {
	c    *imageCache
	wake chan struct{}

	mu        sync.Mutex
	seq       uint64
	outStats  map[string]nodeStatsReport
	pinsKnown bool
	pins      []pinRef
	jobs      map[string]*syncJob // by ImageSync UID
}

func newImageResources(c *imageCache) *imageResources {
	return &imageResources{c: c, wake: make(chan struct{}, 1), outStats: map[string]nodeStatsReport{}, jobs: map[string]*syncJob{}}
}

// serve starts the loops: every node reports its figures and runs the
// syncs while it leads its site; hub members also run the controllers
// and the hub site's in-process exchange.
func (r *imageResources) serve(ctx context.Context, eg *errgroup.Group) {
	eg.Go(func() error { return r.runStatsReport(ctx) })
	eg.Go(func() error { return r.runSyncJobs(ctx) })
	if r.c.hub {
		eg.Go(func() error { return r.c.runImageControllers(ctx) })
		eg.Go(func() error { return r.c.n.runHubSiteImages(ctx) })
	}
}

// runHubSiteImages is the hub site's link to its own controllers.
func (n *Node) runHubSiteImages(ctx context.Context) error {
	return n.whileLeader(ctx, imageControlInterval, "hub site image exchange", func(ctx context.Context) error {
		reply, err := n.imagesExchange(ctx, n.id.Site, n.imagesOutbox())
		if err != nil {
			return err
		}
		n.imagesInbox(reply)
		return nil
	})
}

// imagesOutbox gathers what the site leader sends the hub: the oldest
// figures not yet acknowledged, and the progress of every sync.
func (n *Node) imagesOutbox() *imagesLinkReport {
	if n.images == nil {
		return nil
	}
	r := n.images.res
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := &imagesLinkReport{}
	for _, s := range r.outStats {
		rep.Stats = append(rep.Stats, s)
	}
	sort.Slice(rep.Stats, func(i, j int) bool { return rep.Stats[i].Seq < rep.Stats[j].Seq })
	if len(rep.Stats) > statsPerReport {
		rep.Stats = rep.Stats[:statsPerReport]
	}
	for uid, j := range r.jobs {
		rep.Syncs = append(rep.Syncs, syncReport{Name: j.a.Name, UID: uid, Progress: j.snapshot()})
	}
	sort.Slice(rep.Syncs, func(i, j int) bool { return rep.Syncs[i].Name < rep.Syncs[j].Name })
	return rep
}

// imagesInbox applies the hub's answer at the site leader.
func (n *Node) imagesInbox(reply *imagesLinkReply) {
	if reply == nil || n.images == nil {
		return
	}
	r := n.images.res
	r.mu.Lock()
	for _, a := range reply.StatsAcked {
		if s, ok := r.outStats[a.Node]; ok && s.Seq == a.Seq {
			delete(r.outStats, a.Node)
		}
	}
	r.pins, r.pinsKnown = reply.Pins, true
	listed := map[string]bool{}
	for _, a := range reply.Assignments {
		listed[a.UID] = true
		if _, ok := r.jobs[a.UID]; !ok {
			r.jobs[a.UID] = newSyncJob(a, n.id.Name)
		}
	}
	for uid, j := range r.jobs {
		if !listed[uid] {
			j.stop() // ended at the hub (recorded), or the ImageSync is gone
			delete(r.jobs, uid)
		}
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// imagesExchange is the hub's side: record a site's figures and progress,
// and answer with its assignments and pins.
func (n *Node) imagesExchange(ctx context.Context, site string, rep *imagesLinkReport) (*imagesLinkReply, error) {
	c := n.images
	if c == nil || !c.hub {
		return nil, nil
	}
	reply := &imagesLinkReply{}
	var errs []error
	if rep != nil {
		for _, s := range rep.Stats {
			if err := n.writeImageStats(ctx, site, s.Node, s.Status); err != nil {
				errs = append(errs, err)
				continue
			}
			reply.StatsAcked = append(reply.StatsAcked, statsAck{Node: s.Node, Seq: s.Seq})
		}
		for _, p := range rep.Syncs {
			errs = append(errs, c.recordProgress(ctx, site, p))
		}
	}
	syncs, err := n.group.Store().List(ctx, &imagesapi.ImageSyncKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return nil, err
	}
	reply.Assignments, reply.Pins = assignmentsFor(site, syncs.Items)
	if rep == nil {
		// The site's leader has no image cache (--registry-addr ""):
		// it cannot place an image.
		for _, a := range reply.Assignments {
			p := imagesapi.SiteProgress{Phase: imagesapi.PhaseFailed, Errors: []string{"the site's leader has no image cache (its --registry-addr is \"\"): it cannot place images"}}
			errs = append(errs, c.recordProgress(ctx, site, syncReport{Name: a.Name, UID: a.UID, Progress: p}))
		}
		reply.Assignments = nil
	}
	if err := errors.Join(errs...); err != nil {
		n.log.Debug("image exchange", "peer_site", site, "err", err)
	}
	return reply, nil
}

// assignmentsFor lists the syncs site has yet to finish and the images it
// must keep pinned.
func assignmentsFor(site string, syncs []*consensus.Object) ([]syncAssignment, []pinRef) {
	sortObjects(syncs)
	var out []syncAssignment
	var pins []pinRef
	for _, o := range syncs {
		var spec imagesapi.ImageSyncSpec
		if o.DeletionTimestamp != nil || o.DecodeSpec(&spec) != nil || !slices.Contains(spec.Sites, site) {
			continue
		}
		ref, err := imagesapi.ParseImage(spec.Image)
		if err != nil {
			continue
		}
		img := pinRef{Registry: ref.Registry, Repository: ref.Repository, Reference: ref.Reference}
		if spec.Pin && len(pins) < maxPins && !slices.Contains(pins, img) {
			pins = append(pins, img)
		}
		var st imagesapi.ImageSyncStatus
		_ = o.DecodeStatus(&st)
		if imagesapi.Terminal(st.Phase) || imagesapi.Terminal(siteEntry(&st, site).Phase) || len(out) >= maxAssignments {
			continue
		}
		out = append(out, syncAssignment{Name: o.Name, UID: string(o.UID), Image: img, Platforms: spec.Platforms})
	}
	return out, pins
}

// siteEntry returns the progress of site in st, adding it if missing.
func siteEntry(st *imagesapi.ImageSyncStatus, site string) *imagesapi.SiteProgress {
	for i := range st.Sites {
		if st.Sites[i].Site == site {
			return &st.Sites[i]
		}
	}
	st.Sites = append(st.Sites, imagesapi.SiteProgress{Site: site, Phase: imagesapi.PhasePending})
	return &st.Sites[len(st.Sites)-1]
}

// recordProgress writes a site's progress into its ImageSync, unless the
// site's part has ended there already.
func (c *imageCache) recordProgress(ctx context.Context, site string, p syncReport) error {
	st := c.n.group.Store()
	for range 4 {
		o, err := st.Get(ctx, &imagesapi.ImageSyncKind, "", p.Name, consensus.ReadOptions{Stale: true})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if string(o.UID) != p.UID {
			return nil // another object of that name
		}
		var spec imagesapi.ImageSyncSpec
		var status imagesapi.ImageSyncStatus
		if err := o.DecodeSpec(&spec); err != nil {
			return err
		}
		_ = o.DecodeStatus(&status)
		e := siteEntry(&status, site)
		if imagesapi.Terminal(e.Phase) || imagesapi.Terminal(status.Phase) {
			return nil
		}
		prog := p.Progress
		prog.Site = site
		*e = prog
		summarize(&spec, &status, time.Now())
		next := o.DeepCopy()
		if err := next.SetStatus(status); err != nil {
			return err
		}
		_, err = st.UpdateStatus(ctx, &imagesapi.ImageSyncKind, next)
		if apierrors.IsConflict(err) {
			continue
		}
		return err
	}
	return fmt.Errorf("ImageSync %s: too many concurrent changes", p.Name)
}

// summarize sets the totals and the phase of a sync from its sites.
func summarize(spec *imagesapi.ImageSyncSpec, st *imagesapi.ImageSyncStatus, now time.Time) {
	st.BytesSent, st.BytesSaved = 0, 0
	ended, failed, started := 0, 0, false
	var failedSites []string
	for _, site := range spec.Sites {
		e := siteEntry(st, site)
		st.BytesSent += e.BytesSent
		st.BytesSaved += e.BytesPresent
		switch {
		case e.Phase == imagesapi.PhaseFailed:
			ended++
			failed++
			failedSites = append(failedSites, site)
		case e.Phase == imagesapi.PhaseSucceeded:
			ended++
		case e.Phase == imagesapi.PhaseRunning:
			started = true
		}
	}
	st.Sites = slices.DeleteFunc(st.Sites, func(e imagesapi.SiteProgress) bool { return !slices.Contains(spec.Sites, e.Site) })
	if st.StartTime == nil {
		t := metav1.NewTime(now)
		st.StartTime = &t
	}
	switch {
	case ended == len(spec.Sites) && failed > 0:
		st.Phase, st.Message = imagesapi.PhaseFailed, "failed at "+strings.Join(failedSites, ", ")
	case ended == len(spec.Sites):
		st.Phase, st.Message = imagesapi.PhaseSucceeded, ""
	case started || ended > 0:
		st.Phase = imagesapi.PhaseRunning
	default:
		st.Phase = imagesapi.PhasePending
	}
	if imagesapi.Terminal(st.Phase) && st.CompletionTime == nil {
		t := metav1.NewTime(now)
		st.CompletionTime = &t
	}
}

// reconcileSyncs starts new syncs' status and fails the sites the hub
// does not know.
func (c *imageCache) reconcileSyncs(ctx context.Context) error {
	st := c.n.group.Store()
	syncs, err := st.List(ctx, &imagesapi.ImageSyncKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return err
	}
	var errs []error
	for _, o := range syncs.Items {
		var spec imagesapi.ImageSyncSpec
		var status imagesapi.ImageSyncStatus
		if o.DeletionTimestamp != nil || o.DecodeSpec(&spec) != nil {
			continue
		}
		_ = o.DecodeStatus(&status)
		if imagesapi.Terminal(status.Phase) {
			continue
		}
		before, _ := json.Marshal(status)
		for _, site := range spec.Sites {
			e := siteEntry(&status, site)
			if e.Phase != imagesapi.PhasePending {
				continue
			}
			if _, err := st.Get(ctx, &SiteKind, "", site, consensus.ReadOptions{Stale: true}); apierrors.IsNotFound(err) {
				e.Phase, e.Errors = imagesapi.PhaseFailed, []string{fmt.Sprintf("site %q is not known to the hub", site)}
			}
		}
		summarize(&spec, &status, time.Now())
		if after, _ := json.Marshal(status); bytes.Equal(before, after) {
			continue
		}
		next := o.DeepCopy()
		if err := next.SetStatus(status); err != nil {
			return err
		}
		if _, err := st.UpdateStatus(ctx, &imagesapi.ImageSyncKind, next); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// syncJob is one assignment at the site leader.
type syncJob struct {
	a    syncAssignment
	mu   sync.Mutex
	prog imagesapi.SiteProgress
	// started is set when a worker took the job; cancel stops it.
	started bool
	cancel  context.CancelFunc
}

func newSyncJob(a syncAssignment, node string) *syncJob {
	return &syncJob{a: a, prog: imagesapi.SiteProgress{Phase: imagesapi.PhasePending, Node: node}}
}

func (j *syncJob) snapshot() imagesapi.SiteProgress {
	j.mu.Lock()
	defer j.mu.Unlock()
	p := j.prog
	p.Errors = slices.Clone(p.Errors)
	return p
}

func (j *syncJob) update(f func(p *imagesapi.SiteProgress)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	f(&j.prog)
	now := metav1.Now()
	j.prog.Updated = &now
}

func (j *syncJob) stop() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cancel != nil {
		j.cancel()
	}
}

// runSyncJobs runs the site's syncs while this node leads its site; when
// it stops leading, they are canceled (the next leader runs them again;
// what was placed is then present and counted as saved).
func (r *imageResources) runSyncJobs(ctx context.Context) error {
	var eg errgroup.Group
	eg.SetLimit(syncWorkers)
	defer func() {
		r.mu.Lock()
		for _, j := range r.jobs {
			j.stop()
		}
		r.mu.Unlock()
		_ = eg.Wait()
	}()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-t.C:
		}
		r.mu.Lock()
		if !r.c.n.group.IsLeader() {
			for uid, j := range r.jobs {
				j.stop()
				delete(r.jobs, uid)
			}
			clear(r.outStats)
			r.pinsKnown = false
			r.mu.Unlock()
			continue
		}
		for _, j := range r.jobs {
			if j.started {
				continue
			}
			jctx, cancel := context.WithCancel(ctx)
			if !eg.TryGo(func() error { defer cancel(); r.c.place(jctx, j); return nil }) {
				cancel()
				break
			}
			j.mu.Lock()
			j.started, j.cancel = true, cancel
			j.mu.Unlock()
		}
		r.mu.Unlock()
	}
}

// manifestDoc is the part of a manifest or index a sync reads.
type manifestDoc struct {
	MediaType string               `json:"mediaType"`
	Manifests []ocispec.Descriptor `json:"manifests"`
	Config    *ocispec.Descriptor  `json:"config"`
	Layers    []ocispec.Descriptor `json:"layers"`
}

// place fetches the image of j through this node's chain: the manifest,
// the platforms' manifests of an index, and every blob the site lacks.
// A blob this node or an alive site peer holds is counted present; the
// rest is fetched (from the hub tier: it crosses the WAN) and counted
// sent.
func (c *imageCache) place(ctx context.Context, j *syncJob) {
	a := j.a
	j.update(func(p *imagesapi.SiteProgress) { p.Phase = imagesapi.PhaseRunning })
	fail := func(err error) {
		j.update(func(p *imagesapi.SiteProgress) {
			p.Phase = imagesapi.PhaseFailed
			if len(p.Errors) < maxSyncErrors {
				p.Errors = append(p.Errors, err.Error())
			}
		})
		c.log.Warn("image sync failed", "sync", a.Name, "image", a.Image.String(), "err", err)
	}
	if ctx.Err() != nil {
		return
	}
	ns, repo := a.Image.Registry, a.Image.Repository
	top, err := c.chain.Manifest(ctx, ns, repo, a.Image.Reference)
	if err != nil {
		fail(fmt.Errorf("manifest %s: %w", a.Image, err))
		return
	}
	d := top.Digest
	if d == "" {
		d = digest.FromBytes(top.Body)
	}
	j.update(func(p *imagesapi.SiteProgress) { p.Digest, p.Manifests = d.String(), 1 })
	var doc manifestDoc
	if err := json.Unmarshal(top.Body, &doc); err != nil {
		fail(fmt.Errorf("manifest %s: %w", a.Image, err))
		return
	}
	images := []manifestDoc{doc}
	if len(doc.Manifests) > 0 {
		children, err := c.platformManifests(doc.Manifests, a.Platforms)
		if err != nil {
			fail(fmt.Errorf("%s: %w", a.Image, err))
			return
		}
		images = images[:0]
		for _, child := range children {
			var cdoc manifestDoc
			m, err := c.chain.Manifest(ctx, ns, repo, child.Digest.String())
			if err == nil {
				err = json.Unmarshal(m.Body, &cdoc)
			}
			if err != nil {
				fail(fmt.Errorf("manifest %s of %s: %w", child.Digest, a.Image, err))
				return
			}
			images = append(images, cdoc)
			j.update(func(p *imagesapi.SiteProgress) { p.Manifests++ })
		}
	}
	var blobs []ocispec.Descriptor
	seen := map[digest.Digest]bool{}
	for _, m := range images {
		descs := m.Layers
		if m.Config != nil {
			descs = append([]ocispec.Descriptor{*m.Config}, descs...)
		}
		for _, b := range descs {
			if !seen[b.Digest] {
				seen[b.Digest] = true
				blobs = append(blobs, b)
			}
		}
	}
	var total int64
	for _, b := range blobs {
		total += b.Size
	}
	j.update(func(p *imagesapi.SiteProgress) { p.Blobs, p.BytesTotal = len(blobs), total })
	failed := false
	for _, b := range blobs {
		if err := c.placeBlob(ctx, j, ns, repo, b); err != nil {
			if ctx.Err() != nil {
				return
			}
			fail(fmt.Errorf("blob %s: %w", b.Digest, err))
			failed = true
		}
	}
	if !failed {
		j.update(func(p *imagesapi.SiteProgress) { p.Phase = imagesapi.PhaseSucceeded })
		p := j.snapshot()
		c.log.Info("image placed at the site", "sync", a.Name, "image", a.Image.String(), "bytes_sent", p.BytesSent, "bytes_present", p.BytesPresent)
	}
}

// placeBlob makes the site hold one blob.
func (c *imageCache) placeBlob(ctx context.Context, j *syncJob, ns, repo string, b ocispec.Descriptor) error {
	present := func(n int64) {
		j.update(func(p *imagesapi.SiteProgress) { p.BytesPresent += n; p.BlobsDone++ })
	}
	if _, err := c.store.Stat(b.Digest); err == nil {
		present(b.Size)
		return nil
	}
	if len(c.index.Holders(ctx, b.Digest)) > 0 {
		present(b.Size)
		return nil
	}
	var last error
	for range blobAttempts {
		blob, err := c.chain.Blob(ctx, ns, repo, b.Digest)
		if err != nil {
			last = err
			if ctx.Err() != nil {
				return err
			}
			continue
		}
		_, err = io.Copy(progressWriter{j}, blob.Content)
		blob.Content.Close()
		if err == nil {
			j.update(func(p *imagesapi.SiteProgress) { p.BlobsDone++ })
			return nil
		}
		last = err
		if ctx.Err() != nil {
			return err
		}
	}
	return last
}

// progressWriter counts the bytes of a blob fetched for a sync as sent.
type progressWriter struct{ j *syncJob }

func (w progressWriter) Write(b []byte) (int, error) {
	w.j.update(func(p *imagesapi.SiteProgress) { p.BytesSent += int64(len(b)) })
	return len(b), nil
}

// platformManifests chooses the manifests of an index for platforms, or
// (none given) for the platforms the site's alive nodes run.
func (c *imageCache) platformManifests(list []ocispec.Descriptor, platforms []string) ([]ocispec.Descriptor, error) {
	type plat struct{ os, arch, variant string }
	var want []plat
	for _, s := range platforms {
		os, arch, variant, err := imagesapi.ParsePlatform(s)
		if err != nil {
			return nil, err
		}
		want = append(want, plat{os, arch, variant})
	}
	if len(want) == 0 {
		for _, m := range c.n.gossip.Members() {
			if m.State == gossip.Alive && m.OS != "" && m.Arch != "" && !slices.Contains(want, plat{m.OS, m.Arch, ""}) {
				want = append(want, plat{m.OS, m.Arch, ""})
			}
		}
		if self := (plat{goos, goarch, ""}); !slices.Contains(want, self) {
			want = append(want, self)
		}
	}
	var out []ocispec.Descriptor
	var names []string
	for _, w := range want {
		names = append(names, strings.TrimSuffix(w.os+"/"+w.arch+"/"+w.variant, "/"))
		for _, d := range list {
			p := d.Platform
			if p != nil && p.OS == w.os && p.Architecture == w.arch && (w.variant == "" || p.Variant == w.variant) && !slices.ContainsFunc(out, func(o ocispec.Descriptor) bool { return o.Digest == d.Digest }) {
				out = append(out, d)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the index has no image for %s", strings.Join(names, ", "))
	}
	return out, nil
}

// postJSON posts in to a site peer over a blob stream and decodes the
// answer into out.
func (c *imageCache) postJSON(ctx context.Context, peer, path string, in, out any, limit int64) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+peer+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.peers.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s%s: %s: %s", peer, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, out)
}

// serveStatsPost takes a node's figures (site leader) and answers with
// the site's pins.
func (c *imageCache) serveStatsPost(w http.ResponseWriter, r *http.Request) {
	p, ok := streamPeer(r.Context())
	if !ok || p.Site != c.n.id.Site {
		http.Error(w, "only nodes of this site report their image figures here", http.StatusForbidden)
		return
	}
	if !c.n.group.IsLeader() {
		http.Error(w, "not the site leader", http.StatusServiceUnavailable)
		return
	}
	var post statsPost
	dec := json.NewDecoder(io.LimitReader(r.Body, maxStatsReport))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&post); err != nil {
		http.Error(w, "decode image figures: "+err.Error(), http.StatusBadRequest)
		return
	}
	if post.Stats != nil {
		for _, u := range post.Stats.Repositories {
			if err := store.ValidateNamespace(u.Registry); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		if len(post.Stats.Repositories) > imagesapi.MaxStatsRepositories {
			http.Error(w, fmt.Sprintf("at most %d repositories", imagesapi.MaxStatsRepositories), http.StatusBadRequest)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(c.res.acceptStats(p.Name, post))
}

// ImagePins lists the images pinned in this node's store
// (registry/repository:tag or @digest); an error on a node without an
// image cache.
func (n *Node) ImagePins() ([]string, error) {
	if n.images == nil {
		return nil, errors.New("this node has no image cache")
	}
	pins, err := n.images.store.Pins()
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(pins))
	for _, p := range pins {
		out = append(out, pinRef{Registry: p.Namespace, Repository: p.Repository, Reference: p.Reference}.String())
	}
	return out, nil
}
