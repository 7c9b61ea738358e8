package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/outpost-mesh/outpost/images/registry"
	"github.com/outpost-mesh/outpost/images/store"
)

// job is one blob fetch in progress on this node. Requests for its digest
// wait until it is ready (the first source is sending, or the fetch ended)
// and then follow the store's write.
type job struct {
	d        digest.Digest
	ns, repo string // the request that started it: the blob is linked there
	size     int64  // from a manifest's descriptor, -1 when unknown

	readyOnce sync.Once
	ready     chan struct{} // closed when bytes flow or the job ended
	done      chan struct{} // closed when the job ended; err is set before
	err       error
}

func (j *job) markReady() { j.readyOnce.Do(func() { close(j.ready) }) }

// Blob returns blob d: from the store (a hit), or by following the fetch
// that a miss starts (or joins). The returned content is served while it
// arrives; a read fails if the fetch fails, and the last byte is held back
// until the blob is verified.
func (s *Source) Blob(ctx context.Context, ns, repo string, d digest.Digest) (registry.Blob, error) {
	r, err := s.open(ctx, ns, repo, d)
	if err != nil {
		return registry.Blob{}, err
	}
	return registry.Blob{Size: r.Size(), Marks: r.Marks(), Content: &follower{s: s, ctx: ctx, ns: ns, repo: repo, d: d, r: r}}, nil
}

// follower is a client's read of a blob. When the write it follows is
// aborted before the client got a byte of it (a peer's copy, held back
// until verified, failed verification, and the chain fetches the blob
// again from the next source), it follows the next write from the same
// position instead of failing the client.
type follower struct {
	s        *Source
	ctx      context.Context
	ns, repo string
	d        digest.Digest
	r        *store.Reader
	pos      int64 // where the next Read starts
	sent     bool  // the client got bytes of r
	retries  int
}

// followerRetries bounds how often one read moves to a new write.
const followerRetries = 3

func (f *follower) Read(p []byte) (int, error) {
	for {
		n, err := f.r.Read(p)
		f.pos += int64(n)
		if n > 0 {
			f.sent = true
		}
		if err == nil || err == io.EOF || n > 0 || f.sent || f.retries >= followerRetries || f.ctx.Err() != nil {
			return n, err
		}
		f.retries++
		r, oerr := f.s.open(f.ctx, f.ns, f.repo, f.d)
		if oerr != nil {
			return 0, err
		}
		if _, serr := r.Seek(f.pos, io.SeekStart); serr != nil {
			r.Close()
			return 0, err
		}
		f.r.Close()
		f.r = r
		f.s.log.Debug("following the next write of a blob", "digest", f.d, "offset", f.pos, "after", err)
	}
}

func (f *follower) Seek(offset int64, whence int) (int64, error) {
	pos, err := f.r.Seek(offset, whence)
	if err == nil {
		f.pos, f.sent = pos, false
	}
	return pos, err
}

func (f *follower) Close() error { return f.r.Close() }

// StatBlob returns a blob's size: from the store, else by starting (or
// joining) its fetch and waiting for the first source's answer, so that a
// HEAD followed by a GET costs one fetch. -1 means the size is not known
// yet.
func (s *Source) StatBlob(ctx context.Context, ns, repo string, d digest.Digest) (int64, error) {
	if info, err := s.st.Stat(d); err == nil {
		return info.Size, nil
	}
	r, err := s.open(ctx, ns, repo, d)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	return r.Size(), nil
}

