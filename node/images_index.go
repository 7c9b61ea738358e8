package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/gossip"
	"github.com/outpost-mesh/outpost/images/fetch"
	"github.com/outpost-mesh/outpost/images/store"
)

// ImagesGroup is the API group of the image cache's resources.
const ImagesGroup = "images.outpost.dev"

// BlobHoldersSpec is one entry of a site's blob index: the nodes of the
// site whose stores hold the content of Digest, committed and verified.
// The object's name is the digest with ':' turned into '.'.
type BlobHoldersSpec struct {
	Digest string   `json:"digest"`
	Nodes  []string `json:"nodes"`
}

// BlobHoldersKind is the site's blob index, kept in the site's Raft group
// and hidden from the API. Only the site leader writes it, from what each
// node reports of its store.
var BlobHoldersKind = consensus.Kind{
	Group: ImagesGroup, Version: "v1alpha1", Kind: "BlobHolders", Plural: "blobholders", Hidden: true,
	NewSpec: func() any { return &BlobHoldersSpec{} },
}

const (
	// indexDebounce gathers a burst of changes (a pull stores many blobs
	// at once) into one report.
	indexDebounce = 100 * time.Millisecond
	// indexBackoffMax caps the wait between failed reports (an election
	// is usually over within it).
	indexBackoffMax = 5 * time.Second
	// indexWriters bounds the index writes a leader makes at once.
	indexWriters = 8
	// maxHoldingsReport bounds a report's body (a full report of some
	// 100,000 digests).
	maxHoldingsReport = 8 << 20
)

// indexName is the object name of digest d in the blob index.
func indexName(d string) string { return strings.Replace(d, ":", ".", 1) }

