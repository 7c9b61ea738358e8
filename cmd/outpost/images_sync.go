package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	imagesapi "github.com/outpost-mesh/outpost/images/api"
)

const (
	imageSyncsPath = "/apis/" + imagesapi.Group + "/" + imagesapi.Version + "/imagesyncs"
	imageStatsPath = "/apis/" + imagesapi.Group + "/" + imagesapi.Version + "/imagestats"
	// syncPoll is how often `images sync --wait` reads the sync.
	syncPoll = 500 * time.Millisecond
)

// addImageResourceCommands adds the verbs over the hub's image resources
// to `outpost images`.
func addImageResourceCommands(cmd *cobra.Command) {
	cmd.AddCommand(newImagesSyncCommand(), newImagesLsCommand(), newImagesPinCommand(true), newImagesPinCommand(false), newImagesPruneCommand())
}

// globalsOf reads the root's persistent flags from a subcommand.
func globalsOf(cmd *cobra.Command) *globals {
	g := &globals{namespace: "default"}
	if f := cmd.Flag("config"); f != nil {
		g.config = f.Value.String()
	}
	return g
}

// imageSyncObject is an ImageSync as the API returns it.
type imageSyncObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              imagesapi.ImageSyncSpec   `json:"spec"`
	Status            imagesapi.ImageSyncStatus `json:"status"`
}

type syncOptions struct {
	sites, platforms []string
	name             string
	pin, wait        bool
	timeout          time.Duration
}

