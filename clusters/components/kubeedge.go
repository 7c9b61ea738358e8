package components

// KubeEdge: cloudcore for constrained gateways.
func init() {
	Register(Component{
		Name: "kubeedge", Title: "KubeEdge", Condition: ConditionKubeedgeReady,
		// kubeedge/kubeedge's cloudcore chart (manifests/charts/cloudcore),
		// mirrored into the hub's registry.
		Namespace: "ke-system", Chart: "charts/cloudcore", Version: "1.21.0",
		Installer: HelmInstaller{},
	})
}
