package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/agent"
	"github.com/outpost-mesh/outpost/transport"
)

const (
	// maxLogBytes bounds the output one logs call returns, per stream; the
	// tail is kept.
	maxLogBytes = 4 << 20
	// logWait bounds how long a logs call waits for a remote site.
	logWait = 20 * time.Second
)

// logRequest asks a node for a device run's full output.
type logRequest struct {
	ID      string `json:"id"`
	UID     string `json:"uid"`
	Attempt int    `json:"attempt"`
	Node    string `json:"node"`
	Step    string `json:"step,omitempty"`
}

// logReply carries the output back.
type logReply struct {
	ID    string `json:"id"`
	Text  string `json:"text,omitempty"`
	Error string `json:"error,omitempty"`
}

// logBroker pairs the hub's log requests to sites with the replies that
// come back on their links.
type logBroker struct {
	mu      sync.Mutex
	pending map[string][]logRequest  // site → requests not yet sent
	waiters map[string]chan logReply // request ID → waiter
}

func newLogBroker() *logBroker {
	return &logBroker{pending: map[string][]logRequest{}, waiters: map[string]chan logReply{}}
}

// ask queues req for site and waits for its reply.
func (b *logBroker) ask(ctx context.Context, site string, req logRequest) (logReply, error) {
	ch := make(chan logReply, 1)
	b.mu.Lock()
	b.pending[site] = append(b.pending[site], req)
	b.waiters[req.ID] = ch
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.waiters, req.ID)
		b.pending[site] = slices.DeleteFunc(b.pending[site], func(r logRequest) bool { return r.ID == req.ID })
		b.mu.Unlock()
	}()
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return logReply{}, fmt.Errorf("site %s did not send the output within %s; is it connected? (`outpost get sites`)", site, logWait)
	}
}

// take returns the requests to send to site.
func (b *logBroker) take(site string) []logRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.pending[site]
	delete(b.pending, site)
	return out
}

// deliver hands replies to their waiters; late replies are dropped.
func (b *logBroker) deliver(replies []logReply) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range replies {
		if ch, ok := b.waiters[r.ID]; ok {
			ch <- r // buffered, one reply per request
		}
	}
}

// serveTaskLogs answers GET .../tasks/NAME/logs?node=N[&step=S]: the full
// output of a device's steps, kept on its node.
func (n *Node) serveTaskLogs(w http.ResponseWriter, r *http.Request, name string) {
	ctx, cancel := context.WithTimeout(r.Context(), logWait)
	defer cancel()
	node := r.URL.Query().Get("node")
	if node == "" {
		writeError(w, apierrors.NewBadRequest("?node= is required: the device whose output to show"), n.log)
		return
	}
	store := n.group.Store()
	task, err := store.Get(ctx, &ota.TaskKind, "", name, consensus.ReadOptions{Stale: true})
	if err != nil {
		writeError(w, err, n.log)
		return
	}
	var tspec ota.TaskSpec
	_ = task.DecodeSpec(&tspec)
	if step := r.URL.Query().Get("step"); step != "" && !slices.ContainsFunc(tspec.Steps, func(s ota.Step) bool { return s.Name == step }) {
		names := make([]string, len(tspec.Steps))
		for i, s := range tspec.Steps {
			names[i] = s.Name
		}
		writeError(w, apierrors.NewBadRequest(fmt.Sprintf("task %s has no step %q; its steps: %s", name, step, strings.Join(names, ", "))), n.log)
		return
	}
	res, err := store.Get(ctx, &ota.DeviceResultKind, "", ota.ResultName(name, node), consensus.ReadOptions{Stale: true})
	if apierrors.IsNotFound(err) {
		writeError(w, &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusNotFound,
			Reason: metav1.StatusReasonNotFound, Message: fmt.Sprintf("node %s is not a device of task %s; `outpost task results %s --all` names them", node, name, name)}}, n.log)
		return
	}
	if err != nil {
		writeError(w, err, n.log)
		return
	}
	var spec ota.DeviceResultSpec
	var st ota.DeviceResultStatus
	_ = res.DecodeSpec(&spec)
	_ = res.DecodeStatus(&st)
	req := logRequest{ID: randomSuffix(16), UID: string(task.UID), Attempt: max(st.Attempt, 1), Node: node, Step: r.URL.Query().Get("step")}
	var reply logReply
	if spec.Site == n.id.Site {
		reply = n.fetchLogs(ctx, req)
	} else if reply, err = n.logs.ask(ctx, spec.Site, req); err != nil {
		writeError(w, apierrors.NewTimeoutError(err.Error(), 1), n.log)
		return
	}
	if reply.Error != "" {
		writeError(w, &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusNotFound,
			Reason: metav1.StatusReasonNotFound, Message: reply.Error}}, n.log)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, reply.Text)
}

