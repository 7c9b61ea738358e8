package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/node"
	"github.com/outpost-mesh/outpost/ota"
)

func newTaskCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "task", Short: "Watch and steer OTA tasks (create them with `outpost apply -f`)"}
	cmd.AddCommand(newTaskWatchCommand(g), newTaskResultsCommand(g), newTaskLogsCommand(g))
	cmd.AddCommand(newTaskSteerCommands(g)...)
	return cmd
}

// taskObject is a Task as the CLI reads it.
type taskObject struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     ota.TaskSpec      `json:"spec"`
	Status   ota.TaskStatus    `json:"status"`
}

func terminal(p ota.TaskPhase) bool {
	switch p {
	case ota.TaskSucceeded, ota.TaskFailed, ota.TaskCanceled:
		return true
	}
	return false
}

func newTaskWatchCommand(g *globals) *cobra.Command {
	var allSites bool
	cmd := &cobra.Command{
		Use:   "watch NAME",
		Short: "Show a task's progress live; exit when it ends or halts (non-zero unless every device succeeded)",
		Long: `Show a task's progress live: its counts, then a line per site. With more
sites than fit (the terminal's height, else ` + strconv.Itoa(siteLinesDefault) + `), the sites still running, with
failures or cut off from the hub come first and the rest are summed up in
one line; --all-sites shows every site.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, r, err := connect(cmd.Context(), g, "tasks")
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			tty := isTerminal(out)
			siteLines := 0 // every site
			if !allSites {
				siteLines = siteLinesFor(out, tty)
			}
			var last string
			lines := 0
			var failingSince time.Time
			sites, _ := c.resolve(cmd.Context(), "sites")
			var cut map[string]*metav1.Time
			var cutAt time.Time
			for {
				if sites != nil && time.Since(cutAt) >= cutEvery {
					cut, cutAt = disconnectedSites(cmd.Context(), c, sites), time.Now()
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
				body, err := c.do(ctx, http.MethodGet, r.path("", args[0]), nil, "", "")
				cancel()
				if err != nil && cmd.Context().Err() == nil && transient(err) {
					// A hub leader change: keep watching for a while.
					if failingSince.IsZero() {
						failingSince = time.Now()
					}
					if time.Since(failingSince) < watchPatience {
						time.Sleep(time.Second)
						continue
					}
				}
				if err != nil {
					return err
				}
				failingSince = time.Time{}
				var t taskObject
				if err := json.Unmarshal(body, &t); err != nil {
					return err
				}
				view := renderProgress(&t, cut, siteLines, tty && colorOutput(out))
				if view != last {
					if tty && lines > 0 {
						fmt.Fprintf(out, "\033[%dA\033[J", lines)
					}
					fmt.Fprint(out, view)
					lines, last = strings.Count(view, "\n"), view
				}
				if t.Status.Phase == ota.TaskHalted && t.Status.Counts.Running == 0 {
					// Nothing moves until someone steers it.
					next := "`outpost task resume %[1]s` or `outpost task cancel %[1]s`"
					if c := meta.FindStatusCondition(t.Status.Conditions, "Halted"); c != nil {
						fmt.Fprintf(out, "Halted (%s): %s\n", c.Reason, c.Message)
						if c.Reason == "FailurePolicy" {
							next = "`outpost task retry %[1]s --failed` or `outpost task cancel %[1]s`"
						}
					}
					fmt.Fprintf(out, "nothing more runs until it is steered: "+next+"\n", t.Metadata.Name)
					return &exitError{code: 1}
				}
				if terminal(t.Status.Phase) {
					if t.Status.Phase != ota.TaskSucceeded {
						for _, c := range t.Status.Conditions {
							if c.Status == metav1.ConditionFalse {
								fmt.Fprintf(out, "%s: %s\n", c.Reason, c.Message)
							}
						}
						return &exitError{code: 1}
					}
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&allSites, "all-sites", false, "a line for every site, however many")
	return cmd
}

// siteLinesDefault is how many site lines task watch shows when it cannot
// tell the terminal's height (its output is not a terminal).
const siteLinesDefault = 20

// siteLinesFor is how many site lines fit: the terminal's height less the
// lines around them, so that a redraw never scrolls.
func siteLinesFor(out io.Writer, tty bool) int {
	if f, ok := out.(*os.File); ok && tty {
		if _, h, err := term.GetSize(int(f.Fd())); err == nil && h > 0 {
			return max(5, h-5)
		}
	}
	return siteLinesDefault
}

// watchPatience is how long task watch rides out a hub that does not
// answer (a leader election) before it gives up.
const watchPatience = time.Minute

// transient reports whether a failed call is worth repeating: the hub was
// unreachable, had no leader, or timed out.
func transient(err error) bool {
	var ae *apiError
	if errors.As(err, &ae) {
		switch ae.status.Code {
		case http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusBadGateway, http.StatusInternalServerError:
			return true
		}
		return ae.status.Reason == metav1.StatusReasonServerTimeout || ae.status.Reason == metav1.StatusReasonTimeout
	}
	return true // no answer at all
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// cutEvery is how often task watch looks at which sites are connected.
const cutEvery = 2 * time.Second

// disconnectedSites returns the sites not connected to the hub, each with
// when the hub last heard from it; nil when the sites cannot be read (the
// watch goes on without).
func disconnectedSites(ctx context.Context, c *client, sites *resource) map[string]*metav1.Time {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	body, err := c.do(ctx, http.MethodGet, sites.path("", ""), nil, "", "")
	if err != nil {
		return nil
	}
	var list struct {
		Items []struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
			Status   node.SiteStatus   `json:"status"`
		} `json:"items"`
	}
	if json.Unmarshal(body, &list) != nil {
		return nil
	}
	cut := map[string]*metav1.Time{}
	for _, s := range list.Items {
		if !s.Status.Connected {
			cut[s.Metadata.Name] = s.Status.LastSeen
		}
	}
	return cut
}

// renderProgress draws the counts as a bar, then one line per site; a
// site with devices still to finish that is not connected to the hub (in
// cut) says so, since its devices wait for it. With more sites than
// siteLines (0: no limit), the sites that need a look (unfinished, with a
// device that did not succeed) are shown, up to siteLines, and the rest
// summed up.
func renderProgress(t *taskObject, cut map[string]*metav1.Time, siteLines int, tty bool) string {
	var b strings.Builder
	c := t.Status.Counts
	done := c.Finished()
	phase := string(t.Status.Phase)
	if phase == "" {
		phase = string(ota.TaskPending)
	}
	fmt.Fprintf(&b, "%s  %-9s %s %d/%d  succeeded %d  failed %d  running %d  queued %d  unreachable %d  canceled %d\n",
		t.Metadata.Name, phase, bar(c, 30, tty), done, c.Total, c.Succeeded, c.Failed, c.Running, c.Queued, c.Unreachable, c.Canceled)
	if nf := t.Status.NotFound; nf != nil {
		fmt.Fprintf(&b, "  not found, not run: %s\n", nf)
	}
	sites := make([]string, 0, len(t.Status.Sites))
	for s := range t.Status.Sites {
		sites = append(sites, s)
	}
	sort.Strings(sites)
	var rest []string
	if siteLines > 0 && len(sites) > siteLines {
		sites, rest = pickSites(t.Status.Sites, sites, siteLines-1) // a line for the rest
	}
	for _, s := range sites {
		sc := t.Status.Sites[s]
		done := sc.Finished()
		fmt.Fprintf(&b, "  site %-16s %s %d/%d  failed %d  running %d", s, bar(sc, 20, tty), done, sc.Total, sc.Failed, sc.Running)
		if seen, ok := cut[s]; ok && done < sc.Total {
			b.WriteString("  not connected to the hub")
			if seen != nil {
				b.WriteString(" since " + seen.Local().Format(time.TimeOnly))
			}
			b.WriteString(": its results come when it is back (`outpost get sites`)")
		}
		b.WriteByte('\n')
	}
	if len(rest) > 0 {
		b.WriteString(restOfSites(t.Status.Sites, rest))
	}
	return b.String()
}

// pickSites splits sites (sorted) into up to n to show, those that need a
// look first, and the rest.
func pickSites(counts map[string]ota.Counts, sites []string, n int) (shown, rest []string) {
	var look, clean []string
	for _, s := range sites {
		if c := counts[s]; c.Finished() < c.Total || c.Succeeded < c.Total {
			look = append(look, s)
		} else {
			clean = append(clean, s)
		}
	}
	all := append(look, clean...)
	shown = all[:n]
	slices.Sort(shown)
	return shown, all[n:]
}

// restOfSites is the line that sums up the sites not shown.
func restOfSites(counts map[string]ota.Counts, rest []string) string {
	var clean, running, bad int
	for _, s := range rest {
		c := counts[s]
		switch {
		case c.Finished() < c.Total:
			running++
		case c.Succeeded < c.Total:
			bad++
		default:
			clean++
		}
	}
	parts := []string{fmt.Sprintf("%d all succeeded", clean)}
	if running > 0 {
		parts = append(parts, fmt.Sprintf("%d running", running))
	}
	if bad > 0 {
		parts = append(parts, fmt.Sprintf("%d finished with failures", bad))
	}
	return fmt.Sprintf("  and %d more sites: %s (--all-sites shows every site)\n", len(rest), strings.Join(parts, ", "))
}

// bar is a progress bar: succeeded, then failed, then running.
func bar(c ota.Counts, width int, tty bool) string {
	if c.Total == 0 {
		return "[" + strings.Repeat(" ", width) + "]"
	}
	cells := func(n int) int { return n * width / c.Total }
	ok, bad, run := cells(c.Succeeded), cells(c.Failed+c.Unreachable+c.Canceled), cells(c.Running)
	rest := max(0, width-ok-bad-run)
	if !tty {
		return "[" + strings.Repeat("#", ok) + strings.Repeat("x", bad) + strings.Repeat(">", run) + strings.Repeat(".", rest) + "]"
	}
	return "[\033[32m" + strings.Repeat("█", ok) + "\033[31m" + strings.Repeat("█", bad) + "\033[33m" + strings.Repeat("▒", run) + "\033[0m" + strings.Repeat("░", rest) + "]"
}

// resultObject is a DeviceResult as the CLI reads it.
type resultObject struct {
	Metadata metav1.ObjectMeta      `json:"metadata"`
	Spec     ota.DeviceResultSpec   `json:"spec"`
	Status   ota.DeviceResultStatus `json:"status"`
}

func newTaskResultsCommand(g *globals) *cobra.Command {
	var phase, output string
	var all bool
	cmd := &cobra.Command{
		Use:   "results NAME",
		Short: "List a task's device results, devices with identical output grouped",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutputOf(output, "text"); err != nil {
				return err
			}
			if phase != "" && !slices.ContainsFunc(devicePhases, func(p ota.DevicePhase) bool { return strings.EqualFold(string(p), phase) }) {
				return fmt.Errorf("--phase %q: want one of queued, running, succeeded, failed, timedout, unreachable, canceled", phase)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			defer cancel()
			c, r, err := connect(ctx, g, "deviceresults")
			if err != nil {
				return err
			}
			sel := ota.LabelTask + "=" + args[0]
			body, err := c.do(ctx, http.MethodGet, r.path("", "")+"?labelSelector="+url.QueryEscape(sel), nil, "", "")
			if err != nil {
				return err
			}
			var list struct {
				Items []resultObject `json:"items"`
			}
			if err := json.Unmarshal(body, &list); err != nil {
				return err
			}
			items := []resultObject{}
			for _, it := range list.Items {
				if phase == "" || matchesPhase(it.Status.Phase, phase) {
					items = append(items, it)
				}
			}
			switch output {
			case "json", "yaml":
				b, err := json.Marshal(items)
				if err != nil {
					return err
				}
				return printObject(cmd.OutOrStdout(), b, output)
			case "name":
				b, _ := json.Marshal(map[string]any{"items": items})
				return printNames(cmd.OutOrStdout(), r, b)
			}
			if len(list.Items) == 0 {
				// No results at all: say so if there is no such task.
				tasks, err := c.resolve(ctx, "tasks")
				if err != nil {
					return err
				}
				if _, err := c.do(ctx, http.MethodGet, tasks.path("", args[0]), nil, "", ""); err != nil {
					return err
				}
			}
			if len(items) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "no device results for task %s%s\n", args[0], map[bool]string{true: " in phase " + phase}[phase != ""])
				return nil
			}
			printGrouped(cmd.OutOrStdout(), items, all)
			return nil
		},
	}
	cmd.Flags().StringVar(&phase, "phase", "", "only devices in this phase (queued, running, succeeded, failed, timedout, unreachable, canceled; failed includes timedout; a device is running here once it has run 30 s, in the task's counts as soon as it starts)")
	cmd.Flags().BoolVar(&all, "all", false, fmt.Sprintf("name every device of a group (without it, the first %d)", groupNames))
	addOutputFlag(cmd, &output, "text")
	return cmd
}

// groupNames is how many devices a group of `task results` names unless
// --all: a group of ten thousand would otherwise be one line of 100 KB.
const groupNames = 20

// devicePhases are the phases --phase takes (any case).
var devicePhases = []ota.DevicePhase{ota.DeviceQueued, ota.DeviceRunning, ota.DeviceSucceeded, ota.DeviceFailed,
	ota.DeviceTimedOut, ota.DeviceUnreachable, ota.DeviceCanceled}

func matchesPhase(p ota.DevicePhase, want string) bool {
	want = strings.ToLower(want)
	got := strings.ToLower(string(p))
	return got == want || (want == "failed" && p == ota.DeviceTimedOut)
}

// printGrouped prints one group per distinct outcome: its phase, the
// devices that share it (the first groupNames unless all), and the step
// that decided it.
func printGrouped(w io.Writer, items []resultObject, all bool) {
	type group struct {
		key     string
		phase   ota.DevicePhase
		summary string
		nodes   []string
	}
	groups := map[string]*group{}
	var order []string
	for _, it := range items {
		sum := outcome(&it.Status)
		key := string(it.Status.Phase) + "\x00" + sum
		g, ok := groups[key]
		if !ok {
			g = &group{key: key, phase: it.Status.Phase, summary: sum}
			groups[key] = g
			order = append(order, key)
		}
		g.nodes = append(g.nodes, it.Spec.Node)
	}
	sort.Slice(order, func(i, j int) bool { return len(groups[order[i]].nodes) > len(groups[order[j]].nodes) })
	for _, k := range order {
		g := groups[k]
		sort.Strings(g.nodes)
		fmt.Fprintf(w, "%-11s %4d  %s\n", g.phase, len(g.nodes), g.summary)
		names := strings.Join(g.nodes, ", ")
		if more := len(g.nodes) - groupNames; more > 0 && !all {
			names = strings.Join(g.nodes[:groupNames], ", ") + fmt.Sprintf(" and %d more (--all names them)", more)
		}
		fmt.Fprintf(w, "                  %s\n", names)
	}
}

// countSteps is "1 step" or "n steps".
func countSteps(n int) string {
	if n == 1 {
		return "1 step"
	}
	return fmt.Sprintf("%d steps", n)
}

// failureCause is a failed step's cause in a few words: its exit code,
// else its reason (the error is in the step's result and its logs).
func failureCause(r *ota.StepResult) string {
	switch {
	case r.ExitCode != nil && (r.Reason == "" || r.Reason == "ExitCode"):
		return fmt.Sprintf("exit %d", *r.ExitCode)
	case r.Reason != "":
		return r.Reason
	}
	return "failed"
}

// outcome summarizes a device's result by its last step that ran.
func outcome(st *ota.DeviceResultStatus) string {
	if st.Phase == ota.DeviceQueued || st.Phase == ota.DeviceRunning || st.Phase == "" {
		return ""
	}
	if st.Phase == ota.DeviceSucceeded {
		ok := 0
		var tolerated []string
		for _, r := range st.Steps {
			if r.Phase == ota.StepSucceeded {
				ok++
			} else if r.Phase == ota.StepFailed {
				tolerated = append(tolerated, r.Name+" ("+failureCause(&r)+")")
			}
		}
		if len(tolerated) > 0 {
			return fmt.Sprintf("%s succeeded, %d failed with continueOnError: %s", countSteps(ok), len(tolerated), strings.Join(tolerated, ", "))
		}
		if ok == 1 {
			return "its step succeeded"
		}
		return fmt.Sprintf("all %d steps succeeded", ok)
	}
	var last *ota.StepResult
	for i := range st.Steps {
		if st.Steps[i].Phase != "" && st.Steps[i].Phase != "Skipped" {
			last = &st.Steps[i]
		}
	}
	if last == nil {
		return strings.TrimSpace(st.Reason + ": " + st.Message)
	}
	s := "step " + last.Name
	if last.ExitCode != nil {
		s += fmt.Sprintf(": exit %d", *last.ExitCode)
	}
	if last.Reason != "" && last.Reason != "ExitCode" {
		s += ": " + last.Reason
	}
	if last.Error != "" {
		s += ": " + last.Error
	}
	out := strings.TrimSpace(last.Stderr.Head)
	if out == "" {
		out = strings.TrimSpace(last.Stdout.Head)
	}
	if out != "" {
		if len(out) > 120 {
			out = out[:120] + "…"
		}
		s += ": " + strings.ReplaceAll(out, "\n", " ⏎ ")
	}
	return s
}

func newTaskLogsCommand(g *globals) *cobra.Command {
	var node, step string
	cmd := &cobra.Command{
		Use:   "logs NAME --node NODE [--step STEP]",
		Short: "Print the full output of a device's steps, kept on its node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if node == "" {
				return fmt.Errorf("--node is required: the device whose output to print (see `outpost task results %s`)", args[0])
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			defer cancel()
			c, r, err := connect(ctx, g, "tasks")
			if err != nil {
				return err
			}
			q := url.Values{"node": {node}}
			if step != "" {
				q.Set("step", step)
			}
			body, err := c.do(ctx, http.MethodGet, r.path("", args[0])+"/logs?"+q.Encode(), nil, "", "text/plain, application/json")
			if err != nil {
				return err
			}
			if len(body) > 0 && body[len(body)-1] != '\n' {
				body = append(body, '\n')
			}
			_, err = cmd.OutOrStdout().Write(body)
			return err
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the device (node name)")
	cmd.Flags().StringVar(&step, "step", "", "one step only")
	return cmd
}
