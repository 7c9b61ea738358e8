package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/images/fetch"
	"github.com/outpost-mesh/outpost/images/store"
)

// BlobFetchSpec is a node's claim on fetching a blob from above the site
// (hub tier, origin), so that the site's other nodes read it from that
// node as it arrives instead of fetching it again over the WAN.
type BlobFetchSpec struct {
	Digest  string      `json:"digest"`
	Node    string      `json:"node"`
	Expires metav1.Time `json:"expires"`
}

// SiteTagSpec is the digest a tag last resolved to upstream, as the site
// agreed on it: what every node of the site answers for the tag while no
// upstream does.
type SiteTagSpec struct {
	Registry   string `json:"registry"`
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	Digest     string `json:"digest"`
}

// Kinds of the site's image agreement, in each site's group, hidden. Only
// the site leader writes them, for the nodes that ask it.
var (
	BlobFetchKind = consensus.Kind{
		Group: ImagesGroup, Version: "v1alpha1", Kind: "BlobFetch", Plural: "blobfetches", Hidden: true,
		NewSpec: func() any { return &BlobFetchSpec{} },
	}
	SiteTagKind = consensus.Kind{
		Group: ImagesGroup, Version: "v1alpha1", Kind: "SiteTag", Plural: "sitetags", Hidden: true,
		NewSpec: func() any { return &SiteTagSpec{} },
	}
)

const (
	// claimLease is how long a claim holds without renewal; the owner
	// renews it every claimLease/3 while its fetch runs, so a dead
	// owner's claim lapses within claimLease.
	claimLease = 30 * time.Second
	// claimLinger is how long a released claim still sends the site's
	// nodes to its owner, while the blob index catches up.
	claimLinger = 10 * time.Second
	// claimTimeout bounds asking the leader, an election included; past
	// it the node fetches without a claim (availability before
	// deduplication).
	claimTimeout = 5 * time.Second
	// leaderlessMemory is how long after a wait for a site leader ran out
	// a node asks the leader once, without waiting: a site that lost
	// quorum is not waited on blob by blob.
	leaderlessMemory = 30 * time.Second
	// claimSweep is how often the leader deletes lapsed claims (their
	// owners died before releasing them).
	claimSweep = 5 * time.Minute
	// maxLeaderOp bounds the body of a claim or tag request.
	maxLeaderOp = 64 << 10
)

// siteAgreement is the node's side of what the site agrees on for images:
// who fetches a blob from above the site (fetch.SiteFetch) and what a tag
// resolves to (fetch's OnTagResolved and LookupTag). Both are writes to
// site Raft that the leader makes for the node that asks.
type siteAgreement struct {
	c     *imageCache
	tags  chan SiteTagSpec
	claim leaderWait
}

var _ fetch.SiteFetch = (*siteAgreement)(nil)

func newSiteAgreement(c *imageCache) *siteAgreement {
	return &siteAgreement{c: c, tags: make(chan SiteTagSpec, 256), claim: leaderWait{limit: claimTimeout, memory: leaderlessMemory}}
}

// leaderWait waits out a site election for calls to the site leader: a
// leader change during a pull must not send every node of the site above
// it for the same blob.
type leaderWait struct {
	limit  time.Duration // one call's bound, the wait included
	memory time.Duration // after a wait ran out, calls do not wait for this long
	ranOut atomic.Int64  // unix nanoseconds of the last wait that ran out
}

// do calls call until it succeeds or fails for a reason other than
// errNoSiteLeader, within w.limit, backing off from 50 ms to 1 s. While a
// wait ran out less than w.memory ago (the site lost quorum), it calls
// once.
func (w *leaderWait) do(ctx context.Context, call func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, w.limit)
	defer cancel()
	wait := time.Since(time.Unix(0, w.ranOut.Load())) > w.memory
	for delay := 50 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		err := call(cctx)
		if !wait || !errors.Is(err, errNoSiteLeader) {
			return err
		}
		select {
		case <-cctx.Done():
			if ctx.Err() == nil {
				w.ranOut.Store(time.Now().UnixNano())
			}
			return err
		case <-time.After(delay):
		}
	}
}

