package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

// newTaskSteerCommands are the verbs that change a running task through
// its spec: cancel, halt, resume and retry.
func newTaskSteerCommands(g *globals) []*cobra.Command {
	patch := func(use, short, done string, body func(t *taskObject) (map[string]any, error)) *cobra.Command {
		return &cobra.Command{
			Use: use + " NAME", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
				defer cancel()
				c, r, err := connect(ctx, g, "tasks")
				if err != nil {
					return err
				}
				raw, err := c.do(ctx, http.MethodGet, r.path("", args[0]), nil, "", "")
				if err != nil {
					return err
				}
				var t taskObject
				if err := json.Unmarshal(raw, &t); err != nil {
					return err
				}
				spec, err := body(&t)
				if err != nil {
					return err
				}
				// The resourceVersion makes a concurrent change a conflict
				// instead of a lost update.
				p, _ := json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": t.Metadata.ResourceVersion}, "spec": spec})
				if _, err := c.do(ctx, http.MethodPatch, r.path("", args[0]), p, "application/merge-patch+json", ""); err != nil {
					return err
				}
				if want, ok := spec["retry"].(int); ok {
					// Return once the hub has re-queued the devices, so a
					// `task watch` right after sees the new attempt.
					waitRetried(ctx, c, r.path("", args[0]), want)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "task/%s %s\n", args[0], done)
				return nil
			},
		}
	}
	var failed bool
	retry := patch("retry", "Run the failed, timed-out and unreachable devices again, in the same task", "retried",
		func(t *taskObject) (map[string]any, error) {
			if !failed {
				return nil, errors.New("say what to retry: --failed (the failed, timed-out and unreachable devices)")
			}
			if t.Spec.Canceled {
				return nil, errors.New("a canceled task cannot be retried; apply a new task")
			}
			c := t.Status.Counts
			if c.Failed+c.Unreachable == 0 {
				return nil, fmt.Errorf("task %s has no failed or unreachable device to retry", t.Metadata.Name)
			}
			return map[string]any{"retry": t.Spec.Retry + 1}, nil
		})
	retry.Flags().BoolVar(&failed, "failed", false, "re-run the failed, timed-out and unreachable devices")
	return []*cobra.Command{
		patch("cancel", "Cancel a task: queued devices are canceled, running ones killed", "canceled",
			func(*taskObject) (map[string]any, error) { return map[string]any{"canceled": true}, nil }),
		patch("halt", "Stop starting new devices; running ones finish", "halted",
			func(*taskObject) (map[string]any, error) { return map[string]any{"halted": true}, nil }),
		patch("resume", "Start devices again after a halt", "resumed",
			func(*taskObject) (map[string]any, error) { return map[string]any{"halted": false}, nil }),
		retry,
	}
}

// waitRetried polls until the task's status has acted on spec.retry want,
// or ctx ends.
func waitRetried(ctx context.Context, c *client, path string, want int) {
	for ctx.Err() == nil {
		if raw, err := c.do(ctx, http.MethodGet, path, nil, "", ""); err == nil {
			var t taskObject
			if json.Unmarshal(raw, &t) == nil && t.Status.Retries >= want {
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}
