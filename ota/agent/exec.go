package agent

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/outpost-mesh/outpost/ota"
)

// defaultPath is PATH when the agent has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// runExec runs an exec step: its argv, or its script by /bin/sh -e.
func runExec(ctx context.Context, step *ota.Step, env Env, logDir string) ota.StepResult {
	argv := step.Command
	if len(argv) == 0 {
		if step.Script == "" {
			return failed(ota.ReasonInvalid, "an exec step needs a command or a script")
		}
		// $0 names the step in the shell's own error messages.
		argv = []string{"/bin/sh", "-e", "-c", step.Script, "outpost-" + step.Name}
	} else if step.Script != "" {
		return failed(ota.ReasonInvalid, "command and script are mutually exclusive")
	}
	if argv[0] == "" {
		return failed(ota.ReasonInvalid, "the program of command is empty")
	}

	cred, u, err := credential(step.User)
	if err != nil {
		reason := ota.ReasonStartFailed
		if err == errNotRoot {
			reason = ota.ReasonNotRoot
		}
		return failed(reason, "user %q: %v", step.User, err)
	}
	vars := stepEnv(u, step.Env, env, nil)
	path, err := lookPath(argv[0], vars["PATH"])
	if err != nil {
		return failed(ota.ReasonStartFailed, "%v", err)
	}
	dir := step.WorkingDir
	if dir == "" {
		dir = "/"
	}
	// The child's chdir error would read as the program's: check first.
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		if err == nil {
			err = syscall.ENOTDIR
		}
		return failed(ota.ReasonStartFailed, "working directory %s: %v", dir, unwrapPath(err))
	}
	p := &process{path: path, argv: argv, env: envList(vars), dir: dir, cred: cred}
	return runLogged(ctx, step, p, logDir)
}

// runLogged runs p for step, capturing its output, and returns the result
// with exit code, output and reason filled in.
func runLogged(ctx context.Context, step *ota.Step, p *process, logDir string) ota.StepResult {
	stdout, stderr := openCaptures(step.Name, logDir)
	o := p.run(ctx, stdout, stderr)
	r := ota.StepResult{Phase: ota.StepSucceeded, ExitCode: o.exitCode}
	if cerr := stdout.Close(); cerr != nil && o.reason == "" {
		o.reason, o.msg = ota.ReasonIOError, cerr.Error()
	}
	if cerr := stderr.Close(); cerr != nil && o.reason == "" {
		o.reason, o.msg = ota.ReasonIOError, cerr.Error()
	}
	r.Stdout, r.Stderr = stdout.Output(), stderr.Output()
	if o.reason != "" {
		r.Phase, r.Reason, r.Error = ota.StepFailed, o.reason, o.msg
	}
	return r
}

// openCaptures returns the two captures of a step, logging to
// logDir/<name>.stdout and .stderr when logDir is set (each file made at
// its stream's first byte).
func openCaptures(name, logDir string) (stdout, stderr *capture) {
	var outPath, errPath string
	if logDir != "" {
		base := filepath.Join(logDir, LogName(name))
		outPath, errPath = base+".stdout", base+".stderr"
	}
	return newCapture(ota.OutputLimit, outPath, LogLimit), newCapture(ota.OutputLimit, errPath, LogLimit)
}

// LogName returns the file name (without .stdout or .stderr) under which a
// step's output is logged: the step name, which validation makes a DNS
// label, with anything else replaced so it cannot leave logDir.
func LogName(step string) string {
	b := []byte(step)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}

// stepEnv builds a step's environment: a minimal base (PATH, HOME, USER,
// LOGNAME, LANG, SHELL), then the step's env, then extra, then the
// OUTPOST_ variables, which nothing overrides.
func stepEnv(u *user.User, stepVars map[string]string, env Env, extra map[string]string) map[string]string {
	vars := map[string]string{
		"PATH":  os.Getenv("PATH"),
		"LANG":  os.Getenv("LANG"),
		"SHELL": "/bin/sh",
	}
	if vars["PATH"] == "" {
		vars["PATH"] = defaultPath
	}
	if vars["LANG"] == "" {
		vars["LANG"] = "C.UTF-8"
	}
	if u != nil {
		vars["HOME"], vars["USER"], vars["LOGNAME"] = u.HomeDir, u.Username, u.Username
	} else {
		vars["HOME"] = "/"
	}
	maps.Copy(vars, stepVars)
	maps.Copy(vars, extra)
	vars["OUTPOST_NODE"], vars["OUTPOST_SITE"], vars["OUTPOST_TASK"] = env.Node, env.Site, env.Task
	return vars
}

// envList returns vars as KEY=value, sorted.
func envList(vars map[string]string) []string {
	out := make([]string, 0, len(vars))
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		out = append(out, k+"="+vars[k])
	}
	return out
}

// credential returns the credential to run as name ("" = the agent's own
// user) and that user's entry. Switching users needs root; naming the
// agent's own user is allowed without it.
func credential(name string) (*syscall.Credential, *user.User, error) {
	if name == "" {
		u, err := user.LookupId(strconv.Itoa(os.Getuid()))
		if err != nil {
			return nil, nil, nil // no passwd entry: run as is, HOME=/
		}
		return nil, u, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr != nil {
			return nil, nil, err
		}
		if u, err = user.LookupId(name); err != nil {
			return nil, nil, err
		}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, nil, fmt.Errorf("uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, nil, fmt.Errorf("gid %q: %w", u.Gid, err)
	}
	if os.Geteuid() != 0 {
		if int(uid) == os.Geteuid() {
			return nil, u, nil
		}
		return nil, nil, errNotRoot
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(n))
			}
		}
	}
	return cred, u, nil
}