func (s *Source) open(ctx context.Context, ns, repo string, d digest.Digest) (*store.Reader, error) {
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		j := s.jobs[d]
		s.mu.Unlock()
		if j == nil {
			r, err := s.st.Open(ctx, d)
			if err == nil {
				s.m.blobHits.Add(1)
				if !r.InProgress() {
					s.link(ns, repo, d)
				}
				return r, nil
			}
			if !errors.Is(err, store.ErrNotFound) {
				return nil, err
			}
			if j, err = s.start(ns, repo, d); err != nil {
				return nil, err
			}
			if j == nil { // stored or being written meanwhile
				if attempt < 3 {
					continue
				}
				return nil, fmt.Errorf("%w: blob %s keeps appearing and vanishing", registry.ErrUnavailable, d)
			}
			s.m.blobMisses.Add(1)
		} else {
			s.m.blobHits.Add(1)
		}
		select {
		case <-j.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		r, err := s.st.Open(ctx, d)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		// The job ended, or is between two writes (a copy that failed
		// verification is being fetched again).
		select {
		case <-j.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if j.err != nil {
			return nil, j.err
		}
		if attempt >= 3 {
			return nil, fmt.Errorf("%w: blob %s was fetched but is gone again", registry.ErrUnavailable, d)
		}
	}
}

// start begins the fetch of d, unless one is running (returned) or the
// store has it after all (nil job, nil error).
func (s *Source) start(ns, repo string, d digest.Digest) (*job, error) {
	if s.cfg.Peers == nil && s.cfg.SiteFetch == nil && len(s.cfg.Upstream) == 0 {
		return nil, fmt.Errorf("%w: %s is not on this node", registry.ErrBlobUnknown, d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, ErrClosed
	}
	if j := s.jobs[d]; j != nil {
		return j, nil
	}
	size := s.sizes.get(d)
	w, err := s.st.Begin(d, size)
	if errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrInProgress) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	j := &job{d: d, ns: ns, repo: repo, size: size, ready: make(chan struct{}), done: make(chan struct{})}
	s.jobs[d] = j
	s.fetches.Go(func() error {
		err := s.fetch(s.runCtx, j, w)
		s.mu.Lock()
		delete(s.jobs, d)
		s.mu.Unlock()
		j.err = err
		close(j.done)
		j.markReady()
		return nil
	})
	return j, nil
}

// link records that the repository holds d (for listings and sizes).
func (s *Source) link(ns, repo string, d digest.Digest) {
	if ok, err := s.st.BlobLinked(ns, repo, d); err == nil && ok {
		return
	}
	if err := s.st.LinkBlob(ns, repo, d); err != nil {
		s.log.Debug("link blob", "digest", d, "ns", ns, "repo", repo, "err", err)
	}
}

// candidate is one entry of a fetch plan.
type candidate struct {
	id    int // the same for a tier queued again (Tiers need not be comparable)
	t     Tier
	peer  bool
	claim bool // not a tier: ask SiteFetch here
}

// fetch runs the plan for one blob: peers, then (with SiteFetch) the site
// node that claimed the WAN fetch, then the upstream tiers. It writes
// through w, resuming at w.Offset() after a broken source, and begins a
// new write from offset 0 when a finished one fails verification.
func (s *Source) fetch(ctx context.Context, j *job, w *store.Writer) (err error) {
	defer func() {
		if err != nil {
			w.Abort(err)
		}
	}()
	var plan []candidate
	add := func(c candidate) {
		c.id = len(plan)
		plan = append(plan, c)
	}
	for _, t := range s.peersOf(ctx, j.d) {
		add(candidate{t: t, peer: true})
	}
	if s.cfg.SiteFetch != nil {
		add(candidate{claim: true})
	}
	for _, t := range s.cfg.Upstream {
		add(candidate{t: t})
	}

	var (
		release      func()
		contributors []candidate      // tiers whose bytes are in the current write
		excluded     = map[int]bool{} // peers whose copy failed verification
		retried      = map[int]bool{} // upstream tiers already given a second go
		answer, last error
	)
	defer func() {
		if release != nil {
			release()
		}
	}()
	for i := 0; i < len(plan); i++ {
		c := plan[i]
		if ctx.Err() != nil {
			return ErrClosed
		}
		if c.claim {
			owner, rel, cerr := s.cfg.SiteFetch.Claim(ctx, j.d)
			switch {
			case cerr != nil:
				s.log.Warn("no site agreement on who fetches a blob; fetching it upstream", "digest", j.d, "err", cerr)
			case owner != nil:
				o := candidate{id: -1 - i, t: owner, peer: true} // ids of plan entries are >= 0
				plan = append(plan[:i+1], append([]candidate{o}, plan[i+1:]...)...)
			default:
				release = rel
			}
			continue
		}
		if excluded[c.id] {
			continue
		}
		n, complete, aerr := s.attempt(ctx, j, w, c)
		if n > 0 && (len(contributors) == 0 || contributors[len(contributors)-1].id != c.id) {
			contributors = append(contributors, c)
		}
		if aerr != nil {
			if errors.Is(aerr, ErrNotServed) {
				continue
			}
			last = aerr
			if !c.peer && isAnswer(aerr) {
				answer = aerr
			}
			s.log.Debug("blob source failed", "tier", c.t.Name(), "digest", j.d, "offset", w.Offset(), "err", aerr)
			if n > 0 && !c.peer && !retried[c.id] {
				// The connection broke mid-blob: give it one more go
				// after the others, from wherever they leave the blob.
				retried[c.id] = true
				plan = append(plan, c)
			}
			continue
		}
		if !complete {
			continue
		}
		cerr := w.Commit()
		if cerr == nil {
			s.link(j.ns, j.repo, j.d)
			s.stored(j.d)
			return nil
		}
		if !errors.Is(cerr, store.ErrDigestMismatch) && !errors.Is(cerr, store.ErrSizeMismatch) {
			return cerr
		}
		// The copy failed verification: report whoever sent it, and
		// begin again with the sources left (an upstream tier that took
		// part gets one more go on its own): from the last good mark
		// when the write kept the bytes before it, else from offset 0.
		for _, b := range contributors {
			s.corrupt(b.t, b.peer, j.d, cerr.Error())
			if b.peer {
				excluded[b.id] = true
			} else if !retried[b.id] {
				retried[b.id] = true
				plan = append(plan, b)
			}
		}
		contributors = nil
		last = cerr
		s.m.restarts.Add(1)
		if errors.Is(cerr, store.ErrRewound) {
			continue
		}
		nw, berr := s.st.Begin(j.d, j.size)
		if errors.Is(berr, store.ErrExists) || errors.Is(berr, store.ErrInProgress) {
			return nil // someone else has it (or is writing it): follow them
		}
		if berr != nil {
			return berr
		}
		w = nw
	}
	if answer != nil {
		return answer
	}
	if last == nil {
		return fmt.Errorf("%w: %s/%s: no tier serves %s", registry.ErrBlobUnknown, j.ns, j.repo, j.d)
	}
	return unavailable(last)
}

// attempt copies d from one tier into w, from w.Offset(). It returns how
// many bytes the tier contributed and whether the blob is complete.
func (s *Source) attempt(ctx context.Context, j *job, w *store.Writer, c candidate) (n int64, complete bool, err error) {
	lbl := label(c.t, c.peer)
	tc := s.m.tier(lbl)
	off := w.Offset()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	body, total, err := c.t.Blob(actx, j.ns, j.repo, j.d, off)
	if err != nil {
		if !errors.Is(err, ErrNotServed) {
			tc.blobMisses.Add(1)
		}
		return 0, false, err
	}
	defer body.Close()
	if total >= 0 {
		if known := w.Size(); known >= 0 && known != total {
			tc.blobMisses.Add(1)
			why := fmt.Sprintf("announced %d bytes, the blob has %d", total, known)
			if j.size >= 0 {
				s.corrupt(c.t, c.peer, j.d, why)
			}
			return 0, false, fmt.Errorf("%s: %w: %s", c.t.Name(), store.ErrSizeMismatch, why)
		}
		if err := w.SetSize(total); err != nil {
			tc.blobMisses.Add(1)
			return 0, false, fmt.Errorf("%s: %w", c.t.Name(), err)
		}
	}
	tc.blobHits.Add(1)
	if c.peer {
		// A peer's copy may have rotted on its disk: clients get each
		// interval once its mark matches (or, without marks, nothing
		// before the whole blob is verified), and follow the next write
		// if it is not.
		if mb, ok := body.(MarkedBody); ok {
			w.Verify(mb.Marks())
		} else {
			w.HoldUntilCommit()
		}
	}
	if off > 0 {
		s.m.resumes.Add(1)
		s.log.Info("resuming a blob", "tier", c.t.Name(), "digest", j.d, "offset", off)
	}
	j.markReady()
	n, err = copyIdle(w, body, s.cfg.IdleTimeout, cancel)
	tc.bytes.Add(uint64(n))
	if err != nil {
		switch {
		case errors.Is(err, store.ErrSizeMismatch):
			s.corrupt(c.t, c.peer, j.d, "sent more bytes than the blob has")
		case errors.Is(err, store.ErrMarkMismatch):
			s.corrupt(c.t, c.peer, j.d, err.Error())
		}
		return n, false, fmt.Errorf("%s: %w", c.t.Name(), err)
	}
	if size := w.Size(); size >= 0 && w.Offset() < size {
		return n, false, fmt.Errorf("%s: %w: the body ended at byte %d of %d", c.t.Name(), io.ErrUnexpectedEOF, w.Offset(), size)
	}
	return n, true, nil
}

// copyIdle copies src to w, calling cancel (which must make src's reads
// fail) when no byte arrives for idle.
func copyIdle(w io.Writer, src io.Reader, idle time.Duration, cancel context.CancelFunc) (int64, error) {
	timer := time.AfterFunc(idle, cancel)
	defer timer.Stop()
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, rerr := src.Read(buf)
		if k > 0 {
			timer.Reset(idle)
			wk, werr := w.Write(buf[:k])
			n += int64(wk)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			if !timer.Stop() {
				return n, fmt.Errorf("no byte for %s: %w", idle, rerr)
			}
			return n, rerr
		}
	}
}
