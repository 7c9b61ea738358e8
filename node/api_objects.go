package node

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/outpost-mesh/outpost/consensus"
)

// objectList is the wire form of a list.
type objectList struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ListMeta     `json:"metadata"`
	Items           []*consensus.Object `json:"items"`
}

func readOptions(r *http.Request) consensus.ReadOptions {
	return consensus.ReadOptions{Stale: queryBool(r, "stale")}
}

// selectors parses labelSelector and the fieldSelector subset Outpost
// supports (metadata.name, metadata.namespace).
func selectors(r *http.Request) (labels.Selector, fields.Selector, error) {
	q := r.URL.Query()
	sel, err := labels.Parse(q.Get("labelSelector"))
	if err != nil {
		return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("labelSelector: %v", err))
	}
	fsel, err := fields.ParseSelector(q.Get("fieldSelector"))
	if err != nil {
		return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("fieldSelector: %v", err))
	}
	for _, req := range fsel.Requirements() {
		if req.Field != "metadata.name" && req.Field != "metadata.namespace" {
			return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("fieldSelector: field %q is not supported (use metadata.name or metadata.namespace)", req.Field))
		}
	}
	return sel, fsel, nil
}

func matchesFields(fsel fields.Selector, o *consensus.Object) bool {
	if fsel == nil || fsel.Empty() {
		return true
	}
	return fsel.Matches(fields.Set{"metadata.name": o.Name, "metadata.namespace": o.Namespace})
}

func (a *apiServer) list(w http.ResponseWriter, r *http.Request, req request) {
	sel, fsel, err := selectors(r)
	if err != nil {
		writeError(w, err, a.log)
		return
	}
	list, err := a.store.List(r.Context(), req.kind, req.namespace, sel, readOptions(r))
	if err != nil {
		writeError(w, err, a.log)
		return
	}
	items := list.Items[:0]
	for _, o := range list.Items {
		if matchesFields(fsel, o) {
			items = append(items, a.redact(r, req.kind, o))
		}
	}
	if wantsTable(r) {
		writeJSON(w, http.StatusOK, a.table.convert(req.kind, items, list.ResourceVersion, r))
		return
	}
	writeJSON(w, http.StatusOK, objectList{
		TypeMeta: listKind(req.kind),
		Metadata: metav1.ListMeta{ResourceVersion: strconv.FormatUint(list.ResourceVersion, 10)},
		Items:    items,
	})
}

func (a *apiServer) get(w http.ResponseWriter, r *http.Request, req request) {
	obj, err := a.store.Get(r.Context(), req.kind, req.namespace, req.name, readOptions(r))
	if err != nil {
		writeError(w, err, a.log)
		return
	}
	obj = a.redact(r, req.kind, obj)
	if wantsTable(r) {
		writeJSON(w, http.StatusOK, a.table.convert(req.kind, []*consensus.Object{obj}, obj.Revision(), r))
		return
	}
	writeJSON(w, http.StatusOK, obj)
}

// decodeBody reads and strictly decodes an object of req's kind, checking
// that its name and namespace agree with the path.
func (a *apiServer) decodeBody(w http.ResponseWriter, r *http.Request, req request) (*consensus.Object, error) {
	body, err := readBody(w, r)
	if err != nil {
		return nil, err
	}
	obj, err := req.kind.Decode(body)
	if err != nil {
		return nil, err
	}
	if req.kind.Namespaced {
		switch {
		case obj.Namespace == "":
			obj.Namespace = req.namespace
		case req.namespace != "" && obj.Namespace != req.namespace:
			return nil, apierrors.NewBadRequest(fmt.Sprintf("metadata.namespace %q does not match the namespace %q in the path", obj.Namespace, req.namespace))
		}
		if obj.Namespace == "" {
			obj.Namespace = metav1.NamespaceDefault
		}
	} else if obj.Namespace != "" {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("%s is cluster-scoped: remove metadata.namespace", req.kind.Kind))
	}
	if req.name != "" && obj.Name != req.name {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("metadata.name %q does not match the name %q in the path", obj.Name, req.name))
	}
	return obj, nil
}

func (a *apiServer) create(w http.ResponseWriter, r *http.Request, req request) {
	obj, err := a.decodeBody(w, r, req)
	if err != nil {
		writeError(w, err, a.log)
		return
	}
	if req.kind.Namespaced && req.namespace == "" {
		writeError(w, apierrors.NewBadRequest("create namespaced objects under /namespaces/{namespace}/"), a.log)
		return
	}
	out, err := a.store.Create(r.Context(), req.kind, obj)
	if err != nil {
		writeError(w, err, a.log)
		return
	}
	writeJSON(w, http.StatusCreated, a.redact(r, req.kind, out))
}

func (a *apiServer) update(w http.ResponseWriter, r *http.Request, req request) {
	obj, err := a.decodeBody(w, r, req)
	if err != nil {
		writeError(w, err, a.log)
		return
	}
	var out *consensus.Object
	if req.subresource == "status" {
		out, err = a.store.UpdateStatus(r.Context(), req.kind, obj)
	} else {
		out, err = a.store.Update(r.Context(), req.kind, obj)
	}
	if err != nil {
		writeError(w, err, a.log)
		return
	}
	writeJSON(w, http.StatusOK, a.redact(r, req.kind, out))
}

func (a *apiServer) patch(w http.ResponseWriter, r *http.Request, req request) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "application/merge-patch+json" && ct != "application/json" {
		writeError(w, &apierrors.StatusError{ErrStatus: metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusUnsupportedMediaType, Reason: metav1.StatusReasonUnsupportedMediaType,
			Message: fmt.Sprintf("patch type %q is not supported: send application/merge-patch+json", ct),
		}}, a.log)
		return
	}
	body, err := readBody(w, r)
	if err != nil {
		writeError(w, err, a.log)
		return
	}
	out, err := a.store.Patch(r.Context(), req.kind, req.namespace, req.name, body, req.subresource == "status")
	if err != nil {
		writeError(w, err, a.log)
		return
	}
	writeJSON(w, http.StatusOK, a.redact(r, req.kind, out))
}

func (a *apiServer) delete(w http.ResponseWriter, r *http.Request, req request) {
	var opts metav1.DeleteOptions
	if r.ContentLength != 0 && r.Body != nil {
		body, err := readBody(w, r)
		if err == nil {
			err = json.Unmarshal(body, &opts)
		}
		if err != nil && !strings.Contains(err.Error(), "empty body") {
			writeError(w, apierrors.NewBadRequest(fmt.Sprintf("DeleteOptions: %v", err)), a.log)
			return
		}
	}
	var rv uint64
	var uid string
	if p := opts.Preconditions; p != nil {
		if p.ResourceVersion != nil {
			rv, _ = strconv.ParseUint(*p.ResourceVersion, 10, 64)
		}
		if p.UID != nil {
			uid = string(*p.UID)
		}
	}
	if a.onDelete != nil {
		if err := a.onDelete(r.Context(), req.kind, req.namespace, req.name); err != nil {
			writeError(w, err, a.log)
			return
		}
	}
	out, err := a.store.Delete(r.Context(), req.kind, req.namespace, req.name, rv, uid)
	if err != nil {
		writeError(w, err, a.log)
		return
	}
	writeJSON(w, http.StatusOK, a.redact(r, req.kind, out))
}

func schemaGR(group, resource string) schema.GroupResource {
	return schema.GroupResource{Group: group, Resource: resource}
}