// claimRequest asks the leader about a digest: claim (or renew) it, or
// release it.
type claimRequest struct {
	Digest  string `json:"digest"`
	Release bool   `json:"release,omitempty"`
}

// claimAnswer names the node that fetches the digest.
type claimAnswer struct {
	Owner string `json:"owner"`
}

// Claim asks the site leader who fetches d from above the site: this node
// (owner nil; release ends the claim) or the peer that claimed it first,
// read as its copy arrives.
func (a *siteAgreement) Claim(ctx context.Context, d digest.Digest) (fetch.Tier, func(), error) {
	self := a.c.n.id.Name
	var ans claimAnswer
	err := a.claim.do(ctx, func(ctx context.Context) error {
		return a.c.index.callLeader(ctx, "/outpost/v1/claim", a.serveClaimOp, claimRequest{Digest: d.String()}, &ans)
	})
	if err != nil {
		return nil, nil, err
	}
	if ans.Owner != self {
		t := a.c.peers.tier(ans.Owner)
		if t == nil {
			return nil, nil, fmt.Errorf("no tier for %s, which fetches %s", ans.Owner, d)
		}
		a.c.log.Debug("a peer fetches this blob for the site; reading its copy", "digest", d, "owner", ans.Owner)
		return t, nil, nil
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // renew while the fetch runs, then release
		defer close(done)
		tick := time.NewTicker(claimLease / 3)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				rctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
				defer cancel()
				if err := a.c.index.callLeader(rctx, "/outpost/v1/claim", a.serveClaimOp, claimRequest{Digest: d.String(), Release: true}, nil); err != nil {
					a.c.log.Debug("release a fetch claim", "digest", d, "err", err)
				}
				return
			case <-tick.C:
				rctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
				err := a.c.index.callLeader(rctx, "/outpost/v1/claim", a.serveClaimOp, claimRequest{Digest: d.String()}, &claimAnswer{})
				cancel()
				if err != nil {
					a.c.log.Debug("renew a fetch claim", "digest", d, "err", err)
				}
			}
		}
	}()
	var once sync.Once
	return nil, func() { once.Do(func() { close(stop) }) }, nil
}

// serveClaimOp runs a claim request of node from on the leader.
func (a *siteAgreement) serveClaimOp(ctx context.Context, from string, body []byte) (any, error) {
	var req claimRequest
	if err := decodeStrict(body, &req); err != nil {
		return nil, err
	}
	if _, err := store.ParseDigest(req.Digest); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	st := a.c.n.group.Store()
	name := indexName(req.Digest)
	for range 8 {
		obj, err := st.Get(ctx, &BlobFetchKind, "", name, consensus.ReadOptions{Stale: true})
		now := time.Now()
		claim := BlobFetchSpec{Digest: req.Digest, Node: from, Expires: metav1.NewTime(now.Add(claimLease))}
		if apierrors.IsNotFound(err) {
			if req.Release {
				return nil, nil
			}
			o := &consensus.Object{}
			o.Name = name
			if err := o.SetSpec(claim); err != nil {
				return nil, err
			}
			if _, err = st.Create(ctx, &BlobFetchKind, o); apierrors.IsAlreadyExists(err) {
				continue
			} else if err != nil {
				return nil, err
			}
			return claimAnswer{Owner: from}, nil
		}
		if err != nil {
			return nil, err
		}
		var cur BlobFetchSpec
		if err := obj.DecodeSpec(&cur); err != nil {
			return nil, err
		}
		if req.Release {
			if cur.Node != from {
				return nil, nil
			}
			// The claim lingers: until the blob index lists the owner as
			// a holder, a node that asks is sent to it rather than above
			// the site (a blob that did not commit there is fetched above
			// the site by whoever reads the owner's 404).
			next := obj.DeepCopy()
			claim.Expires = metav1.NewTime(now.Add(claimLinger))
			if err := next.SetSpec(claim); err != nil {
				return nil, err
			}
			_, err = st.UpdateWithStatus(ctx, &BlobFetchKind, next)
		} else {
			if cur.Node != from && now.Before(cur.Expires.Time) && a.c.n.memberAlive(cur.Node) {
				return claimAnswer{Owner: cur.Node}, nil
			}
			next := obj.DeepCopy()
			if err := next.SetSpec(claim); err != nil {
				return nil, err
			}
			_, err = st.UpdateWithStatus(ctx, &BlobFetchKind, next)
		}
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if req.Release {
			return nil, nil
		}
		return claimAnswer{Owner: from}, nil
	}
	return nil, fmt.Errorf("%s: too many concurrent claims", req.Digest)
}

