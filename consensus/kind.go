package consensus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kjson "sigs.k8s.io/json"
)

// Kind describes a resource type the object store accepts: its API names,
// scope, typed spec and status for strict decoding, semantic validation and
// the columns a table shows.
type Kind struct {
	Group      string
	Version    string
	Kind       string
	Plural     string
	Singular   string
	ShortNames []string
	// Namespaced is true for namespaced resources, false for cluster-scoped.
	Namespaced bool
	// NewSpec and NewStatus return a pointer to a zero typed value; the spec
	// and status are decoded strictly into it, so unknown fields are
	// rejected with their path. Nil accepts any JSON object.
	NewSpec   func() any
	NewStatus func() any
	// Validate checks the decoded object beyond its types. Optional.
	Validate func(obj *Object) field.ErrorList
	// ValidateUpdate checks a change of spec against the stored object
	// (fields that cannot change once created); it runs only when the
	// spec's bytes differ. Optional.
	ValidateUpdate func(obj, old *Object) field.ErrorList
	// Columns are the printer columns of tables, after NAME and before AGE.
	Columns []Column
	// Hidden kinds are kept and replicated but not served by the admin API
	// (credentials, internal bookkeeping).
	Hidden bool
	// ReadOnly kinds are served for reading only; their controllers write
	// them (DeviceResults).
	ReadOnly bool
	// Secrets are the spec fields that are write-only, as dot paths
	// ("connection.kubeconfig", "credentials.password"); each holds a JSON
	// string (a string or []byte field). The Store seals them with its
	// Sealer before they reach Raft and keeps the sealed value when an
	// update leaves the field out; Redact takes them out of what the API
	// returns; a controller reads them with Store.Unseal.
	Secrets []string
	// NamePrefix, if set, returns a prefix of the name of every object
	// that sel can match, or "" when it implies none: a kind whose names
	// are made from a label (a task's results are "task.node") lets List
	// read only those objects' keys instead of decoding every object of
	// the kind to match the label. Its Validate must hold the convention.
	NamePrefix func(sel labels.Selector) string
}

// Column is a printer column: a JSONPath into the object, as in a
// CustomResourceDefinition's additionalPrinterColumns.
type Column struct {
	Name     string
	Type     string // string, integer, number, boolean, date
	JSONPath string // e.g. .status.role
	// Priority 0 shows in every table; 1 only in wide output.
	Priority    int32
	Description string
}

// APIVersion returns group/version.
func (k *Kind) APIVersion() string { return k.Group + "/" + k.Version }

// GroupVersionKind returns the kind's schema identifier.
func (k *Kind) GroupVersionKind() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: k.Group, Version: k.Version, Kind: k.Kind}
}

// GroupResource returns the group and plural used in error messages.
func (k *Kind) GroupResource() schema.GroupResource {
	return schema.GroupResource{Group: k.Group, Resource: k.Plural}
}

// Decode parses a JSON object of this kind strictly: unknown fields anywhere
// are a 400 naming their path; apiVersion and kind must match (they are
// filled in when empty).
func (k *Kind) Decode(data []byte) (*Object, error) {
	var obj Object
	if err := strictUnmarshal(data, &obj, ""); err != nil {
		return nil, err
	}
	if obj.APIVersion == "" {
		obj.APIVersion = k.APIVersion()
	}
	if obj.Kind == "" {
		obj.Kind = k.Kind
	}
	if obj.APIVersion != k.APIVersion() || obj.Kind != k.Kind {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("%s %s does not match %s %s of this endpoint",
			obj.APIVersion, obj.Kind, k.APIVersion(), k.Kind))
	}
	if err := k.checkParts(&obj); err != nil {
		return nil, err
	}
	return &obj, nil
}

// checkParts decodes spec and status into their typed values strictly;
// a part that SetSpec or SetStatus marshalled from the kind's own type
// decodes by construction and is not decoded again.
func (k *Kind) checkParts(obj *Object) error {
	if k.NewSpec != nil && len(obj.Spec) > 0 && !madeFrom(obj.specFrom, obj.Spec, k.NewSpec) {
		if err := strictUnmarshal(obj.Spec, k.NewSpec(), "spec"); err != nil {
			return err
		}
	}
	if k.NewStatus != nil && len(obj.Status) > 0 && !madeFrom(obj.statusFrom, obj.Status, k.NewStatus) {
		if err := strictUnmarshal(obj.Status, k.NewStatus(), "status"); err != nil {
			return err
		}
	}
	return nil
}

