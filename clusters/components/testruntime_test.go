package components

// A runtime added as a new runtime would be: this file alone registers
// it (TestNewRuntimePickedUp); nothing else in the package names it.
func init() {
	Register(Component{
		Name: "testruntime", Title: "Test runtime", Condition: "TestruntimeReady",
		Namespace: "testruntime-system", Chart: "charts/testruntime", Version: "0.1.0",
		Installer: HelmInstaller{},
	})
}
