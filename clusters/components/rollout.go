package components

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/kubectl/pkg/polymorphichelpers"
	"sigs.k8s.io/yaml"
)

// workloads are the kinds whose rollout PostInstall waits for, with their
// resources.
var workloads = map[schema.GroupKind]string{
	{Group: "apps", Kind: "Deployment"}:  "deployments",
	{Group: "apps", Kind: "DaemonSet"}:   "daemonsets",
	{Group: "apps", Kind: "StatefulSet"}: "statefulsets",
}

// rollout returns what the first workload of rel that has not rolled out
// says ("" when all have), as `kubectl rollout status` judges it.
func (c *conn) rollout(ctx context.Context, rel *release.Release) (string, error) {
	manifests := releaseutil.SplitManifests(rel.Manifest)
	keys := make([]string, 0, len(manifests))
	for k := range manifests {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(manifests[k]), &head); err != nil {
			continue
		}
		gv, err := schema.ParseGroupVersion(head.APIVersion)
		if err != nil {
			continue
		}
		gk := schema.GroupKind{Group: gv.Group, Kind: head.Kind}
		res, ok := workloads[gk]
		if !ok {
			continue
		}
		ns := head.Metadata.Namespace
		if ns == "" {
			ns = rel.Namespace
		}
		obj, err := c.dyn.Resource(gv.WithResource(res)).Namespace(ns).Get(ctx, head.Metadata.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return fmt.Sprintf("%s %s/%s is missing", strings.ToLower(head.Kind), ns, head.Metadata.Name), nil
		}
		if err != nil {
			return "", fmt.Errorf("read %s %s/%s: %w", strings.ToLower(head.Kind), ns, head.Metadata.Name, err)
		}
		viewer, err := polymorphichelpers.StatusViewerFor(gk)
		if err != nil {
			return "", err
		}
		msg, done, err := viewer.Status(obj, 0)
		if err != nil {
			return fmt.Sprintf("%s %s/%s: %v", strings.ToLower(head.Kind), ns, head.Metadata.Name, err), nil
		}
		if !done {
			return fmt.Sprintf("%s %s/%s: %s", strings.ToLower(head.Kind), ns, head.Metadata.Name, strings.TrimSpace(msg)), nil
		}
	}
	return "", nil
}