// madeFrom reports whether b was marshalled from the type newPart makes.
func madeFrom(p part, b []byte, newPart func() any) bool {
	t := p.typeOf(b)
	return t != nil && t == valueType(newPart())
}

// strictUnmarshal decodes data into v, turning unknown or duplicate fields
// and type errors into a BadRequest that names the field path under prefix.
func strictUnmarshal(data []byte, v any, prefix string) error {
	data = bytes.TrimSpace(data)
	if prefix != "" && bytes.Equal(data, []byte("null")) {
		return nil
	}
	strict, err := kjson.UnmarshalStrict(data, v)
	if err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return apierrors.NewBadRequest(fmt.Sprintf("field %s: cannot be %s, want %s", joinPath(prefix, te.Field), te.Value, te.Type))
		}
		if prefix != "" {
			path := prefix
			if p, ok := refusingField(data, reflect.TypeOf(v), prefix, err.Error()); ok {
				path = p
			}
			return apierrors.NewBadRequest(fmt.Sprintf("field %s: %v", path, err))
		}
		return apierrors.NewBadRequest(fmt.Sprintf("malformed body: %v", err))
	}
	if len(strict) > 0 {
		msgs := make([]string, 0, len(strict))
		for _, e := range strict {
			msg := strings.TrimPrefix(e.Error(), "json: ")
			if prefix != "" {
				// unknown field "x.y" → unknown field "spec.x.y"
				msg = strings.Replace(msg, `field "`, `field "`+prefix+".", 1)
			}
			msgs = append(msgs, msg)
		}
		return apierrors.NewBadRequest(strings.Join(msgs, "; "))
	}
	return nil
}

func joinPath(prefix, f string) string {
	switch {
	case prefix == "":
		return f
	case f == "":
		return prefix
	default:
		return prefix + "." + f
	}
}

// validateCreate checks an object before it is created.
func (k *Kind) validateCreate(obj *Object) error {
	errs := k.validateMeta(obj)
	if k.Validate != nil {
		errs = append(errs, k.Validate(obj)...)
	}
	return k.invalid(obj.Name, errs)
}

// validateUpdate checks an update against the stored object.
// Metadata left as it was stored (a controller's status write) was
// validated when it was written and is not validated again: that was 4%
// of the hub's CPU in a 10,000-node read, a third of recording a result.
//
// Metadata that differs from the stored only in its labels (the phase
// label the hub moves with each result) has its labels validated alone.
func (k *Kind) validateUpdate(obj, old *Object) error {
	var errs field.ErrorList
	switch {
	case obj.ResourceVersion != "" && sameMetaButLabels(&obj.ObjectMeta, &old.ObjectMeta):
		if !maps.Equal(obj.Labels, old.Labels) {
			errs = validateLabels(obj.Labels, field.NewPath("metadata", "labels"))
		}
	default:
		errs = k.validateMeta(obj)
		errs = append(errs, apivalidation.ValidateObjectMetaUpdate(withoutLabels(&obj.ObjectMeta), &old.ObjectMeta, field.NewPath("metadata"))...)
	}
	if k.Validate != nil {
		errs = append(errs, k.Validate(obj)...)
	}
	if k.ValidateUpdate != nil && !bytes.Equal(obj.Spec, old.Spec) {
		errs = append(errs, k.ValidateUpdate(obj, old)...)
	}
	return k.invalid(obj.Name, errs)
}

