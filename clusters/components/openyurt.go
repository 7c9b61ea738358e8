package components

// OpenYurt for server-class edge sites: yurt-manager (its chart also
// carries OpenYurt's CRDs), then yurthub, each a release of its own in
// kube-system. The spec's values go to yurt-manager; those under the key
// "yurthub" go to yurthub.
func init() {
	Register(Component{
		Name: "openyurt", Title: "OpenYurt", Condition: ConditionOpenyurtReady,
		// The charts of openyurtio/openyurt (charts/yurt-manager and
		// charts/yurthub, published at https://openyurtio.github.io/charts,
		// both at 1.6.1), mirrored into the hub's registry.
		Namespace: "kube-system", Chart: "charts/yurt-manager", Version: "1.6.1",
		Installer: HelmInstaller{With: []Companion{{Chart: "yurthub"}}},
	})
}
