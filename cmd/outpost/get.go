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
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

type getOptions struct {
	output     string
	selector   string
	watch      bool
	all        bool
	showLabels bool
}

func newGetCommand(g *globals) *cobra.Command {
	o := &getOptions{}
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "List resources, or show one",
		Example: `  outpost get nodes
  outpost get no hub-1 -o yaml
  outpost get sites -o wide
  outpost get nodes -l outpost.dev/site=hub --watch`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			return runGet(cmd.Context(), g, o, args[0], name, cmd.OutOrStdout())
		},
	}
	addOutputFlag(cmd, &o.output, "table", "wide")
	cmd.Flags().StringVarP(&o.selector, "selector", "l", "", "label selector, e.g. site=a,role!=hub")
	cmd.Flags().BoolVarP(&o.watch, "watch", "w", false, "after listing, print changes as they happen")
	cmd.Flags().BoolVarP(&o.all, "all-namespaces", "A", false, "list namespaced resources of every namespace")
	cmd.Flags().BoolVar(&o.showLabels, "show-labels", false, "add a LABELS column to tables")
	return cmd
}

func checkOutput(output string) error { return checkOutputOf(output, "table", "wide") }

func runGet(ctx context.Context, g *globals, o *getOptions, kind, name string, out io.Writer) error {
	if err := checkOutput(o.output); err != nil {
		return err
	}
	c, r, err := connect(ctx, g, kind)
	if err != nil {
		return err
	}
	ns := g.namespace
	if o.all {
		ns = ""
	}
	q := url.Values{}
	if o.selector != "" {
		q.Set("labelSelector", o.selector)
	}
	tables := o.output == "table" || o.output == "wide"
	accept := ""
	if tables {
		accept = tableAccept
	}
	if o.watch {
		if name != "" {
			q.Set("fieldSelector", "metadata.name="+name)
		}
		return watchLoop(ctx, c, r, r.path(ns, ""), q, o, out)
	}
	path := r.path(ns, name)
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	body, err := c.do(rctx, http.MethodGet, path, nil, "", accept)
	if err != nil {
		return err
	}
	if tables {
		var t metav1.Table
		if err := json.Unmarshal(body, &t); err != nil {
			return fmt.Errorf("decode table: %w", err)
		}
		if len(t.Rows) == 0 {
			if r.Namespaced && ns != "" {
				fmt.Fprintf(os.Stderr, "No resources found in %s namespace.\n", ns)
			} else {
				fmt.Fprintln(os.Stderr, "No resources found")
			}
			return nil
		}
		p := newTablePrinter(out, o.output == "wide", r.Namespaced && ns == "")
		p.labels, p.color = o.showLabels, colorOutput(out)
		p.print(&t)
		return p.flush()
	}
	if o.output == "name" {
		return printNames(out, r, body)
	}
	return printObject(out, body, o.output)
}

// printObject prints a JSON document as JSON or YAML.
func printObject(out io.Writer, body []byte, output string) error {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return err
	}
	if output == "yaml" {
		y, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = out.Write(y)
		return err
	}
	b, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", b)
	return err
}

// watchLoop lists and then streams changes until ctx ends, reconnecting from
// the last resourceVersion when the server closes the stream.
func watchLoop(ctx context.Context, c *client, r *resource, path string, q url.Values, o *getOptions, out io.Writer) error {
	tables := o.output == "table" || o.output == "wide"
	var p *tablePrinter
	if tables {
		p = newTablePrinter(out, o.output == "wide", false)
		p.labels, p.color = o.showLabels, colorOutput(out)
	}
	q.Set("watch", "true")
	for {
		accept := "application/json"
		if tables {
			accept = tableAccept
		}
		resp, err := c.send(ctx, http.MethodGet, path+"?"+q.Encode(), nil, "", accept)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			return statusError(resp.StatusCode, b)
		}
		rv, err := streamEvents(resp.Body, p, r, o.output, out)
		resp.Body.Close()
		if ctx.Err() != nil {
			return nil
		}
		var gone *apiError
		if errors.As(err, &gone) && gone.status.Code == http.StatusGone {
			q.Del("resourceVersion") // relist
		} else if err != nil {
			return err
		} else if rv != "" {
			q.Set("resourceVersion", rv)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

type wireEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// streamEvents prints events until the stream ends, returning the last
// resourceVersion seen.
func streamEvents(body io.Reader, p *tablePrinter, r *resource, output string, out io.Writer) (string, error) {
	dec := json.NewDecoder(body)
	last := ""
	for {
		var ev wireEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return last, nil
			}
			return last, nil
		}
		if ev.Type == "ERROR" {
			return last, statusError(0, ev.Object)
		}
		var meta struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		_ = json.Unmarshal(ev.Object, &meta)
		if p != nil {
			var t metav1.Table
			if err := json.Unmarshal(ev.Object, &t); err != nil {
				return last, err
			}
			last = t.ResourceVersion
			p.print(&t)
			if err := p.flush(); err != nil {
				return last, err
			}
			continue
		}
		last = meta.Metadata.ResourceVersion
		if output == "name" {
			if err := printNames(out, r, ev.Object); err != nil {
				return last, err
			}
			continue
		}
		if output == "yaml" {
			fmt.Fprintln(out, "---")
		}
		if err := printObject(out, ev.Object, output); err != nil {
			return last, err
		}
	}
}