// sameMetaButLabels reports whether a and b are the same metadata but for
// the labels and the resourceVersion (and selfLink, a legacy field nothing
// validates).
func sameMetaButLabels(a, b *metav1.ObjectMeta) bool {
	return a.Name == b.Name && a.GenerateName == b.GenerateName && a.Namespace == b.Namespace &&
		a.UID == b.UID && a.Generation == b.Generation &&
		a.CreationTimestamp.Equal(&b.CreationTimestamp) && a.DeletionTimestamp.Equal(b.DeletionTimestamp) &&
		equalPtr(a.DeletionGracePeriodSeconds, b.DeletionGracePeriodSeconds) &&
		maps.Equal(a.Annotations, b.Annotations) &&
		slices.Equal(a.Finalizers, b.Finalizers) &&
		slices.EqualFunc(a.OwnerReferences, b.OwnerReferences, func(x, y metav1.OwnerReference) bool {
			return x.APIVersion == y.APIVersion && x.Kind == y.Kind && x.Name == y.Name && x.UID == y.UID &&
				equalPtr(x.Controller, y.Controller) && equalPtr(x.BlockOwnerDeletion, y.BlockOwnerDeletion)
		}) &&
		len(a.ManagedFields) == 0 && len(b.ManagedFields) == 0
}

// equalPtr reports whether a and b are both nil or point to equal values.
func equalPtr[T comparable](a, b *T) bool {
	return a == b || a != nil && b != nil && *a == *b
}

func (k *Kind) validateMeta(obj *Object) field.ErrorList {
	errs := apivalidation.ValidateObjectMeta(withoutLabels(&obj.ObjectMeta), k.Namespaced, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	errs = append(errs, validateLabels(obj.Labels, field.NewPath("metadata", "labels"))...)
	if obj.GenerateName != "" {
		errs = append(errs, field.Forbidden(field.NewPath("metadata", "generateName"), "not supported; set metadata.name"))
	}
	return errs
}

// withoutLabels is a shallow copy of m without its labels, for
// apimachinery's checks of the rest: validateLabels checks those.
func withoutLabels(m *metav1.ObjectMeta) *metav1.ObjectMeta {
	c := *m
	c.Labels = nil
	return &c
}

func (k *Kind) invalid(name string, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(k.GroupVersionKind().GroupKind(), name, errs)
}

// Registry holds the kinds the store accepts. It is safe for concurrent use.
type Registry struct {
	mu    sync.RWMutex
	kinds map[schema.GroupVersionKind]*Kind
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{kinds: map[schema.GroupVersionKind]*Kind{}}
}

// Register adds k. A kind, plural or short name already taken in the group is
// an error naming both.
func (r *Registry) Register(k Kind) error {
	if k.Group == "" || k.Version == "" || k.Kind == "" || k.Plural == "" {
		return fmt.Errorf("register kind %q: group, version, kind and plural are required", k.Kind)
	}
	if k.Singular == "" {
		k.Singular = strings.ToLower(k.Kind)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.kinds {
		if o.Group != k.Group {
			continue
		}
		if o.Kind == k.Kind || o.Plural == k.Plural {
			return fmt.Errorf("register kind %s: %s/%s already registered", k.GroupVersionKind(), o.Group, o.Kind)
		}
		for _, s := range k.ShortNames {
			if slices.Contains(o.ShortNames, s) {
				return fmt.Errorf("register kind %s: short name %q already used by %s", k.GroupVersionKind(), s, o.Kind)
			}
		}
	}
	r.kinds[k.GroupVersionKind()] = &k
	return nil
}

// MustRegister is Register for package-level kind lists known to be valid.
// It is for tests and init-time tables; it panics on a programming error.
func (r *Registry) MustRegister(kinds ...Kind) {
	for _, k := range kinds {
		if err := r.Register(k); err != nil {
			panic(err)
		}
	}
}

// Kinds returns every registered kind, sorted by group then kind.
func (r *Registry) Kinds() []*Kind {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Kind, 0, len(r.kinds))
	for _, k := range r.kinds {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Group != out[j].Group {
			return out[i].Group < out[j].Group
		}
		return out[i].Kind < out[j].Kind
	})
	return out
}

// ForResource finds a kind by group, version and plural, as in an API path.
func (r *Registry) ForResource(group, version, plural string) (*Kind, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, k := range r.kinds {
		if k.Group == group && k.Version == version && k.Plural == plural {
			return k, true
		}
	}
	return nil, false
}

// ForKind finds a kind by apiVersion and kind, as in a manifest.
func (r *Registry) ForKind(apiVersion, kind string) (*Kind, bool) {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return nil, false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	k, ok := r.kinds[gv.WithKind(kind)]
	return k, ok
}
