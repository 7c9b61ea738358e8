package api

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/images/store"
)

// Providers are the values of RegistrySpec.Provider.
var Providers = []string{"generic", "dockerhub", "harbor", "quay", "ghcr", "gitlab", "ecr", "gcr", "acr"}

// MaxSyncSites bounds the sites of one ImageSync.
const MaxSyncSites = 256

var platformRE = regexp.MustCompile(`^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$`)

func decodeErr(obj *consensus.Object, err error) field.ErrorList {
	return field.ErrorList{field.Invalid(field.NewPath("spec"), string(obj.Spec), err.Error())}
}

func validateRegistry(obj *consensus.Object) field.ErrorList {
	var spec RegistrySpec
	if err := obj.DecodeSpec(&spec); err != nil {
		return decodeErr(obj, err)
	}
	return ValidateRegistrySpec(spec, field.NewPath("spec"))
}

// ValidateRegistrySpec checks a registry's spec.
func ValidateRegistrySpec(spec RegistrySpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch {
	case spec.Domain == "":
		errs = append(errs, field.Required(p.Child("domain"), "the registry's host, e.g. docker.io or registry.example.com:5000"))
	case strings.Contains(spec.Domain, "/"):
		errs = append(errs, field.Invalid(p.Child("domain"), spec.Domain, "a host with an optional :port, without scheme or path"))
	default:
		if err := store.ValidateNamespace(spec.Domain); err != nil {
			errs = append(errs, field.Invalid(p.Child("domain"), spec.Domain, "a lowercase host with an optional :port, e.g. docker.io or registry.example.com:5000"))
		}
	}
	if spec.Provider != "" && !slices.Contains(Providers, spec.Provider) {
		errs = append(errs, field.NotSupported(p.Child("provider"), spec.Provider, Providers))
	}
	if c := spec.Credentials; c != nil {
		if c.Password != "" && c.Username == "" {
			errs = append(errs, field.Required(p.Child("credentials", "username"), "a password needs a user name"))
		}
		if len(c.Username) > 256 {
			errs = append(errs, field.TooLong(p.Child("credentials", "username"), "", 256))
		}
		if len(c.Password) > 8192 {
			errs = append(errs, field.TooLong(p.Child("credentials", "password"), "", 8192))
		}
	}
	return errs
}

func validateRepository(obj *consensus.Object) field.ErrorList {
	var spec RepositorySpec
	if err := obj.DecodeSpec(&spec); err != nil {
		return decodeErr(obj, err)
	}
	p := field.NewPath("spec")
	var errs field.ErrorList
	if spec.RegistryName == "" {
		errs = append(errs, field.Required(p.Child("registryName"), "the name of a registry"))
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(spec.RegistryName) {
			errs = append(errs, field.Invalid(p.Child("registryName"), spec.RegistryName, msg))
		}
	}
	if spec.RepositoryName == "" {
		errs = append(errs, field.Required(p.Child("repositoryName"), "e.g. library/nginx"))
	} else if err := store.ValidateRepository(spec.RepositoryName); err != nil {
		errs = append(errs, field.Invalid(p.Child("repositoryName"), spec.RepositoryName, "lowercase path components of [a-z0-9._-] separated by '/', e.g. library/nginx"))
	}
	return errs
}

func validateImageSync(obj *consensus.Object) field.ErrorList {
	var spec ImageSyncSpec
	if err := obj.DecodeSpec(&spec); err != nil {
		return decodeErr(obj, err)
	}
	p := field.NewPath("spec")
	var errs field.ErrorList
	if spec.Image == "" {
		errs = append(errs, field.Required(p.Child("image"), "e.g. registry.example.com/team/app:v1"))
	} else if _, err := ParseImage(spec.Image); err != nil {
		errs = append(errs, field.Invalid(p.Child("image"), spec.Image, err.Error()))
	}
	switch {
	case len(spec.Sites) == 0:
		errs = append(errs, field.Required(p.Child("sites"), "the sites that must hold the image"))
	case len(spec.Sites) > MaxSyncSites:
		errs = append(errs, field.TooMany(p.Child("sites"), len(spec.Sites), MaxSyncSites))
	}
	seen := map[string]bool{}
	for i, s := range spec.Sites {
		for _, msg := range validation.IsDNS1123Subdomain(s) {
			errs = append(errs, field.Invalid(p.Child("sites").Index(i), s, msg))
		}
		if seen[s] {
			errs = append(errs, field.Duplicate(p.Child("sites").Index(i), s))
		}
		seen[s] = true
	}
	for i, pl := range spec.Platforms {
		if !platformRE.MatchString(pl) {
			errs = append(errs, field.Invalid(p.Child("platforms").Index(i), pl, "os/arch or os/arch/variant, e.g. linux/arm64"))
		}
	}
	return errs
}

// ParsePlatform splits "os/arch[/variant]".
func ParsePlatform(s string) (os, arch, variant string, err error) {
	if !platformRE.MatchString(s) {
		return "", "", "", fmt.Errorf("platform %q: want os/arch or os/arch/variant, e.g. linux/arm64", s)
	}
	parts := strings.Split(s, "/")
	if len(parts) == 3 {
		variant = parts[2]
	}
	return parts[0], parts[1], variant, nil
}