func newImagesSyncCommand() *cobra.Command {
	o := syncOptions{}
	cmd := &cobra.Command{
		Use:   "sync REF --sites a,b [--platform linux/arm64] [--pin] [--wait]",
		Short: "Place an image at sites before it is pulled (an ImageSync)",
		Long: `Create an ImageSync: the leader of each site fetches the image through its
site's cache, so each blob the site lacks crosses the WAN once, and blobs the
site holds already are counted as saved. Without --platform, an index is
placed for the platforms the site's nodes run. --pin keeps it from eviction
on every node of the sites while the ImageSync exists (outpost images unpin).
With --wait, a progress bar (on a terminal) and a summary of the bytes sent
and saved.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), globalsOf(cmd), args[0], cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.sites, "sites", nil, "sites to place the image at (comma-separated)")
	f.StringSliceVar(&o.platforms, "platform", nil, "platforms of an index to place, e.g. linux/arm64 (default: those the site's nodes run)")
	f.StringVar(&o.name, "name", "", "name of the ImageSync (default: from the image)")
	f.BoolVar(&o.pin, "pin", false, "keep the image from eviction at the sites")
	f.BoolVar(&o.wait, "wait", false, "wait until every site has the image, showing progress")
	f.DurationVar(&o.timeout, "timeout", time.Hour, "with --wait: give up waiting after this long")
	f.SetNormalizeFunc(siteAlias)
	return cmd
}

// siteAlias accepts --site for --sites (images ls and task commands take
// --site).
func siteAlias(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	if name == "site" {
		name = "sites"
	}
	return pflag.NormalizedName(name)
}

var nameUnsafe = regexp.MustCompile(`[^a-z0-9-]+`)

// syncName derives an object name from an image reference.
func syncName(ref imagesapi.ImageRef) string {
	base := ref.Repository
	if i := strings.LastIndex(base, "/"); i >= 0 {
		base = base[i+1:]
	}
	base = strings.Trim(nameUnsafe.ReplaceAllString(strings.ToLower(base), "-"), "-")
	if len(base) > 40 {
		base = base[:40]
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return strings.Trim(base+"-"+hex.EncodeToString(b), "-")
}

func (o syncOptions) run(ctx context.Context, g *globals, image string, out io.Writer) error {
	if len(o.sites) == 0 {
		return errors.New("--sites: name at least one site, e.g. --sites a,b")
	}
	ref, err := imagesapi.ParseImage(image)
	if err != nil {
		return err
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	name := o.name
	if name == "" {
		name = syncName(ref)
	}
	obj := imageSyncObject{
		TypeMeta:   metav1.TypeMeta{APIVersion: imagesapi.Group + "/" + imagesapi.Version, Kind: imagesapi.ImageSyncKind.Kind},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       imagesapi.ImageSyncSpec{Image: image, Sites: o.sites, Platforms: o.platforms, Pin: o.pin},
	}
	body, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, requestTimeout)
	_, err = c.do(cctx, http.MethodPost, imageSyncsPath, body, "application/json", "")
	cancel()
	if err != nil {
		return err
	}
	if !o.wait {
		fmt.Fprintf(out, "imagesync/%s created; follow it with `outpost get imagesync %s`\n", name, name)
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	return waitSync(wctx, c, name, out)
}

// waitSync follows a sync until it ends, with a progress bar on a
// terminal and a line per site otherwise, then prints the summary.
func waitSync(ctx context.Context, c *client, name string, out io.Writer) error {
	tty := isTerminal(out)
	printed := map[string]string{}
	t := time.NewTicker(syncPoll)
	defer t.Stop()
	for {
		var s imageSyncObject
		b, err := c.do(ctx, http.MethodGet, imageSyncsPath+"/"+url.PathEscape(name), nil, "", "")
		if err == nil {
			err = json.Unmarshal(b, &s)
		}
		if err != nil {
			return err
		}
		if tty {
			fmt.Fprintf(out, "\r\033[K%s", progressLine(s.Status))
		} else {
			for _, p := range s.Status.Sites {
				if printed[p.Site] != p.Phase {
					printed[p.Site] = p.Phase
					fmt.Fprintf(out, "site %s: %s\n", p.Site, p.Phase)
				}
			}
		}
		if imagesapi.Terminal(s.Status.Phase) {
			if tty {
				fmt.Fprintln(out)
			}
			return summarizeSync(s, out)
		}
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprintln(out)
			}
			return fmt.Errorf("imagesync/%s is still %s: %w; follow it with `outpost get imagesync %s`", name, s.Status.Phase, ctx.Err(), name)
		case <-t.C:
		}
	}
}

// progressLine is the bar: bytes at the sites (sent or present) of the
// bytes the sites need.
func progressLine(st imagesapi.ImageSyncStatus) string {
	var total, done int64
	for _, p := range st.Sites {
		total += p.BytesTotal
		done += p.BytesSent + p.BytesPresent
	}
	const width = 30
	frac := 0.0
	if total > 0 {
		frac = min(1, float64(done)/float64(total))
	}
	n := int(frac * width)
	return fmt.Sprintf("[%s%s] %3.0f%% %s/%s  sent %s  saved %s", strings.Repeat("#", n), strings.Repeat(" ", width-n),
		100*frac, humanBytes(done), humanBytes(total), humanBytes(st.BytesSent), humanBytes(st.BytesSaved))
}

// summarizeSync prints the summary line, and each failed site's errors.
func summarizeSync(s imageSyncObject, out io.Writer) error {
	fmt.Fprintf(out, "%s %s at %d site(s): %s sent, %s saved (already at the site)\n",
		s.Spec.Image, strings.ToLower(s.Status.Phase), len(s.Spec.Sites), humanBytes(s.Status.BytesSent), humanBytes(s.Status.BytesSaved))
	if s.Status.Phase == imagesapi.PhaseSucceeded {
		return nil
	}
	for _, p := range s.Status.Sites {
		for _, e := range p.Errors {
			fmt.Fprintf(out, "  site %s: %s\n", p.Site, e)
		}
	}
	return fmt.Errorf("imagesync/%s %s", s.Name, s.Status.Message)
}

// humanBytes prints n in binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// imageStatsObject is an ImageStats as the API returns it.
type imageStatsObject struct {
	metav1.ObjectMeta `json:"metadata"`
	Status            imagesapi.ImageStatsStatus `json:"status"`
}

func newImagesLsCommand() *cobra.Command {
	var site string
	cmd := &cobra.Command{
		Use:   "ls [--site S]",
		Short: "List the repositories the nodes' caches hold, with each site's hit ratio and bytes saved",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return imagesLs(cmd.Context(), globalsOf(cmd), site, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&site, "site", "", "only the nodes of this site")
	return cmd
}

func imagesLs(ctx context.Context, g *globals, site string, out io.Writer) error {
	c, err := newClient(g)
	if err != nil {
		return err
	}
	path := imageStatsPath
	if site != "" {
		path += "?labelSelector=" + url.QueryEscape(imagesapi.SiteLabel+"="+site)
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	b, err := c.do(ctx, http.MethodGet, path, nil, "", "")
	if err != nil {
		return err
	}
	var list struct {
		Items []imageStatsObject `json:"items"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("decode image figures: %w", err)
	}
	type row struct {
		nodes     int
		pulls     uint64
		size      int64
		artifacts int
		last      *metav1.Time
	}
	rows := map[[2]string]*row{}
	sites := map[string]*imagesapi.ImageStatsStatus{}
	for _, o := range list.Items {
		s := o.Status
		agg := sites[s.Site]
		if agg == nil {
			agg = &imagesapi.ImageStatsStatus{Site: s.Site}
			sites[s.Site] = agg
		}
		agg.BlobHits += s.BlobHits
		agg.BlobMisses += s.BlobMisses
		agg.BytesSaved += s.BytesSaved
		agg.BytesFromHub += s.BytesFromHub
		agg.BytesFromOrigin += s.BytesFromOrigin
		agg.StoreBytes += s.StoreBytes
		for _, u := range s.Repositories {
			k := [2]string{u.Registry, u.Repository}
			r := rows[k]
			if r == nil {
				r = &row{}
				rows[k] = r
			}
			r.nodes++
			r.pulls += u.Pulls
			r.size = max(r.size, u.SizeBytes)
			r.artifacts = max(r.artifacts, u.Artifacts)
			if u.LastPulled != nil && (r.last == nil || r.last.Before(u.LastPulled)) {
				r.last = u.LastPulled
			}
		}
	}
	keys := make([][2]string, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	tw := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "REGISTRY\tREPOSITORY\tARTIFACTS\tNODES\tPULLS\tSIZE\tLAST-PULLED")
	for _, k := range keys {
		r := rows[k]
		reg, last := k[0], "-"
		if reg == "" {
			reg = "(hub)"
		}
		if r.last != nil {
			last = r.last.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\n", reg, k[1], r.artifacts, r.nodes, r.pulls, humanBytes(r.size), last)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	names := make([]string, 0, len(sites))
	for s := range sites {
		names = append(names, s)
	}
	sort.Strings(names)
	for _, s := range names {
		a := sites[s]
		ratio := 0.0
		if a.BlobHits+a.BlobMisses > 0 {
			ratio = 100 * float64(a.BlobHits) / float64(a.BlobHits+a.BlobMisses)
		}
		fmt.Fprintf(out, "site %s: hit ratio %.0f%%, %s saved (from peers), %s from the hub, %s from origins, %s cached\n",
			s, ratio, humanBytes(int64(a.BytesSaved)), humanBytes(int64(a.BytesFromHub)), humanBytes(int64(a.BytesFromOrigin)), humanBytes(a.StoreBytes))
	}
	if len(list.Items) == 0 && site != "" {
		fmt.Fprintf(out, "no node of site %s has reported image figures yet\n", site)
	}
	return nil
}

// listSyncs reads every ImageSync.
func listSyncs(ctx context.Context, c *client) ([]imageSyncObject, error) {
	b, err := c.do(ctx, http.MethodGet, imageSyncsPath, nil, "", "")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []imageSyncObject `json:"items"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("decode image syncs: %w", err)
	}
	return list.Items, nil
}

func newImagesPinCommand(pin bool) *cobra.Command {
	var sites []string
	use, short := "unpin REF", "Release an image's pin: it becomes evictable again at its sites"
	if pin {
		use, short = "pin REF [--sites a,b]", "Keep an image from eviction at the sites of its ImageSyncs (or at --sites)"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long: short + `.

Pins are kept by ImageSync (spec.pin): the hub sends each site the pins of
the ImageSyncs that name it, and every node of the site pins those images in
its store. pin sets spec.pin on the ImageSyncs of REF, or, with --sites and
none yet, creates one (which also places the image).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return setPin(cmd.Context(), globalsOf(cmd), args[0], pin, sites, cmd.OutOrStdout())
		},
	}
	if pin {
		cmd.Flags().StringSliceVar(&sites, "sites", nil, "create an ImageSync for these sites when REF has none")
		cmd.Flags().SetNormalizeFunc(siteAlias)
	}
	return cmd
}

