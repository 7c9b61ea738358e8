package store

import (
	_ "crypto/sha256" // registers sha256 with go-digest
	_ "crypto/sha512" // registers sha512 with go-digest
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// The OCI distribution-spec grammars. A repository name is one or more
// lowercase path components separated by "/"; a component cannot start or
// end with a separator, so "." and ".." can never be one, and no name can
// climb out of a directory.
var (
	repositoryRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE        = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	hostLabelRE  = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$`)
)

// MaxRepositoryLength bounds a repository name, as most clients do.
const MaxRepositoryLength = 255

// ParseDigest validates s strictly and returns it as a digest: a supported
// algorithm (sha256 or sha512), a colon, and exactly the algorithm's number
// of lowercase hex characters. Anything else, such as "sha256:../../x", is
// ErrInvalidDigest; a well-formed digest of another algorithm is
// ErrUnsupportedDigest.
func ParseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		if errors.Is(err, digest.ErrDigestUnsupported) {
			return "", fmt.Errorf("digest %q: %w", s, ErrUnsupportedDigest)
		}
		return "", fmt.Errorf("digest %q: %w: %v", s, ErrInvalidDigest, err)
	}
	switch d.Algorithm() {
	case digest.SHA256, digest.SHA512:
		return d, nil
	}
	return "", fmt.Errorf("digest %q: %w", s, ErrUnsupportedDigest)
}

// checkDigest is ParseDigest for a value already typed as a digest.
func checkDigest(d digest.Digest) error {
	_, err := ParseDigest(string(d))
	return err
}

// ValidateRepository reports whether name follows the distribution-spec
// repository grammar (for example "library/nginx" or "a/b/c"), at most
// MaxRepositoryLength characters.
func ValidateRepository(name string) error {
	if name == "" || len(name) > MaxRepositoryLength || !repositoryRE.MatchString(name) {
		return fmt.Errorf("repository %q: %w: use lowercase path components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/', at most %d characters",
			name, ErrInvalidName, MaxRepositoryLength)
	}
	return nil
}

// ValidateTag reports whether tag follows the distribution-spec tag
// grammar: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func ValidateTag(tag string) error {
	if !tagRE.MatchString(tag) {
		return fmt.Errorf("tag %q: %w: a tag is 1 to 128 characters of [a-zA-Z0-9._-] and cannot start with '.' or '-'", tag, ErrInvalidName)
	}
	return nil
}

// ValidateNamespace reports whether ns names an upstream registry: empty
// (the hub's own registry), or a lowercase host name or IP address with an
// optional port, such as "docker.io", "registry.example.com:5000" or
// "[fd00::1]:5000" — the form containerd sends in its ns parameter.
func ValidateNamespace(ns string) error {
	if ns == "" {
		return nil
	}
	bad := func(why string) error {
		return fmt.Errorf("registry namespace %q: %w: %s", ns, ErrInvalidName, why)
	}
	if len(ns) > 255 {
		return bad("longer than 255 characters")
	}
	host, port := ns, ""
	if strings.HasPrefix(ns, "[") {
		end := strings.Index(ns, "]")
		if end < 0 {
			return bad("unclosed '[' in an IPv6 address")
		}
		host, port = ns[1:end], ns[end+1:]
		if host == "" || strings.Trim(host, "0123456789abcdef:.") != "" {
			return bad("not an IPv6 address in brackets")
		}
		if port != "" && !strings.HasPrefix(port, ":") {
			return bad("only ':port' may follow ']'")
		}
		port = strings.TrimPrefix(port, ":")
	} else {
		if i := strings.LastIndex(ns, ":"); i >= 0 {
			host, port = ns[:i], ns[i+1:]
		}
		for _, label := range strings.Split(host, ".") {
			if !hostLabelRE.MatchString(label) {
				return bad("use a lowercase host name such as docker.io, with an optional :port")
			}
		}
	}
	if port != "" || strings.HasSuffix(ns, ":") {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
			return bad("the port must be a number from 1 to 65535")
		}
	}
	return nil
}

// validateRepo checks a namespace and repository pair.
func validateRepo(ns, repo string) error {
	if err := ValidateNamespace(ns); err != nil {
		return err
	}
	return ValidateRepository(repo)
}
