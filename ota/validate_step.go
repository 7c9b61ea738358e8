package ota

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// ReservedEnv are the variables the agent sets on every exec and playbook
// step; a step's env may not set them.
var ReservedEnv = []string{"OUTPOST_NODE", "OUTPOST_SITE", "OUTPOST_TASK"}

var blobDigest = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ValidateStep checks one step and returns its problems under path
// (spec.steps[i]).
func ValidateStep(s *Step, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if s.Name == "" {
		errs = append(errs, field.Required(path.Child("name"), "a step needs a name"))
	} else {
		for _, msg := range validation.IsDNS1123Label(s.Name) {
			errs = append(errs, field.Invalid(path.Child("name"), s.Name, msg))
		}
	}
	errs = append(errs, validateDuration(s.Timeout, path.Child("timeout"))...)

	execOnly := map[string]bool{"command": len(s.Command) > 0, "script": s.Script != "", "workingDir": s.WorkingDir != "", "user": s.User != ""}
	writeOnly := map[string]bool{"mode": s.Mode != "", "owner": s.Owner != "", "backup": s.Backup}
	switch s.Type {
	case StepExec:
		errs = append(errs, validateExec(s, path)...)
		errs = append(errs, mustNotSet(s.Type, path, map[string]bool{"path": s.Path != "", "maxBytes": s.MaxBytes != 0, "content": s.Content != "", "contentFrom": s.ContentFrom != nil, "playbook": s.Playbook != ""})...)
		errs = append(errs, mustNotSet(s.Type, path, writeOnly)...)
	case StepRead:
		errs = append(errs, validatePath(s.Path, path.Child("path"))...)
		switch mp := path.Child("maxBytes"); {
		case s.MaxBytes < 0:
			errs = append(errs, field.Invalid(mp, s.MaxBytes, "must not be negative"))
		case s.MaxBytes > MaxReadBytes:
			errs = append(errs, field.Invalid(mp, s.MaxBytes, fmt.Sprintf("must be at most %d (1 MiB): the content travels in the device's result; for a bigger file's digest, exec sha256sum", MaxReadBytes)))
		}
		errs = append(errs, mustNotSet(s.Type, path, execOnly)...)
		errs = append(errs, mustNotSet(s.Type, path, writeOnly)...)
		errs = append(errs, mustNotSet(s.Type, path, map[string]bool{"env": len(s.Env) > 0, "content": s.Content != "", "contentFrom": s.ContentFrom != nil, "playbook": s.Playbook != ""})...)
	case StepWrite:
		errs = append(errs, validateWrite(s, path)...)
		errs = append(errs, mustNotSet(s.Type, path, execOnly)...)
		errs = append(errs, mustNotSet(s.Type, path, map[string]bool{"env": len(s.Env) > 0, "maxBytes": s.MaxBytes != 0, "playbook": s.Playbook != ""})...)
	case StepPlaybook:
		errs = append(errs, validatePlaybook(s, path)...)
		errs = append(errs, validateEnv(s.Env, path.Child("env"))...)
		errs = append(errs, mustNotSet(s.Type, path, execOnly)...)
		errs = append(errs, mustNotSet(s.Type, path, writeOnly)...)
		errs = append(errs, mustNotSet(s.Type, path, map[string]bool{"path": s.Path != "", "maxBytes": s.MaxBytes != 0, "content": s.Content != ""})...)
	case "":
		errs = append(errs, field.Required(path.Child("type"), "one of exec, read, write, playbook"))
	default:
		errs = append(errs, field.NotSupported(path.Child("type"), s.Type, StepTypes))
	}
	return errs
}

func validateExec(s *Step, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	cp := path.Child("command")
	switch {
	case len(s.Command) == 0 && s.Script == "":
		errs = append(errs, field.Required(cp, "an exec step needs a command or a script"))
	case len(s.Command) > 0 && s.Script != "":
		errs = append(errs, field.Invalid(cp, s.Command, "command and script are mutually exclusive"))
	case len(s.Command) > 0 && s.Command[0] == "":
		errs = append(errs, field.Invalid(cp.Index(0), "", "the program must not be empty"))
	}
	errs = append(errs, validateEnv(s.Env, path.Child("env"))...)
	if s.WorkingDir != "" && !filepath.IsAbs(s.WorkingDir) {
		errs = append(errs, field.Invalid(path.Child("workingDir"), s.WorkingDir, "must be an absolute path"))
	}
	if s.User != "" && (strings.ContainsAny(s.User, " \t\n:/") || len(s.User) > 256) {
		errs = append(errs, field.Invalid(path.Child("user"), s.User, "must be a user name or a numeric uid"))
	}
	return errs
}

