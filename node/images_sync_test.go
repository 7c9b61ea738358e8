package node_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/outpost-mesh/outpost/consensus"
	imagesapi "github.com/outpost-mesh/outpost/images/api"
	"github.com/outpost-mesh/outpost/node"
)

// waitSync waits until an ImageSync ends and returns its status.
func waitSync(t *testing.T, hub *testNode, name string) imagesapi.ImageSyncStatus {
	t.Helper()
	var st imagesapi.ImageSyncStatus
	eventually(t, 90*time.Second, func() error {
		var o struct {
			Status imagesapi.ImageSyncStatus `json:"status"`
		}
		hub.mustDo(t, call{method: http.MethodGet, path: imagesAPI + "/imagesyncs/" + name}, http.StatusOK, &o)
		st = o.Status
		if !imagesapi.Terminal(st.Phase) {
			return fmt.Errorf("imagesync %s: %+v", name, st)
		}
		return nil
	})
	return st
}

// TestImageSyncPlacesAtSite syncs an image to a site of two nodes: the
// site's leader fetches every blob once through the hub, the sync reports
// those bytes as sent; with the origin stopped, both nodes' mirrors then
// serve the image (the other node from its peer) and the hub sends no
// more; a second sync of it sends nothing and counts it all as saved; a
// pin reaches both nodes' stores.
func TestImageSyncPlacesAtSite(t *testing.T) {
	t.Parallel()
	dist := startDistribution(t, "")
	img := pushImage(t, nil, dist.addr+"/team/app:v1", 3, 300_000)
	_, blobBytes := imageBlobs(t, img)

	hub := startNode(t)
	hub.mustDo(t, call{method: http.MethodPost, path: imagesAPI + "/clusterregistries",
		body: resourceJSON("ClusterRegistry", "dist", map[string]any{"domain": dist.addr, "insecure": true})}, http.StatusCreated, nil)
	token := hub.createToken(t, "s", 0, time.Time{})
	calmRaft := func(c *node.Config) {
		c.TuneRaft = func(c *consensus.Config) {
			c.HeartbeatTimeout = 500 * time.Millisecond
			c.ElectionTimeout = 500 * time.Millisecond
			c.LeaderLeaseTimeout = 250 * time.Millisecond
		}
	}
	var m1, m2 string
	defNS := func(c *node.Config) { c.RegistryDefaultNS = dist.addr }
	e1 := startEdge(t, hub.hubQUIC(t), token, "s-1", mirrorAt(t, &m1), calmRaft, defNS)
	e2 := startEdge(t, hub.hubQUIC(t), token, "s-2", mirrorAt(t, &m2), calmRaft, defNS)
	nodes := []*edgeNode{e1, e2}
	eventually(t, 60*time.Second, func() error {
		l := siteLeader(nodes)
		if l == nil {
			return errors.New("site s has no leader")
		}
		if s := suffrage(l); s["s-1"] == "" || s["s-2"] == "" { // one voter, one non-voter
			return fmt.Errorf("site s's group is %v", s)
		}
		// A sync to a site the hub has not heard of yet fails at once.
		if code, b := hub.do(t, call{method: http.MethodGet, path: sitesPath + "/s"}); code != http.StatusOK {
			return fmt.Errorf("site s at the hub: %d %s", code, b)
		}
		return nil
	})

	image := dist.addr + "/team/app:v1"
	hub.mustDo(t, call{method: http.MethodPost, path: imagesAPI + "/imagesyncs",
		body: resourceJSON("ImageSync", "warm", map[string]any{"image": image, "sites": []string{"s"}, "pin": true})}, http.StatusCreated, nil)
	st := waitSync(t, hub, "warm")
	if st.Phase != imagesapi.PhaseSucceeded || len(st.Sites) != 1 {
		t.Fatalf("sync: %+v", st)
	}
	p := st.Sites[0]
	// What the hub sent (below) is the proof of once per site; the
	// sync's own split is redone by a new site leader if the first one
	// lost its leadership mid-sync (it then finds the blobs present).
	if st.BytesSent+st.BytesSaved != blobBytes || p.BytesTotal != blobBytes || p.Blobs != 4 || p.BlobsDone != 4 || p.Manifests != 1 {
		t.Fatalf("sync sent %d and saved %d of %d bytes: %+v", st.BytesSent, st.BytesSaved, blobBytes, p)
	}
	sample := `outpost_images_blob_stream_bytes_total{to="site"}`
	if got := hubMetric(t, hub, sample); got != float64(blobBytes) {
		t.Fatalf("the hub sent %v blob bytes to sites, want %d", got, blobBytes)
	}
	placer := e1
	if p.Node == "s-2" {
		placer = e2
	}
	other := map[*edgeNode]*edgeNode{e1: e2, e2: e1}[placer]
	eventually(t, 30*time.Second, func() error { // the other node's index learns the holdings
		ds, _ := imageBlobs(t, img)
		for _, d := range ds {
			if h, err := other.ImageHolders(t.Context(), d); err != nil || len(h) == 0 {
				return fmt.Errorf("holders of %s: %v %v", d, h, err)
			}
		}
		return nil
	})

	// The origin goes away; the site still serves the image, the node that
	// did not place it from its peer, and the hub sends nothing more.
	dist.stop()
	mirrors := map[*edgeNode]string{e1: m1, e2: m2}
	pull(t, mirrors[other], "team/app:v1", img)
	pull(t, mirrors[placer], "team/app:v1", img)
	if st, _ := other.ImageStats(); st.Fetch.Tiers["peer"].Bytes != uint64(blobBytes) || st.Fetch.Tiers["hub"].Bytes != 0 {
		t.Fatalf("%s fetched %+v, want every blob byte from its peer", other.Name(), st.Fetch.Tiers)
	}
	if got := hubMetric(t, hub, sample); got != float64(blobBytes) {
		t.Fatalf("the hub sent %v blob bytes to sites after the pulls, want still %d", got, blobBytes)
	}

	// The pin reaches both nodes' stores.
	eventually(t, 30*time.Second, func() error {
		for _, e := range nodes {
			pins, err := e.ImagePins()
			if err != nil || len(pins) != 1 || pins[0] != image {
				return fmt.Errorf("%s pins %v %v", e.Name(), pins, err)
			}
		}
		return nil
	})

	// Again: everything is at the site already.
	hub.mustDo(t, call{method: http.MethodPost, path: imagesAPI + "/imagesyncs",
		body: resourceJSON("ImageSync", "again", map[string]any{"image": image, "sites": []string{"s"}})}, http.StatusCreated, nil)
	st = waitSync(t, hub, "again")
	if st.Phase != imagesapi.PhaseSucceeded || st.BytesSent != 0 || st.BytesSaved != blobBytes {
		t.Fatalf("second sync: %+v", st)
	}

	// Unpinning (spec.pin false) releases the pins on both nodes.
	hub.mustDo(t, call{method: http.MethodPatch, path: imagesAPI + "/imagesyncs/warm", contentType: "application/merge-patch+json",
		body: []byte(`{"spec":{"pin":false}}`)}, http.StatusOK, nil)
	eventually(t, 30*time.Second, func() error {
		for _, e := range nodes {
			if pins, err := e.ImagePins(); err != nil || len(pins) != 0 {
				return fmt.Errorf("%s pins %v %v", e.Name(), pins, err)
			}
		}
		return nil
	})
}

// TestImageSyncUnknownSite fails a sync to a site the hub does not know,
// naming it.
func TestImageSyncUnknownSite(t *testing.T) {
	t.Parallel()
	hub := startNode(t)
	hub.mustDo(t, call{method: http.MethodPost, path: imagesAPI + "/imagesyncs",
		body: resourceJSON("ImageSync", "lost", map[string]any{"image": "registry.example.com/app:v1", "sites": []string{"nowhere"}})}, http.StatusCreated, nil)
	st := waitSync(t, hub, "lost")
	if st.Phase != imagesapi.PhaseFailed || len(st.Sites) != 1 || len(st.Sites[0].Errors) != 1 || st.Sites[0].Errors[0] != `site "nowhere" is not known to the hub` {
		t.Fatalf("sync: %+v", st)
	}
}