// fetchLogs gets the output from the node that ran the device: this node,
// or a member of this node's site over QUIC.
func (n *Node) fetchLogs(ctx context.Context, req logRequest) logReply {
	if req.Node == n.id.Name {
		text, err := n.agent.logs(req)
		if err != nil {
			return logReply{ID: req.ID, Error: err.Error()}
		}
		return logReply{ID: req.ID, Text: text}
	}
	ctx, cancel := context.WithTimeout(ctx, logWait)
	defer cancel()
	var reply logReply
	if err := n.callMember(ctx, req.Node, methodOTALogs, req, &reply); err != nil {
		return logReply{ID: req.ID, Error: err.Error()}
	}
	return reply
}

// serveLogs answers a log request from a member of this node's site.
func (a *agentService) serveLogs(_ context.Context, s *transport.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(logWait))
	var req logRequest
	if err := readMessage(s, &req, 64<<10); err != nil {
		return
	}
	reply := logReply{ID: req.ID}
	if p := s.Peer(); p.Site != a.id.Site {
		reply.Error = "only a member of this site may read its task output"
	} else if text, err := a.logs(req); err != nil {
		reply.Error = err.Error()
	} else {
		reply.Text = text
	}
	_ = writeMessage(s, reply)
}

// answerLogRequests fetches the output the hub asked this site for.
func (n *Node) answerLogRequests(ctx context.Context, reqs []logRequest) []logReply {
	out := make([]logReply, 0, len(reqs))
	for _, r := range reqs {
		out = append(out, n.fetchLogs(ctx, r))
	}
	return out
}

// logs reads a run's kept output, the tail of each stream up to
// maxLogBytes; one step, or all steps in order.
func (a *agentService) logs(req logRequest) (string, error) {
	key := runKey(req.UID, req.Attempt)
	dir := filepath.Join(a.dir, key)
	if _, err := os.Stat(dir); err != nil && !a.hasTrace(key) {
		// (A run whose steps printed nothing has no directory.)
		return "", fmt.Errorf("node %s has no output of this task (attempt %d)", a.id.Name, req.Attempt)
	}
	steps := []string{agent.LogName(req.Step)}
	if req.Step == "" {
		steps = a.loggedSteps(key, dir)
	}
	var b strings.Builder
	for _, step := range steps {
		for _, stream := range []string{"stdout", "stderr"} {
			text, err := tail(filepath.Join(dir, step+"."+stream), maxLogBytes)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return "", err
			}
			if text == "" {
				continue
			}
			fmt.Fprintf(&b, "==> step %s (%s) <==\n%s", step, stream, text)
			if !strings.HasSuffix(text, "\n") {
				b.WriteByte('\n')
			}
		}
	}
	if b.Len() == 0 && req.Step != "" {
		return "", fmt.Errorf("step %s of this task left no output on node %s", req.Step, a.id.Name)
	}
	return b.String(), nil
}

// loggedSteps lists the steps of run key that left output in dir (a
// stdout or a stderr file, each written only when the step printed to
// it), in the order they ran: that of the run's result once it has one,
// else that of their files' modification times (a run's steps run one
// after another).
func (a *agentService) loggedSteps(key, dir string) []string {
	entries, _ := os.ReadDir(dir)
	written := map[string]time.Time{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".stdout")
		if !ok {
			name, ok = strings.CutSuffix(e.Name(), ".stderr")
		}
		info, err := e.Info()
		if !ok || err != nil {
			continue
		}
		if t, seen := written[name]; !seen || info.ModTime().Before(t) {
			written[name] = info.ModTime()
		}
	}
	var steps []string
	if st, ok, _ := a.store.Result(key); ok {
		for _, s := range st.Steps {
			name := agent.LogName(s.Name)
			if _, ok := written[name]; ok {
				steps = append(steps, name)
				delete(written, name)
			}
		}
	}
	rest := slices.Collect(maps.Keys(written))
	slices.SortFunc(rest, func(x, y string) int {
		if c := written[x].Compare(written[y]); c != 0 {
			return c
		}
		return strings.Compare(x, y)
	})
	return append(steps, rest...)
}

// tail reads the last max bytes of a file.
func tail(path string, limit int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	prefix := ""
	if st.Size() > limit {
		if _, err := f.Seek(st.Size()-limit, io.SeekStart); err != nil {
			return "", err
		}
		prefix = fmt.Sprintf("[... %d earlier bytes not shown]\n", st.Size()-limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit))
	return prefix + string(b), err
}
