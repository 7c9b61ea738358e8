package fetch

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/outpost-mesh/outpost/images/store"
)

// gatedTier sends the first after bytes of a blob, then waits for gate
// to close; it keeps the body's marks.
type gatedTier struct {
	Tier
	after int64
	gate  chan struct{}
}

func (g gatedTier) Blob(ctx context.Context, ns, repo string, d digest.Digest, off int64) (io.ReadCloser, int64, error) {
	body, total, err := g.Tier.Blob(ctx, ns, repo, d, off)
	if err != nil {
		return nil, 0, err
	}
	mb, ok := body.(MarkedBody)
	if !ok {
		body.Close()
		return nil, 0, io.ErrUnexpectedEOF // the test needs the marks
	}
	gated := io.MultiReader(io.LimitReader(body, g.after-off), gateReader{ctx, g.gate}, body)
	return markedBody{ReadCloser: struct {
		io.Reader
		io.Closer
	}{gated, body}, marks: mb.Marks()}, total, nil
}

type gateReader struct {
	ctx  context.Context
	gate chan struct{}
}

func (r gateReader) Read([]byte) (int, error) {
	select {
	case <-r.gate:
		return 0, io.EOF
	case <-r.ctx.Done():
		return 0, r.ctx.Err()
	}
}

// markedLayer pushes an image whose layer spans two and a half marks and
// has node b pull it from the origin, so b stores it with its marks.
func markedLayer(t *testing.T) (origin *originProxy, org *Origin, b *node, want testImage, layer digest.Digest) {
	t.Helper()
	origin = newOriginProxy(t, distribution(t, ""))
	want = pushImage(t, origin.Addr, "app", "v1", []string{"linux/amd64"}, 2*store.MarkInterval+store.MarkInterval/2)
	org = newOrigin(t, nil)
	b = newNode(t, "b", origin.Addr, func(c *Config) { c.Upstream = []Tier{org} })
	pullAll(t, b.Mirror, "app", "v1", want)
	layer = want.Layers[0]
	if n := len(want.Blobs[layer]); n <= 2*store.MarkInterval {
		t.Fatalf("the layer is %d bytes, want more than two marks", n)
	}
	return origin, org, b, want, layer
}

// TestPeerBytesFlowAsMarksMatch: a client of a node fetching a blob from
// a peer reads each interval the peer's marks vouch for while the rest is
// still on its way, not only once the whole blob is verified.
func TestPeerBytesFlowAsMarksMatch(t *testing.T) {
	t.Parallel()
	origin, _, b, want, layer := markedLayer(t)
	gate := make(chan struct{})
	released := false
	defer func() {
		if !released {
			close(gate)
		}
	}()
	a := newNode(t, "a", origin.Addr, func(c *Config) {
		c.Peers = PeerFinderFunc(func(context.Context, digest.Digest) []Tier {
			return []Tier{gatedTier{Tier: b.PeerTier, after: 2*store.MarkInterval + 1000, gate: gate}}
		})
	})
	req, err := http.NewRequest("GET", "http://"+a.Mirror+"/v2/app/blobs/"+layer.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET: %v %v", err, resp)
	}
	defer resp.Body.Close()
	head := make([]byte, 2*store.MarkInterval)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatalf("reading the two marked intervals while the peer holds the rest: %v", err)
	}
	if !bytes.Equal(head, want.Blobs[layer][:len(head)]) {
		t.Fatal("the marked intervals differ from the blob")
	}
	if _, err := a.Store.Stat(layer); err == nil {
		t.Fatal("the blob was stored before the peer sent its tail")
	}
	close(gate)
	released = true
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(append(head, rest...), want.Blobs[layer]) {
		t.Fatalf("the whole blob: %v, %d bytes", err, len(head)+len(rest))
	}
	if n := origin.gets(layer); n != 1 {
		t.Fatalf("the origin served the layer %d times, want once (to b)", n)
	}
}

// TestRottenPeerIntervalResumes: a byte rotten in the second interval of
// a peer's copy is caught at the second mark; the client, which already
// had the first interval, gets the whole blob, and the next source is
// asked only for the bytes from the first mark on.
func TestRottenPeerIntervalResumes(t *testing.T) {
	t.Parallel()
	origin, org, b, want, layer := markedLayer(t)
	path := blobFile(t, b, layer)
	rotten, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rotten[store.MarkInterval+store.MarkInterval/2] ^= 0x40
	if err := os.WriteFile(path, rotten, 0o600); err != nil {
		t.Fatal(err)
	}
	var bad corruptions
	a := newNode(t, "a", origin.Addr, func(c *Config) {
		c.Peers = peersFrom(b)
		c.Upstream = []Tier{org}
		c.OnCorrupt = bad.hook
	})
	resp, body, err := get(t, "GET", "http://"+a.Mirror+"/v2/app/blobs/"+layer.String())
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, want.Blobs[layer]) {
		t.Fatalf("GET past a peer copy rotten mid-blob: %v, %d bytes", err, len(body))
	}
	if !bad.has("b", layer) {
		t.Fatal("the rotten peer was not reported")
	}
	eventually(t, "the layer is stored", func() bool { _, err := a.Store.Stat(layer); return err == nil })
	st := a.Source.Stats()
	if st.Restarts != 0 || st.Resumes != 1 || st.Tiers["peer"].Corrupt != 1 ||
		st.Tiers["origin"].Bytes != uint64(len(body)-store.MarkInterval) {
		t.Fatalf("stats: %+v, want one resume from the first mark (%d bytes from the origin)", st, len(body)-store.MarkInterval)
	}
	origin.mu.Lock()
	ranges := slices.Clone(origin.ranges[layer])
	origin.mu.Unlock()
	if want := "bytes=8388608-"; !slices.Contains(ranges, want) {
		t.Fatalf("the origin's Range requests for the layer: %q, want %q", ranges, want)
	}
}
