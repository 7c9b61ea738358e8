package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-mesh/outpost/gossip"
	"github.com/outpost-mesh/outpost/images/store"
	"github.com/outpost-mesh/outpost/transport"
)

// contentPath serves OTA contentFrom blobs on blob streams to the nodes of
// the site that have no image cache of their own (stateless agents, nodes
// with the mirror off): they read through a peer that has one, whose chain
// makes the site fetch the blob over the WAN once.
const contentPath = "/outpost/v1/content"

// serveContent answers GET contentPath?repository=R&digest=D for a node of
// this site with the blob, through this node's full chain.
func (c *imageCache) serveContent(w http.ResponseWriter, r *http.Request) {
	if p, ok := streamPeer(r.Context()); !ok || p.Site != c.n.id.Site {
		http.Error(w, "only nodes of this site read OTA content here", http.StatusForbidden)
		return
	}
	q := r.URL.Query()
	rc, size, err := c.openContent(r.Context(), q.Get("repository"), q.Get("digest"))
	if err != nil {
		status := http.StatusBadGateway
		if _, perr := store.ParseDigest(q.Get("digest")); perr != nil {
			status = http.StatusBadRequest
		}
		http.Error(w, err.Error(), status)
		return
	}
	defer rc.Close()
	if size >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = io.Copy(w, rc)
}

// siteContent opens contentFrom blobs through a node of the site that has
// an image cache: the members that are not stateless, alive ones first and
// suspected ones after (a suspicion is often a slow probe), each group in
// random order, each asked in turn.
type siteContent struct {
	self   string
	ep     *transport.Endpoint
	gossip *gossip.Gossip
}

// open is an agent.BlobOpener.
func (s siteContent) open(ctx context.Context, repo, d string) (io.ReadCloser, int64, error) {
	var alive, suspect []gossip.Member
	for _, m := range s.gossip.Members() {
		if m.Name == s.self || m.Stateless || m.QUICAddr == "" {
			continue
		}
		switch m.State {
		case gossip.Alive:
			alive = append(alive, m)
		case gossip.Suspect:
			suspect = append(suspect, m)
		}
	}
	if len(alive)+len(suspect) == 0 {
		return nil, 0, errors.New("no node of this site with an image cache is alive")
	}
	rand.Shuffle(len(alive), func(i, j int) { alive[i], alive[j] = alive[j], alive[i] })
	rand.Shuffle(len(suspect), func(i, j int) { suspect[i], suspect[j] = suspect[j], suspect[i] })
	peers := append(alive, suspect...)
	var errs []error
	for _, p := range peers {
		rc, size, err := s.from(ctx, p, repo, d)
		if err == nil {
			return rc, size, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, 0, errors.Join(errs...)
}

func (s siteContent) from(ctx context.Context, p gossip.Member, repo, d string) (io.ReadCloser, int64, error) {
	dctx, cancel := context.WithTimeout(ctx, blobDialTimeout)
	st, err := s.ep.Dial(dctx, p.QUICAddr, transport.KindBlob)
	cancel()
	if err != nil {
		return nil, 0, err
	}
	if got := st.Peer(); got.Name != p.Name {
		st.Close()
		return nil, 0, fmt.Errorf("%s answered as %s", p.QUICAddr, got)
	}
	stop := context.AfterFunc(ctx, func() { st.Close() })
	q := url.Values{"repository": {repo}, "digest": {d}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Name+contentPath+"?"+q.Encode(), nil)
	if err == nil {
		_ = st.SetWriteDeadline(time.Now().Add(blobDialTimeout))
		err = req.Write(st)
		_ = st.SetWriteDeadline(time.Time{})
	}
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(bufio.NewReader(st), req)
	}
	if err != nil {
		stop()
		st.Close()
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		stop()
		st.Close()
		return nil, 0, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return streamBody{ReadCloser: resp.Body, close: func() { stop(); st.Close() }}, resp.ContentLength, nil
}

// streamBody closes the stream with the response body.
type streamBody struct {
	io.ReadCloser
	close func()
}

func (b streamBody) Close() error {
	err := b.ReadCloser.Close()
	b.close()
	return err
}
