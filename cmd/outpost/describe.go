package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"
)

func newDescribeCommand(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "describe KIND NAME",
		Short: "Show a resource in detail",
		Example: `  outpost describe node hub-1
  outpost describe task upgrade-openssl -o yaml`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutputOf(output, "text"); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			defer cancel()
			c, r, err := connect(ctx, g, args[0])
			if err != nil {
				return err
			}
			body, err := c.do(ctx, http.MethodGet, r.path(g.namespace, args[1]), nil, "", "")
			if err != nil {
				return err
			}
			switch output {
			case "text":
				return describe(cmd.OutOrStdout(), body)
			case "name":
				return printNames(cmd.OutOrStdout(), r, body)
			}
			return printObject(cmd.OutOrStdout(), body, output)
		},
	}
	addOutputFlag(cmd, &output, "text")
	return cmd
}

// describedObject is what describe reads of any object.
type describedObject struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       json.RawMessage   `json:"spec"`
	Status     json.RawMessage   `json:"status"`
}

func describe(out io.Writer, body []byte) error {
	var o describedObject
	if err := json.Unmarshal(body, &o); err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	m := o.Metadata
	fmt.Fprintf(w, "Name:\t%s\n", m.Name)
	if m.Namespace != "" {
		fmt.Fprintf(w, "Namespace:\t%s\n", m.Namespace)
	}
	fmt.Fprintf(w, "Kind:\t%s\n", o.Kind)
	fmt.Fprintf(w, "API Version:\t%s\n", o.APIVersion)
	fmt.Fprintf(w, "Labels:\t%s\n", pairs(m.Labels))
	fmt.Fprintf(w, "Annotations:\t%s\n", pairs(m.Annotations))
	fmt.Fprintf(w, "UID:\t%s\n", m.UID)
	fmt.Fprintf(w, "Resource Version:\t%s\n", m.ResourceVersion)
	fmt.Fprintf(w, "Generation:\t%d\n", m.Generation)
	fmt.Fprintf(w, "Created:\t%s (%s ago)\n", m.CreationTimestamp.UTC().Format(time.RFC3339), duration.HumanDuration(time.Since(m.CreationTimestamp.Time)))
	if m.DeletionTimestamp != nil {
		fmt.Fprintf(w, "Deleting Since:\t%s\n", m.DeletionTimestamp.UTC().Format(time.RFC3339))
	}
	if len(m.Finalizers) > 0 {
		fmt.Fprintf(w, "Finalizers:\t%s\n", strings.Join(m.Finalizers, ", "))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, part := range []struct {
		title string
		raw   json.RawMessage
	}{{"Spec", o.Spec}, {"Status", o.Status}} {
		if len(part.raw) == 0 || string(part.raw) == "null" || string(part.raw) == "{}" {
			continue
		}
		y, err := yaml.JSONToYAML(part.raw)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s:\n", part.title)
		for _, line := range strings.Split(strings.TrimRight(string(y), "\n"), "\n") {
			fmt.Fprintf(out, "  %s\n", line)
		}
	}
	return nil
}

func pairs(m map[string]string) string {
	if len(m) == 0 {
		return "<none>"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString("\n\t")
		}
		b.WriteString(k + "=" + m[k])
	}
	return b.String()
}
