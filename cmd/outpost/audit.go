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
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != "json" && output != "wide" {
				return fmt.Errorf("-o %q: use json or wide", output)
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
					Spec node.AuditEventSpec `json:"spec"`
				} `json:"items"`
			}
			if err := json.Unmarshal(raw, &list); err != nil {
				return err
			}
			var events []node.AuditEventSpec
			cutoff := time.Now().Add(-since)
			for _, it := range list.Items {
				if (since == 0 || !it.Spec.Time.Time.Before(cutoff)) && (user == "" || it.Spec.User == user) {
					events = append(events, it.Spec)
				}
			}
			sort.SliceStable(events, func(i, j int) bool { return events[i].Time.Before(&events[j].Time) })
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if events == nil {
					events = []node.AuditEventSpec{}
				}
				return enc.Encode(events)
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
	cmd.Flags().StringVarP(&output, "output", "o", "", "json, or wide for whole messages")
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