// holdingsReport is what a node tells its site leader of its store: the
// digests it now holds and no longer holds, or (Full) every digest it
// holds, which replaces what the index says of it.
type holdingsReport struct {
	Full   bool     `json:"full,omitempty"`
	Add    []string `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// blobIndex is this node's side of the site's blob index: it queues the
// store's changes and reports them to the site leader (itself included),
// applies reports when it leads, and finds holders for the fetch chain.
//
// Writes reach Raft only on the leader, so followers report over a blob
// stream (POST /outpost/v1/holdings) rather than writing; after a start
// the first report is Full, which also repairs what a crash or a missed
// report left wrong.
type blobIndex struct {
	c    *imageCache
	wake chan struct{}

	mu      sync.Mutex
	pending map[digest.Digest]bool // true: now held; false: gone
	full    bool
}

var _ fetch.PeerFinder = (*blobIndex)(nil)

func newBlobIndex(c *imageCache) *blobIndex {
	return &blobIndex{c: c, wake: make(chan struct{}, 1), pending: map[digest.Digest]bool{}, full: true}
}

// changed is the store's OnChange: it queues the change and returns.
func (x *blobIndex) changed(d digest.Digest, held bool) {
	x.mu.Lock()
	x.pending[d] = held
	x.mu.Unlock()
	select {
	case x.wake <- struct{}{}:
	default: // a wake-up is pending already: it reports this change too
	}
}

// run reports changes to the site leader until ctx ends, retrying with
// backoff while there is no leader or it cannot be reached.
func (x *blobIndex) run(ctx context.Context) error {
	backoff := time.Second
	retry := time.NewTimer(0) // the first, full report
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-x.wake:
		case <-retry.C:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(indexDebounce):
		}
		rep, ok, err := x.take()
		if err == nil && ok {
			err = x.send(ctx, rep)
			if err != nil {
				x.restore(rep)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			x.c.log.Debug("blob index report failed; retrying", "err", err, "in", backoff)
			retry.Reset(backoff)
			backoff = min(2*backoff, indexBackoffMax)
			continue
		}
		backoff = time.Second
	}
}

// take empties the queue into a report; ok is false when there is nothing
// to report.
func (x *blobIndex) take() (holdingsReport, bool, error) {
	x.mu.Lock()
	rep := holdingsReport{Full: x.full}
	for d, held := range x.pending {
		if held {
			rep.Add = append(rep.Add, d.String())
		} else {
			rep.Remove = append(rep.Remove, d.String())
		}
	}
	clear(x.pending)
	x.full = false
	x.mu.Unlock()
	if !rep.Full {
		return rep, len(rep.Add)+len(rep.Remove) > 0, nil
	}
	// Taken after the queue: a change between the two is in both, or in
	// the next report, never lost.
	ds, err := x.c.store.Digests()
	if err != nil {
		x.mu.Lock()
		x.full = true
		x.mu.Unlock()
		return rep, false, err
	}
	rep.Add, rep.Remove = rep.Add[:0], nil
	for _, d := range ds {
		rep.Add = append(rep.Add, d.String())
	}
	return rep, true, nil
}

// restore puts a report that failed back into the queue, under any
// change queued since.
func (x *blobIndex) restore(rep holdingsReport) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if rep.Full {
		x.full = true
		return
	}
	for _, held := range []bool{true, false} {
		list := rep.Remove
		if held {
			list = rep.Add
		}
		for _, s := range list {
			if _, newer := x.pending[digest.Digest(s)]; !newer {
				x.pending[digest.Digest(s)] = held
			}
		}
	}
}

// send delivers a report to the site leader, or applies it when this node
// leads.
func (x *blobIndex) send(ctx context.Context, rep holdingsReport) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return x.callLeader(ctx, "/outpost/v1/holdings", x.serveReportOp, rep, nil)
}

// leaderAddr is the QUIC (Raft) address of the site's leader when name is
// its name: a report can reach it before gossip knows it.
func (x *blobIndex) leaderAddr(name string) string {
	r := x.c.n.group.Raft()
	if r == nil {
		return ""
	}
	addr, id := r.LeaderWithID()
	if string(id) != name {
		return ""
	}
	return string(addr)
}

// serveReportOp applies a report of a node of this site (the sender is
// the node the report is about: the stream's certificate names it).
func (x *blobIndex) serveReportOp(ctx context.Context, from string, body []byte) (any, error) {
	var rep holdingsReport
	if err := decodeStrict(body, &rep); err != nil {
		return nil, err
	}
	for _, s := range slices.Concat(rep.Add, rep.Remove) {
		if _, err := store.ParseDigest(s); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
	}
	return nil, x.apply(ctx, from, rep)
}

// apply writes a node's report into the index; only the leader can.
func (x *blobIndex) apply(ctx context.Context, node string, rep holdingsReport) error {
	add, remove := rep.Add, rep.Remove
	if rep.Full {
		st := x.c.n.group.Store()
		list, err := st.List(ctx, &BlobHoldersKind, "", nil, consensus.ReadOptions{Stale: true})
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, d := range rep.Add {
			have[d] = false // held, not yet listed
		}
		for _, o := range list.Items {
			var spec BlobHoldersSpec
			if o.DecodeSpec(&spec) != nil || !slices.Contains(spec.Nodes, node) {
				continue
			}
			if _, held := have[spec.Digest]; held {
				have[spec.Digest] = true
			} else {
				remove = append(remove, spec.Digest)
			}
		}
		add = nil
		for d, listed := range have {
			if !listed {
				add = append(add, d)
			}
		}
	}
	var eg errgroup.Group
	eg.SetLimit(indexWriters)
	for _, d := range add {
		eg.Go(func() error { return x.setHolder(ctx, d, node, true) })
	}
	for _, d := range remove {
		eg.Go(func() error { return x.setHolder(ctx, d, node, false) })
	}
	if err := eg.Wait(); err != nil {
		return fmt.Errorf("write the blob index: %w", err)
	}
	if len(add)+len(remove) > 0 {
		x.c.log.Debug("blob index updated", "peer", node, "added", len(add), "removed", len(remove), "full", rep.Full)
	}
	return nil
}

// setHolder adds node to (held) or removes it from the holders of d, with
// the object's resourceVersion as precondition, retrying a lost race.
func (x *blobIndex) setHolder(ctx context.Context, d, node string, held bool) error {
	st := x.c.n.group.Store()
	name := indexName(d)
	for range 8 {
		obj, err := st.Get(ctx, &BlobHoldersKind, "", name, consensus.ReadOptions{Stale: true})
		if apierrors.IsNotFound(err) {
			if !held {
				return nil
			}
			o := &consensus.Object{}
			o.Name = name
			if err := o.SetSpec(BlobHoldersSpec{Digest: d, Nodes: []string{node}}); err != nil {
				return err
			}
			_, err = st.Create(ctx, &BlobHoldersKind, o)
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return err
		}
		if err != nil {
			return err
		}
		var spec BlobHoldersSpec
		if err := obj.DecodeSpec(&spec); err != nil {
			return err
		}
		i := slices.Index(spec.Nodes, node)
		if (i >= 0) == held {
			return nil
		}
		if held {
			spec.Nodes = append(spec.Nodes, node)
			slices.Sort(spec.Nodes)
		} else {
			spec.Nodes = slices.Delete(spec.Nodes, i, i+1)
		}
		if len(spec.Nodes) == 0 {
			_, err = st.Delete(ctx, &BlobHoldersKind, "", name, obj.Revision(), string(obj.UID))
		} else {
			next := obj.DeepCopy()
			if err := next.SetSpec(spec); err != nil {
				return err
			}
			// The local replica is enough: the write checks the
			// resourceVersion on the leader.
			_, err = st.UpdateWithStatus(ctx, &BlobHoldersKind, next)
		}
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue
		}
		return err
	}
	return fmt.Errorf("%s: too many concurrent changes", d)
}

// holders reads the nodes the index lists for d from the local replica.
func (x *blobIndex) holders(ctx context.Context, d string) ([]string, error) {
	obj, err := x.c.n.group.Store().Get(ctx, &BlobHoldersKind, "", indexName(d), consensus.ReadOptions{Stale: true})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var spec BlobHoldersSpec
	if err := obj.DecodeSpec(&spec); err != nil {
		return nil, err
	}
	return spec.Nodes, nil
}

// Holders is the fetch chain's PeerFinder: a tier for every peer the
// index lists for d that gossip does not hold dead or gone: live ones
// first, suspected ones after (a suspicion is often a slow probe), each
// group in random order to spread the load. An index that cannot be read
// yields none (the chain goes upstream).
func (x *blobIndex) Holders(ctx context.Context, d digest.Digest) []fetch.Tier {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	nodes, err := x.holders(ctx, d.String())
	if err != nil {
		x.c.log.Debug("blob index unavailable", "digest", d, "err", err)
		return nil
	}
	if len(nodes) == 0 {
		return nil
	}
	state := map[string]gossip.State{}
	for _, m := range x.c.n.gossip.Members() {
		state[m.Name] = m.State
	}
	var alive, suspect []string
	for _, name := range nodes {
		switch {
		case name == x.c.n.id.Name:
		case state[name] == gossip.Alive:
			alive = append(alive, name)
		case state[name] == gossip.Suspect:
			suspect = append(suspect, name)
		}
	}
	var out []fetch.Tier
	for _, group := range [][]string{alive, suspect} {
		rand.Shuffle(len(group), func(i, j int) { group[i], group[j] = group[j], group[i] })
		for _, name := range group {
			if t := x.c.peers.tier(name); t != nil {
				out = append(out, t)
			}
		}
	}
	return out
}

// ImageHolders returns the nodes of this node's site that the site's blob
// index lists as holding digest d (this node's replica, which may lag the
// leader's by a moment).
func (n *Node) ImageHolders(ctx context.Context, d string) ([]string, error) {
	if _, err := store.ParseDigest(d); err != nil {
		return nil, err
	}
	if n.images == nil {
		return nil, errors.New("this node has no image cache")
	}
	return n.images.index.holders(ctx, d)
}