// tagResolved is fetch's OnTagResolved: it queues the resolution for the
// leader, dropping it when the queue is full (the next resolution of the
// tag proposes it again).
func (a *siteAgreement) tagResolved(ns, repo, tag string, d digest.Digest) {
	select {
	case a.tags <- SiteTagSpec{Registry: ns, Repository: repo, Tag: tag, Digest: d.String()}:
	default:
	}
}

// lookupTag is fetch's LookupTag: the digest the site last agreed on,
// from this node's replica.
func (a *siteAgreement) lookupTag(ctx context.Context, ns, repo, tag string) (digest.Digest, bool) {
	obj, err := a.c.n.group.Store().Get(ctx, &SiteTagKind, "", siteTagName(ns, repo, tag), consensus.ReadOptions{Stale: true})
	if err != nil {
		return "", false
	}
	var spec SiteTagSpec
	if obj.DecodeSpec(&spec) != nil || spec.Registry != ns || spec.Repository != repo || spec.Tag != tag {
		return "", false
	}
	d, err := store.ParseDigest(spec.Digest)
	return d, err == nil
}

// siteTagName is the object name of a tag: a hash, since registry,
// repository and tag together are no valid object name.
func siteTagName(ns, repo, tag string) string {
	sum := sha256.Sum256([]byte(ns + "\x00" + repo + "\x00" + tag))
	return hex.EncodeToString(sum[:])
}

// serveTagOp records a tag resolution of a node of the site (last writer
// wins: it is what the site last saw upstream).
func (a *siteAgreement) serveTagOp(ctx context.Context, _ string, body []byte) (any, error) {
	var spec SiteTagSpec
	if err := decodeStrict(body, &spec); err != nil {
		return nil, err
	}
	if _, err := store.ParseDigest(spec.Digest); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if spec.Repository == "" || spec.Tag == "" || len(spec.Registry)+len(spec.Repository)+len(spec.Tag) > 1024 {
		return nil, apierrors.NewBadRequest("a tag needs a repository and a tag, at most 1024 bytes in all")
	}
	st := a.c.n.group.Store()
	name := siteTagName(spec.Registry, spec.Repository, spec.Tag)
	obj, err := st.Get(ctx, &SiteTagKind, "", name, consensus.ReadOptions{Stale: true})
	if apierrors.IsNotFound(err) {
		o := &consensus.Object{}
		o.Name = name
		if err := o.SetSpec(spec); err != nil {
			return nil, err
		}
		_, err = st.Create(ctx, &SiteTagKind, o)
		if apierrors.IsAlreadyExists(err) {
			err = nil // another node's resolution landed first; the next one updates it
		}
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	var cur SiteTagSpec
	if obj.DecodeSpec(&cur) == nil && cur == spec {
		return nil, nil
	}
	next := obj.DeepCopy()
	if err := next.SetSpec(spec); err != nil {
		return nil, err
	}
	next.ResourceVersion = "" // last writer wins
	_, err = st.UpdateWithStatus(ctx, &SiteTagKind, next)
	return nil, err
}

// run sends queued tag resolutions to the leader and, while this node
// leads, deletes lapsed claims.
func (a *siteAgreement) run(ctx context.Context) error {
	sweep := time.NewTicker(claimSweep)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case spec := <-a.tags:
			tctx, cancel := context.WithTimeout(ctx, claimTimeout)
			if err := a.c.index.callLeader(tctx, "/outpost/v1/tag", a.serveTagOp, spec, nil); err != nil && ctx.Err() == nil {
				a.c.log.Debug("record a tag for the site", "repo", spec.Repository, "tag", spec.Tag, "err", err)
			}
			cancel()
		case <-sweep.C:
			if a.c.n.group.IsLeader() {
				a.sweepClaims(ctx)
			}
		}
	}
}

