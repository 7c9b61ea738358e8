package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"reflect"
	"strings"

	"github.com/spf13/cobra"

	"github.com/outpost-mesh/outpost/ota"
)

func newApplyCommand(g *globals) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|-",
		Short: "Create or update resources from YAML or JSON manifests",
		Long: `Create each object of the manifests, or update it when it exists: its
labels, annotations, finalizers (when it names any) and spec become those
of the manifest. A task's halted, canceled and retry, which the task
commands set, stay unless the manifest gives them; its other fields cannot
change once it is created. Every document is parsed before anything is
applied, so a malformed file changes nothing.`,
		Example: `  outpost apply -f site.yaml
  cat tasks.yaml | outpost apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("-f is required: a manifest file, or - for standard input")
			}
			var docs []*document
			for _, f := range files {
				d, err := readManifests(f, cmd.InOrStdin())
				if err != nil {
					return err
				}
				docs = append(docs, d...)
			}
			c, err := newClient(g)
			if err != nil {
				return err
			}
			for _, d := range docs {
				if err := applyDocument(cmd.Context(), c, g, d, cmd.OutOrStdout()); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, or - for standard input (repeatable)")
	return cmd
}

// applyDocument creates the object, or replaces its labels, annotations,
// finalizers and spec when it exists, retrying a lost race.
func applyDocument(ctx context.Context, c *client, g *globals, d *document, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	r, err := c.resolveKind(ctx, d.head.APIVersion, d.head.Kind)
	if err != nil {
		return fmt.Errorf("%s: %w", d.source, err)
	}
	ns := d.head.Metadata.Namespace
	if r.Namespaced && ns == "" {
		ns = g.namespace
	}
	name := d.head.Metadata.Name
	label := strings.ToLower(r.Kind) + "/" + name
	_, err = c.do(ctx, http.MethodPost, r.path(ns, ""), d.json, "application/json", "")
	if err == nil {
		fmt.Fprintf(out, "%s created\n", label)
		return nil
	}
	if ae, ok := err.(*apiError); !ok || ae.status.Reason != "AlreadyExists" {
		return fmt.Errorf("%s: %s: %w", d.source, label, err)
	}
	var want map[string]any
	if err := json.Unmarshal(d.json, &want); err != nil {
		return err
	}
	for attempt := 0; attempt < 5; attempt++ {
		body, err := c.do(ctx, http.MethodGet, r.path(ns, name), nil, "", "")
		if err != nil {
			return fmt.Errorf("%s: %s: %w", d.source, label, err)
		}
		var cur map[string]any
		if err := json.Unmarshal(body, &cur); err != nil {
			return err
		}
		next, changed := mergeManifest(cur, want, steeringFields(r))
		if !changed {
			fmt.Fprintf(out, "%s unchanged\n", label)
			return nil
		}
		nb, err := json.Marshal(next)
		if err != nil {
			return err
		}
		_, err = c.do(ctx, http.MethodPut, r.path(ns, name), nb, "application/json", "")
		if ae, ok := err.(*apiError); ok && ae.status.Reason == "Conflict" {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %s: %w", d.source, label, err)
		}
		fmt.Fprintf(out, "%s configured\n", label)
		return nil
	}
	return fmt.Errorf("%s: %s: kept losing races with other writers; try again", d.source, label)
}

// steeringFields are the spec fields of r that commands other than apply
// set (`task halt`, `resume`, `cancel`, `retry`): applying a manifest that
// leaves them out keeps them, so applying a task's file again neither
// resumes a halted task nor undoes a cancel or a retry.
func steeringFields(r *resource) []string {
	if r.Group == ota.Group && r.Kind == ota.TaskKind.Kind {
		return []string{"halted", "canceled", "retry"}
	}
	return nil
}

// mergeManifest returns cur with the manifest's labels, annotations,
// finalizers (when it names any) and spec, and whether anything changed;
// the spec fields in keep that the manifest leaves out keep their current
// values.
func mergeManifest(cur, want map[string]any, keep []string) (map[string]any, bool) {
	next := map[string]any{}
	for k, v := range cur {
		next[k] = v
	}
	delete(next, "status")
	if cspec, ok := cur["spec"].(map[string]any); ok && len(keep) > 0 {
		if wspec, ok := want["spec"].(map[string]any); ok {
			merged := maps.Clone(wspec)
			for _, k := range keep {
				if _, given := wspec[k]; !given && cspec[k] != nil {
					merged[k] = cspec[k]
				}
			}
			want = maps.Clone(want)
			want["spec"] = merged
		}
	}
	meta, _ := cur["metadata"].(map[string]any)
	wmeta, _ := want["metadata"].(map[string]any)
	nmeta := map[string]any{}
	for k, v := range meta {
		nmeta[k] = v
	}
	changed := false
	for _, k := range []string{"labels", "annotations", "finalizers"} {
		if _, given := wmeta[k]; !given && k == "finalizers" {
			// The controllers' (a started task's, a cluster's): a
			// manifest that names none leaves them.
			continue
		}
		if !reflect.DeepEqual(meta[k], wmeta[k]) {
			changed = true
		}
		if v, ok := wmeta[k]; ok {
			nmeta[k] = v
		} else {
			delete(nmeta, k)
		}
	}
	next["metadata"] = nmeta
	for k, v := range want {
		if k == "metadata" || k == "status" || k == "apiVersion" || k == "kind" {
			continue
		}
		if !reflect.DeepEqual(cur[k], v) {
			changed = true
		}
		next[k] = v
	}
	for k := range cur {
		if _, ok := want[k]; !ok && k != "metadata" && k != "status" && k != "apiVersion" && k != "kind" {
			delete(next, k)
			changed = true
		}
	}
	return next, changed
}