func setPin(ctx context.Context, g *globals, image string, pin bool, sites []string, out io.Writer) error {
	ref, err := imagesapi.ParseImage(image)
	if err != nil {
		return err
	}
	c, err := newClient(g)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	syncs, err := listSyncs(ctx, c)
	if err != nil {
		return err
	}
	matched := 0
	for _, s := range syncs {
		r, err := imagesapi.ParseImage(s.Spec.Image)
		if err != nil || r != ref {
			continue
		}
		matched++
		if s.Spec.Pin == pin {
			fmt.Fprintf(out, "imagesync/%s unchanged\n", s.Name)
			continue
		}
		patch := fmt.Sprintf(`{"spec":{"pin":%t}}`, pin)
		if _, err := c.do(ctx, http.MethodPatch, imageSyncsPath+"/"+url.PathEscape(s.Name), []byte(patch), "application/merge-patch+json", ""); err != nil {
			return err
		}
		fmt.Fprintf(out, "imagesync/%s pinned=%t\n", s.Name, pin)
	}
	switch {
	case matched > 0:
		return nil
	case pin && len(sites) > 0:
		return syncOptions{sites: sites, pin: true}.run(ctx, g, image, out)
	case pin:
		return fmt.Errorf("no ImageSync places %s: give --sites to create one", ref)
	default:
		return fmt.Errorf("no ImageSync places %s, so nothing pins it", ref)
	}
}

