package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/outpost-mesh/outpost/ota"
)

// defaultFileMode is a new file's mode when the step gives none.
const defaultFileMode fs.FileMode = 0o644

// runWrite replaces a file atomically: the content goes to a temporary
// file in the same directory, which is synced, given its owner and mode,
// and renamed over the path; then the directory is synced. Readers see the
// old file or the new one, never a part, and a failure before the rename
// (a digest mismatch included) leaves the old file as it was.
func runWrite(ctx context.Context, step *ota.Step, pol Policy, blobs BlobOpener) ota.StepResult {
	if err := ota.CheckPath(step.Path); err != nil {
		return failed(ota.ReasonInvalid, "write: %v", err)
	}
	path := filepath.Clean(step.Path)
	if path == "/" {
		return failed(ota.ReasonInvalid, "write: path must name a file")
	}
	base := filepath.Base(path)
	dir, err := resolveDir(filepath.Dir(path))
	if err != nil {
		return failed(ota.ReasonIOError, "write %s: %v", path, unwrapPath(err))
	}
	if target := filepath.Join(dir, base); !pol.permits(target) {
		return failed(ota.ReasonPolicyDenied, "write %s", pol.pathDenied(path, target))
	}
	mode, uid, gid, serr := writeAttrs(step)
	if serr != nil {
		return serr.result()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return failed(ota.ReasonIOError, "write %s: create directories: %v", path, unwrapPath(err))
	}
	// Resolve again once the directories exist: one swapped for a symlink
	// in the meantime is caught here.
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		return failed(ota.ReasonIOError, "write %s: %v", path, unwrapPath(err))
	}
	target := filepath.Join(dir, base)
	if !pol.permits(target) {
		return failed(ota.ReasonPolicyDenied, "write %s", pol.pathDenied(path, target))
	}

	prev, err := os.Lstat(target)
	exists := err == nil
	switch {
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return failed(ota.ReasonIOError, "write %s: %v", path, unwrapPath(err))
	case exists && prev.IsDir():
		return failed(ota.ReasonInvalid, "write %s: is a directory", path)
	}
	if exists && prev.Mode().IsRegular() {
		if step.Mode == "" {
			mode = prev.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		}
		if st, ok := prev.Sys().(*syscall.Stat_t); ok && step.Owner == "" && os.Geteuid() == 0 {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	}

	res, serr := replaceFile(ctx, step, blobs, dir, target, mode, uid, gid, exists)
	if serr != nil {
		serr.msg = fmt.Sprintf("write %s: %s", path, serr.msg)
		return serr.result()
	}
	return ota.StepResult{Phase: ota.StepSucceeded, Write: res}
}

// replaceFile writes the new content next to target and renames it over.
func replaceFile(ctx context.Context, step *ota.Step, blobs BlobOpener, dir, target string, mode fs.FileMode, uid, gid int, exists bool) (*ota.WriteResult, *stepError) {
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(target)+".outpost-*")
	if err != nil {
		return nil, stepErr(ota.ReasonIOError, "temporary file: %v", unwrapPath(err))
	}
	tmpName, done := tmp.Name(), false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	n, sum, serr := copyContent(ctx, step.Content, step.ContentFrom, blobs, tmp)
	if serr != nil {
		return nil, serr
	}
	if err := tmp.Sync(); err != nil {
		return nil, stepErr(ota.ReasonIOError, "sync: %v", unwrapPath(err))
	}
	// Owner before mode: chown clears the setuid and setgid bits.
	if uid >= 0 || gid >= 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			return nil, stepErr(ota.ReasonIOError, "chown %s: %v", step.Owner, unwrapPath(err))
		}
	}
	if err := tmp.Chmod(mode); err != nil {
		return nil, stepErr(ota.ReasonIOError, "chmod: %v", unwrapPath(err))
	}
	if err := tmp.Close(); err != nil {
		return nil, stepErr(ota.ReasonIOError, "close: %v", unwrapPath(err))
	}
	res := &ota.WriteResult{SHA256: sum, Size: n}
	if step.Backup && exists {
		// A hard link keeps the old inode under the backup name; the rename
		// below then cannot touch it.
		bak, bakTmp := target+ota.BackupSuffix, tmpName+".bak"
		if err := os.Link(target, bakTmp); err != nil {
			return nil, stepErr(ota.ReasonIOError, "backup: %v", err)
		}
		err := os.Rename(bakTmp, bak)
		// A rename onto a link of the same inode does nothing and leaves
		// bakTmp (the backup already is the current file: a write that
		// stopped after its backup, or another writer of the same path).
		os.Remove(bakTmp)
		if err != nil {
			return nil, stepErr(ota.ReasonIOError, "backup: %v", err)
		}
		res.BackupPath = bak
	}
	if err := os.Rename(tmpName, target); err != nil {
		return nil, stepErr(ota.ReasonIOError, "rename: %v", err)
	}
	done = true
	if err := syncDir(dir); err != nil {
		return nil, stepErr(ota.ReasonIOError, "sync directory: %v", err)
	}
	return res, nil
}

// writeAttrs returns the mode and owner a step asks for: the default mode,
// and uid and gid -1 (unchanged) unless the step sets an owner.
func writeAttrs(step *ota.Step) (fs.FileMode, int, int, *stepError) {
	mode, uid, gid := defaultFileMode, -1, -1
	if step.Mode != "" {
		m, err := ota.ParseMode(step.Mode)
		if err != nil {
			return 0, 0, 0, stepErr(ota.ReasonInvalid, "%v", err)
		}
		mode = m
	}
	if step.Owner != "" {
		var err error
		if uid, gid, err = lookupOwner(step.Owner); err != nil {
			reason := ota.ReasonInvalid
			if errors.Is(err, errNotRoot) {
				reason = ota.ReasonNotRoot
			}
			return 0, 0, 0, stepErr(reason, "owner %q: %v", step.Owner, err)
		}
	}
	return mode, uid, gid, nil
}

// lookupOwner resolves "user[:group]" to ids; a number without an entry
// is used as it is. Without a group, the group is left unchanged.
func lookupOwner(s string) (uid, gid int, err error) {
	un, gn, err := ota.SplitOwner(s)
	if err != nil {
		return 0, 0, err
	}
	uid, gid = -1, -1
	if u, err := user.Lookup(un); err == nil {
		uid, _ = strconv.Atoi(u.Uid)
	} else if n, nerr := strconv.Atoi(un); nerr == nil && n >= 0 {
		uid = n
	} else {
		return 0, 0, err
	}
	if gn != "" {
		if g, err := user.LookupGroup(gn); err == nil {
			gid, _ = strconv.Atoi(g.Gid)
		} else if n, nerr := strconv.Atoi(gn); nerr == nil && n >= 0 {
			gid = n
		} else {
			return 0, 0, err
		}
	}
	if os.Geteuid() != 0 && (uid != os.Geteuid() || (gid >= 0 && gid != os.Getegid())) {
		return 0, 0, errNotRoot
	}
	return uid, gid, nil
}

// resolveDir resolves the symlinks of dir's longest existing prefix and
// appends the rest, which MkdirAll will create.
func resolveDir(dir string) (string, error) {
	rest, d := "", dir
	for {
		r, err := filepath.EvalSymlinks(d)
		if err == nil {
			return filepath.Join(r, rest), nil
		}
		parent := filepath.Dir(d)
		if !errors.Is(err, fs.ErrNotExist) || parent == d {
			return "", err
		}
		rest = filepath.Join(filepath.Base(d), rest)
		d = parent
	}
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
