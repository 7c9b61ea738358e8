package node

import (
	"context"
	"net/http"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/outpost-mesh/outpost/consensus"
)

// Principal is the caller an API request was authenticated as.
type Principal struct {
	Name string
	Role string
}

type principalKey struct{}

// PrincipalFrom returns the authenticated caller of a request.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// authenticator checks bearer tokens against AccessToken objects in the
// local replica: a token is "<name>.<secret>" and only the secret's SHA-256
// is stored.
type authenticator struct {
	store *consensus.Store
	now   func() time.Time
	// refused, when set, answers (and audits) a call that failed
	// authentication; the API server sets it (audit.go).
	refused func(w http.ResponseWriter, r *http.Request, err error)
}

func (a *authenticator) authenticate(ctx context.Context, header string) (Principal, error) {
	token, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		return Principal{}, apierrors.NewUnauthorized("missing bearer token: pass Authorization: Bearer <token> (the CLI reads it from <data-dir>/admin.yaml)")
	}
	id, secret, ok := splitToken(strings.TrimSpace(token))
	if !ok {
		return Principal{}, apierrors.NewUnauthorized("malformed bearer token")
	}
	obj, err := a.store.Get(ctx, &AccessTokenKind, "", id, consensus.ReadOptions{Stale: true})
	if err != nil {
		return Principal{}, apierrors.NewUnauthorized("invalid bearer token")
	}
	// The hash is a sealed field (rbac.go's kinds); a token written before
	// it was sealed opens as it is.
	if obj, err = a.store.Unseal(&AccessTokenKind, obj); err != nil {
		return Principal{}, apierrors.NewUnauthorized("invalid bearer token")
	}
	var spec AccessTokenSpec
	if err := obj.DecodeSpec(&spec); err != nil || !secretMatches(secret, spec.SecretHash) {
		return Principal{}, apierrors.NewUnauthorized("invalid bearer token")
	}
	if spec.Expires != nil && a.now().After(spec.Expires.Time) {
		return Principal{}, apierrors.NewUnauthorized("bearer token expired")
	}
	return Principal{Name: id, Role: spec.Role}, nil
}

// require wraps h so that only authenticated requests reach it.
func (a *authenticator) require(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.authenticate(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			if a.refused != nil {
				a.refused(w, r, err)
				return
			}
			writeError(w, err, nil)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}