func (a *siteAgreement) sweepClaims(ctx context.Context) {
	st := a.c.n.group.Store()
	list, err := st.List(ctx, &BlobFetchKind, "", nil, consensus.ReadOptions{Stale: true})
	if err != nil {
		return
	}
	now := time.Now()
	for _, o := range list.Items {
		var spec BlobFetchSpec
		if o.DecodeSpec(&spec) == nil && now.Sub(spec.Expires.Time) > claimLease {
			_, _ = st.Delete(ctx, &BlobFetchKind, "", o.Name, o.Revision(), string(o.UID))
		}
	}
}

// A leaderOp is a write to site Raft that a node asks its site leader for:
// from is the asking node (the stream's certificate names it), body its
// JSON request; the result is sent back as JSON (nil: 204).
type leaderOp func(ctx context.Context, from string, body []byte) (any, error)

// errNoSiteLeader is callLeader's error while the site has no leader, or
// the one asked no longer leads (an election is under way, or the site
// lost quorum).
var errNoSiteLeader = errors.New("no site leader")

// callLeader runs op on the site leader: here when this node leads, else
// as a POST of in to path over a blob stream. out receives the answer
// (nil: none expected).
func (x *blobIndex) callLeader(ctx context.Context, path string, op leaderOp, in, out any) error {
	n := x.c.n
	r := n.group.Raft()
	if r == nil {
		return errors.New("raft not started")
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	_, leader := r.LeaderWithID()
	switch string(leader) {
	case "":
		return fmt.Errorf("site %s: %w", n.id.Site, errNoSiteLeader)
	case n.id.Name:
		res, err := op(ctx, n.id.Name, body)
		if apierrors.IsServiceUnavailable(err) {
			return fmt.Errorf("%w: %w", errNoSiteLeader, err)
		}
		if err != nil || out == nil || res == nil {
			return err
		}
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, out)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+string(leader)+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := x.c.peers.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK && out != nil:
		return json.NewDecoder(io.LimitReader(resp.Body, maxLeaderOp)).Decode(out)
	case resp.StatusCode/100 == 2:
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	err = fmt.Errorf("site leader %s: %s: %s", leader, resp.Status, strings.TrimSpace(string(b)))
	if resp.StatusCode == http.StatusServiceUnavailable {
		return fmt.Errorf("%w: %w", errNoSiteLeader, err)
	}
	return err
}

// serveLeaderOp serves op to the nodes of this site while this node leads.
func (x *blobIndex) serveLeaderOp(op leaderOp, limit int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		n := x.c.n
		p, ok := streamPeer(r.Context())
		if !ok || p.Site != n.id.Site {
			http.Error(w, "only nodes of this site ask its leader", http.StatusForbidden)
			return
		}
		if !n.group.IsLeader() {
			http.Error(w, "not the site leader", http.StatusServiceUnavailable)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if int64(len(body)) > limit {
			http.Error(w, fmt.Sprintf("request over %d bytes", limit), http.StatusRequestEntityTooLarge)
			return
		}
		res, err := op(r.Context(), p.Name, body)
		var status apierrors.APIStatus
		switch {
		case errors.As(err, &status):
			http.Error(w, err.Error(), int(status.Status().Code))
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		case res == nil:
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(res)
		}
	}
}

// decodeStrict decodes one JSON value, refusing unknown fields.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apierrors.NewBadRequest("decode request: " + err.Error())
	}
	return nil
}
