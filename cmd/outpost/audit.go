package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-mesh/outpost/node"
)

func newAuditCommand(g *globals) *cobra.Command {
	var since time.Duration
	var user, output string
	cmd := &cobra.Command{
		Use:   "audit [--since 1h] [--user NAME] [-o json]",
		Short: "Show the audit log: who changed what, from where, and the result",
		Long: `Show the audit log, oldest first: every write and every refused call to the
hub's API, every task dispatch, and every task a node refused for its
signature, with who, when, from where and the result. -o json and yaml print
the events (a list of their specs), -o name their object names, -o wide
whole messages.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutputOf(output, "table", "wide"); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			defer cancel()
			c, r, err := connect(ctx, g, "auditevents")
			if err != nil {
				return err
			}
			path := r.path("", "")
			if user != "" {
				path += "?labelSelector=" + url.QueryEscape("outpost.dev/user="+auditLabel(user))
			}
			raw, err := c.do(ctx, http.MethodGet, path, nil, "", "")
			if err != nil {
				return err
			}
			var list struct {
				Items []struct {
					Metadata struct {
						Name string `json:"name"`
					} `json:"metadata"`
					Spec node.AuditEventSpec `json:"spec"`
				} `json:"items"`
			}
			if err := json.Unmarshal(raw, &list); err != nil {
				return err
			}
			events := []node.AuditEventSpec{}
			var names []string
			cutoff := time.Now().Add(-since)
			sort.SliceStable(list.Items, func(i, j int) bool { return list.Items[i].Spec.Time.Before(&list.Items[j].Spec.Time) })
			for _, it := range list.Items {
				if (since == 0 || !it.Spec.Time.Time.Before(cutoff)) && (user == "" || it.Spec.User == user) {
					events = append(events, it.Spec)
					names = append(names, it.Metadata.Name)
				}
			}
			switch output {
			case "name":
				for _, n := range names {
					fmt.Fprintln(cmd.OutOrStdout(), "auditevent."+r.Group+"/"+n)
				}
				return nil
			case "json", "yaml":
				b, err := json.Marshal(events)
				if err != nil {
					return err
				}
				return printObject(cmd.OutOrStdout(), b, output)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tUSER\tVERB\tRESOURCE\tNAME\tCODE\tSOURCE\tMESSAGE")
			for _, e := range events {
				res := e.Resource
				if e.Subresource != "" {
					res += "/" + e.Subresource
				}
				name := e.Name
				if e.Namespace != "" {
					name = e.Namespace + "/" + name
				}
				msg := e.Message
				if output != "wide" && len(msg) > 60 {
					msg = msg[:57] + "..."
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), e.User, e.Verb, res, name, e.Code, e.Source, msg)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().DurationVar(&since, "since", 0, "only events of this last span, e.g. 1h (0: all kept)")
	cmd.Flags().StringVar(&user, "user", "", "only events of this user (token name, hub/<member> or site/<site>)")
	addOutputFlag(cmd, &output, "table", "wide")
	return cmd
}

// auditLabel is a user name as the hub labels events with it.
func auditLabel(u string) string {
	v := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '.'
	}, u)
	if len(v) > 63 {
		v = v[:63]
	}
	return strings.Trim(v, "._-")
}
