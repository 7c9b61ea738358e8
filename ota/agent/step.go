package agent

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/ota"
)

// Env is who runs a step: exec and playbook steps see it as OUTPOST_NODE,
// OUTPOST_SITE and OUTPOST_TASK.
type Env struct {
	Node string
	Site string
	Task string
}

// BlobOpener opens the blob with the given digest ("sha256:<hex>") of a
// repository of the hub's registry for a contentFrom, returning its size
// (-1 when unknown). The agent verifies the digest itself. A nil
// BlobOpener means the node has no blob store: steps with contentFrom fail.
type BlobOpener func(ctx context.Context, repository, digest string) (io.ReadCloser, int64, error)

// RunStep runs one step on this node and returns its result; it never
// panics on bad input and reports every failure in the result. The step
// is bounded by its timeout and by ctx: when either ends, an exec or
// playbook step's whole process group is killed, with reason Timeout (the
// step's timeout), DeviceTimeout (a ctx from RunDevice) or Canceled. Exec and playbook output
// is also written in full (up to LogLimit a stream) to
// logDir/<step>.stdout and .stderr; logDir "" keeps no log files.
//
// RunStep does not record anything: RunDevice does, around it.
func RunStep(ctx context.Context, step ota.Step, env Env, pol Policy, blobs BlobOpener, logDir string) ota.StepResult {
	start := time.Now()
	ctx, cancel := stepTimeout(ctx, &step)
	defer cancel()
	var r ota.StepResult
	switch {
	case !pol.Allows(step.Type):
		r = failed(ota.ReasonPolicyDenied, "%s steps are not allowed on this node (--ota-allow %s)", step.Type, allowList(pol))
	case ctx.Err() != nil:
		reason, _ := killReason(ctx)
		r = failed(reason, "not started: %v", context.Cause(ctx))
	default:
		switch step.Type {
		case ota.StepExec:
			r = runExec(ctx, &step, env, logDir)
		case ota.StepRead:
			r = runRead(&step, pol)
		case ota.StepWrite:
			r = runWrite(ctx, &step, pol, blobs)
		case ota.StepPlaybook:
			r = runPlaybook(ctx, &step, env, blobs, logDir)
		default:
			r = failed(ota.ReasonInvalid, "unknown step type %q", step.Type)
		}
	}
	r.Name, r.Type = step.Name, step.Type
	r.StartTime = &metav1.Time{Time: start}
	r.DurationMillis = time.Since(start).Milliseconds()
	return r
}

// failed returns a Failed result with a reason and a message.
func failed(reason, format string, args ...any) ota.StepResult {
	return ota.StepResult{Phase: ota.StepFailed, Reason: reason, Error: fmt.Sprintf(format, args...)}
}

func allowList(pol Policy) string {
	if len(pol.Allow) == 0 {
		return "exec,read,write,playbook"
	}
	return strings.Join(pol.Allow, ",")
}

// stepTimeout derives the step's context: bounded by step.timeout when set.
func stepTimeout(ctx context.Context, step *ota.Step) (context.Context, context.CancelFunc) {
	if step.Timeout.Duration > 0 {
		return context.WithTimeoutCause(ctx, step.Timeout.Duration, errStepTimeout)
	}
	return context.WithCancel(ctx)
}
