package components

import (
	"github.com/outpost-mesh/outpost/clusters"
)

// The core components: together they set CoreReady, which gates Ready.
// Their charts are the project's own (charts/, pushed by `outpost charts
// push` with no argument).
func init() {
	// The tunnel agent with the platform API (`outpost agent`).
	Register(Component{
		Name: "outpost-agent", Title: "Outpost agent", Condition: clusters.ConditionCoreReady,
		Namespace: "outpost-system", Chart: "charts/outpost-agent", Version: CoreChartsVersion,
		Values: coreValues, Installer: HelmInstaller{},
	})
	// A DaemonSet that makes every node of the cluster an Outpost node
	// (image mirror on each host, OTA).
	Register(Component{
		Name: "outpost-node", Title: "Outpost node", Condition: clusters.ConditionCoreReady,
		Namespace: "outpost-system", Chart: "charts/outpost-node", Version: CoreChartsVersion,
		Values: coreValues, Installer: HelmInstaller{},
	})
}

// coreValues tell a core chart which Cluster it serves and how to reach
// and pin the hub, and run the hub's own version.
func coreValues(t *clusters.Target, hub Hub) map[string]any {
	v := map[string]any{"cluster": t.Name}
	h := map[string]any{}
	if len(hub.Addrs) > 0 {
		h["addrs"] = hub.Addrs
	}
	if hub.CAFingerprint != "" {
		h["caFingerprint"] = hub.CAFingerprint
	}
	if len(h) > 0 {
		v["hub"] = h
	}
	if hub.Version != "" {
		v["image"] = map[string]any{"tag": hub.Version}
	}
	return v
}