func validateEnv(env map[string]string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for k := range env {
		for _, msg := range validation.IsEnvVarName(k) {
			errs = append(errs, field.Invalid(path.Key(k), k, msg))
		}
		for _, r := range ReservedEnv {
			if k == r {
				errs = append(errs, field.Forbidden(path.Key(k), "set by the agent on every step"))
			}
		}
	}
	return errs
}

func validatePath(p string, path *field.Path) field.ErrorList {
	if p == "" {
		return field.ErrorList{field.Required(path, "an absolute path")}
	}
	if err := CheckPath(p); err != nil {
		return field.ErrorList{field.Invalid(path, p, strings.TrimPrefix(err.Error(), ErrPath.Error()+": "))}
	}
	return nil
}

func validateWrite(s *Step, path *field.Path) field.ErrorList {
	errs := validatePath(s.Path, path.Child("path"))
	if len(errs) == 0 && filepath.Clean(s.Path) == "/" {
		errs = append(errs, field.Invalid(path.Child("path"), s.Path, "must name a file"))
	}
	if s.Content != "" && s.ContentFrom != nil {
		errs = append(errs, field.Invalid(path.Child("content"), "<content>", "content and contentFrom are mutually exclusive"))
	}
	if len(s.Content) > MaxInlineBytes {
		errs = append(errs, field.TooLong(path.Child("content"), "", MaxInlineBytes))
	}
	errs = append(errs, validateContentFrom(s.ContentFrom, path.Child("contentFrom"))...)
	if s.Mode != "" {
		if _, err := ParseMode(s.Mode); err != nil {
			errs = append(errs, field.Invalid(path.Child("mode"), s.Mode, err.Error()))
		}
	}
	if s.Owner != "" {
		if _, _, err := SplitOwner(s.Owner); err != nil {
			errs = append(errs, field.Invalid(path.Child("owner"), s.Owner, err.Error()))
		}
	}
	return errs
}

func validateContentFrom(c *ContentFrom, path *field.Path) field.ErrorList {
	if c == nil {
		return nil
	}
	var errs field.ErrorList
	if !blobDigest.MatchString(c.Blob) {
		errs = append(errs, field.Invalid(path.Child("blob"), c.Blob, `must be "sha256:" and 64 lowercase hex digits`))
	}
	if c.Size < 0 {
		errs = append(errs, field.Invalid(path.Child("size"), c.Size, "must not be negative"))
	}
	if c.Repository != "" && (len(c.Repository) > 255 || !repositoryName.MatchString(c.Repository)) {
		errs = append(errs, field.Invalid(path.Child("repository"), c.Repository, "must be an OCI repository name: lowercase path components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/'"))
	}
	return errs
}

// repositoryName is the OCI distribution spec's repository name.
var repositoryName = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)

func validatePlaybook(s *Step, path *field.Path) field.ErrorList {
	pp := path.Child("playbook")
	switch {
	case s.Playbook == "" && s.ContentFrom == nil:
		return field.ErrorList{field.Required(pp, "a playbook step needs playbook or contentFrom")}
	case s.Playbook != "" && s.ContentFrom != nil:
		return field.ErrorList{field.Invalid(pp, "<playbook>", "playbook and contentFrom are mutually exclusive")}
	case s.ContentFrom != nil:
		return validateContentFrom(s.ContentFrom, path.Child("contentFrom"))
	case len(s.Playbook) > MaxInlineBytes:
		return field.ErrorList{field.TooLong(pp, "", MaxInlineBytes)}
	}
	var plays []map[string]any
	if err := yaml.Unmarshal([]byte(s.Playbook), &plays); err != nil {
		return field.ErrorList{field.Invalid(pp, "<playbook>", "must be a YAML list of plays: "+err.Error())}
	}
	if len(plays) == 0 {
		return field.ErrorList{field.Invalid(pp, "<playbook>", "must hold at least one play")}
	}
	return nil
}
