package components

// etcd for edge autonomy: the site keeps a datastore when the WAN is
// down.
func init() {
	Register(Component{
		Name: "etcd", Title: "etcd", Condition: ConditionEtcdReady,
		// Bitnami's etcd chart (oci://registry-1.docker.io/bitnamicharts/etcd),
		// mirrored into the hub's registry.
		Namespace: "etcd-system", Chart: "charts/etcd", Version: "12.0.18",
		Installer: HelmInstaller{},
	})
}
