package node

import (
	"net/http"
	"runtime"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/version"
)

// groups returns the served API groups and their versions.
func (a *apiServer) groups() []metav1.APIGroup {
	byName := map[string]*metav1.APIGroup{}
	for _, k := range a.reg.Kinds() {
		if k.Hidden {
			continue
		}
		g, ok := byName[k.Group]
		if !ok {
			g = &metav1.APIGroup{TypeMeta: metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}, Name: k.Group}
			byName[k.Group] = g
		}
		gv := metav1.GroupVersionForDiscovery{GroupVersion: k.APIVersion(), Version: k.Version}
		found := false
		for _, v := range g.Versions {
			found = found || v == gv
		}
		if !found {
			g.Versions = append(g.Versions, gv)
			g.PreferredVersion = gv
		}
	}
	out := make([]metav1.APIGroup, 0, len(byName))
	for _, g := range byName {
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (a *apiServer) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, metav1.APIGroupList{
		TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"},
		Groups:   a.groups(),
	})
}

func (a *apiServer) serveGroup(w http.ResponseWriter, r *http.Request, name string) {
	for _, g := range a.groups() {
		if g.Name == name {
			writeJSON(w, http.StatusOK, g)
			return
		}
	}
	writeError(w, apierrors.NewNotFound(schemaGR(name, ""), name), a.log)
}

func (a *apiServer) serveResourceList(w http.ResponseWriter, r *http.Request, group, ver string) {
	list := metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: group + "/" + ver}
	for _, k := range a.reg.Kinds() {
		if k.Hidden || k.Group != group || k.Version != ver {
			continue
		}
		verbs := metav1.Verbs{"create", "delete", "get", "list", "patch", "update", "watch"}
		if k.ReadOnly {
			verbs = metav1.Verbs{"get", "list", "watch"}
		}
		list.APIResources = append(list.APIResources,
			metav1.APIResource{Name: k.Plural, SingularName: k.Singular, Namespaced: k.Namespaced, Kind: k.Kind, Verbs: verbs, ShortNames: k.ShortNames},
			metav1.APIResource{Name: k.Plural + "/status", Namespaced: k.Namespaced, Kind: k.Kind, Verbs: metav1.Verbs{"get", "patch", "update"}},
		)
	}
	if len(list.APIResources) == 0 {
		writeError(w, apierrors.NewNotFound(schemaGR(group, ""), group+"/"+ver), a.log)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func serveVersion(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, version.Info{
		GitVersion: BuildVersion(),
		GoVersion:  runtime.Version(),
		Compiler:   runtime.Compiler,
		Platform:   runtime.GOOS + "/" + runtime.GOARCH,
	})
}
