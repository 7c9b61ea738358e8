package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/ota"
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
				var spec map[string]any
				// The hub writes a running task's status as it goes: a
				// conflict is read again and decided again, a few times.
				for attempt := 1; ; attempt++ {
					raw, err := c.do(ctx, http.MethodGet, r.path("", args[0]), nil, "", "")
					if err != nil {
						return err
					}
					var t taskObject
					if err := json.Unmarshal(raw, &t); err != nil {
						return err
					}
					if spec, err = body(&t); err != nil {
						return err
					}
					if spec == nil { // nothing to change
						fmt.Fprintf(cmd.OutOrStdout(), "task/%s already %s\n", args[0], done)
						return nil
					}
					// The resourceVersion makes a concurrent change a
					// conflict instead of a lost update.
					p, _ := json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": t.Metadata.ResourceVersion}, "spec": spec})
					_, err = c.do(ctx, http.MethodPatch, r.path("", args[0]), p, "application/merge-patch+json", "")
					if err == nil {
						break
					}
					if ae := (*apiError)(nil); !errors.As(err, &ae) || ae.status.Reason != metav1.StatusReasonConflict || attempt == 5 {
						return err
					}
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
			func(t *taskObject) (map[string]any, error) {
				if err := notEnded(t, "cancel"); err != nil || t.Spec.Canceled {
					return nil, err
				}
				return map[string]any{"canceled": true}, nil
			}),
		patch("halt", "Stop starting new devices; running ones finish", "halted",
			func(t *taskObject) (map[string]any, error) {
				if err := notEnded(t, "halt"); err != nil || t.Spec.Halted {
					return nil, err
				}
				return map[string]any{"halted": true}, nil
			}),
		patch("resume", "Start devices again after a halt", "resumed",
			func(t *taskObject) (map[string]any, error) {
				if err := notEnded(t, "resume"); err != nil {
					return nil, err
				}
				if c := meta.FindStatusCondition(t.Status.Conditions, "Halted"); c != nil && c.Status == metav1.ConditionTrue && c.Reason == "FailurePolicy" {
					return nil, fmt.Errorf("task %s was halted by its failure policy (%s): `outpost task retry %s --failed` runs the failed and unreachable devices again and then the rest, or `outpost task cancel %s` ends it",
						t.Metadata.Name, c.Message, t.Metadata.Name, t.Metadata.Name)
				}
				if !t.Spec.Halted {
					return nil, fmt.Errorf("task %s is not halted (it is %s)", t.Metadata.Name, phaseOf(t))
				}
				return map[string]any{"halted": false}, nil
			}),
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

// notEnded refuses verb on a task that has ended: there is nothing left
// for it to steer (and a canceled mark would keep it from a retry).
func notEnded(t *taskObject, verb string) error {
	if terminal(t.Status.Phase) {
		return fmt.Errorf("task %s has ended (%s): there is nothing to %s", t.Metadata.Name, t.Status.Phase, verb)
	}
	return nil
}

// phaseOf is the task's phase, Pending before the hub has written one.
func phaseOf(t *taskObject) ota.TaskPhase {
	if t.Status.Phase == "" {
		return ota.TaskPending
	}
	return t.Status.Phase
}
