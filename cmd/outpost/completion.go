package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newCompletionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script (resource kinds and names complete from the hub)",
		Long: `Print the completion script of a shell. Kinds and resource names
complete from the hub's API with your credential file (--config), so
"outpost get tasks <TAB>" lists the hub's tasks.`,
		Example: `  source <(outpost completion bash)                      # bash, this shell
  outpost completion bash > /etc/bash_completion.d/outpost  # bash, every shell
  outpost completion zsh > "${fpath[1]}/_outpost"            # zsh
  outpost completion fish > ~/.config/fish/completions/outpost.fish`,
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"bash", "zsh", "fish"},
		RunE: func(cmd *cobra.Command, args []string) error {
			root, out := cmd.Root(), cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			default:
				return root.GenFishCompletion(out, true)
			}
		},
	}
}

// completionTimeout bounds the API calls of one completion: a shell waits
// for them.
const completionTimeout = 5 * time.Second

// addCompletions makes the verbs that take a KIND and a NAME complete them
// from the hub, the verbs that take the name of an existing task, cluster
// or access token complete it, and so do the --node, --site and --sites
// flags; -o completes the forms each verb takes.
func addCompletions(root *cobra.Command, g *globals) {
	for _, c := range root.Commands() {
		switch c.Name() {
		case "get", "describe", "delete":
			c.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
				switch len(args) {
				case 0:
					return completeKinds(cmd.Context(), g, toComplete)
				case 1:
					return completeNames(cmd.Context(), g, args[0], toComplete)
				}
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
		case "task":
			for _, sub := range c.Commands() {
				sub.ValidArgsFunction = firstArgNames(g, "tasks")
			}
		case "cluster":
			for _, sub := range c.Commands() {
				if sub.Name() != "create" { // a new name
					sub.ValidArgsFunction = firstArgNames(g, "clusters")
				}
			}
		case "access":
			for _, sub := range c.Commands() {
				if sub.Name() == "revoke" {
					sub.ValidArgsFunction = firstArgNames(g, "accesstokens")
				}
			}
		}
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if f := c.Flags().Lookup("output"); f != nil && len(f.Annotations[outputForms]) > 0 {
			_ = c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(f.Annotations[outputForms], cobra.ShellCompDirectiveNoFileComp))
		}
		for flag, kind := range map[string]string{"node": "nodes", "site": "sites", "sites": "sites"} {
			if c.Flags().Lookup(flag) != nil && c.Name() != "node" {
				_ = c.RegisterFlagCompletionFunc(flag, func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
					// A list flag (--sites a,b) completes its last item.
					done, last := "", toComplete
					if i := strings.LastIndex(toComplete, ","); i >= 0 {
						done, last = toComplete[:i+1], toComplete[i+1:]
					}
					names, dir := completeNames(cmd.Context(), g, kind, last)
					for i := range names {
						names[i] = done + names[i]
					}
					return names, dir
				})
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// firstArgNames completes a verb's first argument with the names of
// kind's objects.
func firstArgNames(g *globals, kind string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return completeNames(cmd.Context(), g, kind, toComplete)
	}
}

// completeKinds lists the served resource types by plural name.
func completeKinds(ctx context.Context, g *globals, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	c, err := newClient(g)
	if err == nil {
		err = c.discover(ctx)
	}
	if err != nil {
		cobra.CompDebugln(err.Error(), true)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, r := range c.resources {
		if strings.HasPrefix(r.Plural, prefix) {
			out = append(out, cobra.CompletionWithDesc(r.Plural, r.Kind+" ("+r.Group+")"))
		}
	}
	sort.Strings(out)
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeNames lists the names of kind's objects in the --namespace.
func completeNames(ctx context.Context, g *globals, kind, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	c, r, err := connect(ctx, g, kind)
	if err != nil {
		cobra.CompDebugln(err.Error(), true)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	// A table without objects is the smallest answer that has the names.
	body, err := c.do(ctx, http.MethodGet, r.path(g.namespace, "")+"?includeObject=None", nil, "", tableAccept)
	if err != nil {
		cobra.CompDebugln(err.Error(), true)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var t struct {
		Rows []struct {
			Cells []any `json:"cells"`
		} `json:"rows"`
	}
	if err := json.Unmarshal(body, &t); err != nil {
		cobra.CompDebugln(fmt.Sprintf("decode %s: %v", r.Plural, err), true)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, row := range t.Rows {
		if len(row.Cells) == 0 {
			continue
		}
		if name, ok := row.Cells[0].(string); ok && strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
