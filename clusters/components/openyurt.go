package components

// OpenYurt: yurt-manager and yurthub for server-class edge sites.
func init() {
	Register(Component{
		Name: "openyurt", Title: "OpenYurt", Condition: ConditionOpenyurtReady,
		// openyurtio/openyurt-helm's yurt-manager chart (which the
		// yurthub chart accompanies), mirrored into the hub's registry.
		Namespace: "kube-system", Chart: "charts/yurt-manager", Version: "1.6.1",
		Installer: HelmInstaller{},
	})
}