func newImagesPruneCommand() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "prune [--dry-run]",
		Short: "Delete the ImageSyncs that ended and pin nothing",
		Long: `Delete the ImageSyncs that ended (Succeeded or Failed) and are not pinned.
What they placed stays in the sites' caches and is evicted, least recently
used first, when a node's cache reaches its --cache-size; pinned images are
kept until unpinned.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return prune(cmd.Context(), globalsOf(cmd), dryRun, cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only print what would be deleted")
	return cmd
}

func prune(ctx context.Context, g *globals, dryRun bool, out io.Writer) error {
	c, err := newClient(g)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	syncs, err := listSyncs(ctx, c)
	if err != nil {
		return err
	}
	n := 0
	for _, s := range syncs {
		if s.Spec.Pin || !imagesapi.Terminal(s.Status.Phase) {
			continue
		}
		n++
		if dryRun {
			fmt.Fprintf(out, "imagesync/%s would be deleted (%s)\n", s.Name, s.Status.Phase)
			continue
		}
		if _, err := c.do(ctx, http.MethodDelete, imageSyncsPath+"/"+url.PathEscape(s.Name), nil, "", ""); err != nil {
			return err
		}
		fmt.Fprintf(out, "imagesync/%s deleted\n", s.Name)
	}
	if n == 0 {
		fmt.Fprintln(out, "nothing to prune")
	}
	return nil
}
