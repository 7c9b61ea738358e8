package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"
)

func TestAPIWatch(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	a := tn.createSite(t, "watch-a", map[string]string{"w": "1"}, nil)
	tn.createSite(t, "watch-b", map[string]string{"w": "1"}, nil)
	tn.createSite(t, "unwatched", nil, nil)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tn.url+sitesPath+"?watch=true&labelSelector=w%3D1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tn.token)
	resp, err := tn.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("watch: %d %s", resp.StatusCode, b)
	}
	dec := json.NewDecoder(resp.Body)
	next := func() watchEvent {
		t.Helper()
		var ev watchEvent
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("read watch event: %v", err)
		}
		return ev
	}

	var added []string
	for range 2 {
		ev := next()
		if ev.Type != "ADDED" {
			t.Fatalf("initial event %s %s, want ADDED", ev.Type, ev.Object.Metadata.Name)
		}
		added = append(added, ev.Object.Metadata.Name)
	}
	slices.Sort(added)
	if !slices.Equal(added, []string{"watch-a", "watch-b"}) {
		t.Fatalf("ADDED %v, want watch-a and watch-b", added)
	}

	// A change to an unwatched object is filtered out; one to a watched
	// object arrives as MODIFIED with its new resourceVersion.
	tn.mustDo(t, call{method: http.MethodPatch, path: sitesPath + "/unwatched", body: []byte(`{"spec":{"location":"x"}}`), contentType: "application/merge-patch+json"}, http.StatusOK, nil)
	var mod object
	tn.mustDo(t, call{method: http.MethodPatch, path: sitesPath + "/watch-a", body: []byte(`{"spec":{"location":"moved"}}`), contentType: "application/merge-patch+json"}, http.StatusOK, &mod)
	ev := next()
	if ev.Type != "MODIFIED" || ev.Object.Metadata.Name != "watch-a" || ev.Object.Metadata.ResourceVersion != mod.Metadata.ResourceVersion || ev.Object.Spec["location"] != "moved" {
		t.Fatalf("event %s %s rv %s spec %v, want MODIFIED watch-a rv %s location moved", ev.Type, ev.Object.Metadata.Name, ev.Object.Metadata.ResourceVersion, ev.Object.Spec, mod.Metadata.ResourceVersion)
	}

	tn.mustDo(t, call{method: http.MethodDelete, path: sitesPath + "/watch-b"}, http.StatusOK, nil)
	if ev := next(); ev.Type != "DELETED" || ev.Object.Metadata.Name != "watch-b" {
		t.Fatalf("event %s %s, want DELETED watch-b", ev.Type, ev.Object.Metadata.Name)
	}

	// Resuming from a resourceVersion replays what came after it.
	cancel()
	resp.Body.Close()
	events := tn.watchFrom(t, a.Metadata.ResourceVersion, 3)
	var got []string
	for _, ev := range events {
		got = append(got, ev.Type+" "+ev.Object.Metadata.Name)
	}
	if want := []string{"ADDED watch-b", "MODIFIED watch-a", "DELETED watch-b"}; !slices.Equal(got, want) {
		t.Errorf("resumed watch %v, want %v", got, want)
	}
}

// watchEvent is one event of a watch stream.
type watchEvent struct {
	Type   string `json:"type"`
	Object object `json:"object"`
}

// watchFrom watches sites labelled w=1 from resourceVersion rv and returns
// the first n events.
func (tn *testNode) watchFrom(t *testing.T, rv string, n int) []watchEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tn.url+sitesPath+"?watch=1&labelSelector=w%3D1&resourceVersion="+rv, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tn.token)
	resp, err := tn.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	var out []watchEvent
	for range n {
		var ev watchEvent
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("read watch event %d: %v", len(out), err)
		}
		out = append(out, ev)
	}
	return out
}

// TestAPIWatchEndsOnShutdown checks that an open watch does not hold up the
// node's stop: Run must return promptly while a client is still reading.
func TestAPIWatchEndsOnShutdown(t *testing.T) {
	t.Parallel()
	tn := startNode(t)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, tn.url+sitesPath+"?watch=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tn.token)
	resp, err := tn.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ev watchEvent
	if err := json.NewDecoder(resp.Body).Decode(&ev); err != nil || ev.Object.Metadata.Name != "hub" {
		t.Fatalf("first event %+v (%v), want ADDED hub", ev, err)
	}

	start := time.Now()
	tn.stop(t)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run took %s to stop with a watch open", d)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("watch body after stop: %v", err)
	}
}
