package components

import (
	"github.com/outpost-mesh/outpost/clusters"
)

// The core components: together they set CoreReady, which gates Ready.
func init() {
	// The tunnel agent with the platform API (`outpost agent`).
	Register(Component{
		Name: "outpost-agent", Title: "Outpost agent", Condition: clusters.ConditionCoreReady,
		Namespace: "outpost-system", Chart: "charts/outpost-agent", Version: "0.1.0",
		Values: clusterValues, Installer: HelmInstaller{},
	})
	// A DaemonSet that makes every node of the cluster an Outpost node
	// (image mirror on each host, OTA).
	Register(Component{
		Name: "outpost-node", Title: "Outpost node", Condition: clusters.ConditionCoreReady,
		Namespace: "outpost-system", Chart: "charts/outpost-node", Version: "0.1.0",
		Values: clusterValues, Installer: HelmInstaller{},
	})
}

// clusterValues tells a core chart which Cluster it serves.
func clusterValues(t *clusters.Target) map[string]any {
	return map[string]any{"cluster": t.Name}
}
