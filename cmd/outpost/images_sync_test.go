package main

import (
	"strings"
	"testing"

	imagesapi "github.com/outpost-mesh/outpost/images/api"
)

// TestImagesSyncCLI drives `outpost images sync/pin/unpin/prune/ls`
// against a real hub: a sync to a site the hub does not know fails with
// the summary line and the site's error; pin and unpin flip spec.pin;
// prune deletes the ended, unpinned sync only.
func TestImagesSyncCLI(t *testing.T) {
	t.Parallel()
	bin := outpostBinary(t)
	d := startDaemon(t, bin, t.TempDir())
	const image = "registry.example.com/team/app:v1"

	r := d.fails(t, "images", "sync", image, "--sites", "nowhere", "--name", "lost", "--wait")
	if !strings.Contains(r.stdout, image+" failed at 1 site(s): 0 B sent, 0 B saved") || !strings.Contains(r.stdout, `site nowhere: site "nowhere" is not known to the hub`) {
		t.Fatalf("sync --wait output:\n%s\nstderr: %s", r.stdout, r.stderr)
	}
	if out := d.ok(t, "", "images", "pin", image); !strings.Contains(out, "imagesync/lost pinned=true") {
		t.Fatalf("pin: %s", out)
	}
	if out := d.ok(t, "", "images", "prune", "--dry-run"); !strings.Contains(out, "nothing to prune") {
		t.Fatalf("prune of a pinned sync: %s", out)
	}
	d.ok(t, "", "images", "unpin", image)
	if out := d.ok(t, "", "images", "prune"); !strings.Contains(out, "imagesync/lost deleted") {
		t.Fatalf("prune: %s", out)
	}
	if r := d.fails(t, "images", "unpin", image); !strings.Contains(r.stderr, "no ImageSync places") {
		t.Fatalf("unpin without a sync: %+v", r)
	}
	if r := d.fails(t, "images", "sync", "https://x/app", "--sites", "a"); !strings.Contains(r.stderr, "not an image reference") {
		t.Fatalf("sync of a bad reference: %+v", r)
	}
	if out := d.ok(t, "", "images", "ls"); !strings.HasPrefix(out, "REGISTRY") {
		t.Fatalf("ls: %s", out)
	}
}

func TestProgressLine(t *testing.T) {
	t.Parallel()
	st := imagesapi.ImageSyncStatus{BytesSent: 3 << 20, BytesSaved: 1 << 20, Sites: []imagesapi.SiteProgress{
		{BytesTotal: 4 << 20, BytesSent: 3 << 20}, {BytesTotal: 4 << 20, BytesPresent: 1 << 20},
	}}
	want := "[###############               ]  50% 4.0 MiB/8.0 MiB  sent 3.0 MiB  saved 1.0 MiB"
	if got := progressLine(st); got != want {
		t.Fatalf("progressLine:\n%q\nwant\n%q", got, want)
	}
}
