package main

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// globals are the flags every client verb shares.
type globals struct {
	config    string
	namespace string
}

func newRootCommand() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "outpost",
		Short:         "Get edge infrastructure ready for applications",
		Long:          "outpost runs on every edge host (outpost node) and is the operator's client for the hub's API.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.config, "config", "", "credential file of the hub's admin API (default $OUTPOST_CONFIG, else ./outpost-data/admin.yaml)")
	root.PersistentFlags().StringVarP(&g.namespace, "namespace", "n", "default", "namespace of namespaced resources")
	root.AddCommand(
		newNodeCommand(),
		newAgentCommand(),
		newGetCommand(g),
		newApplyCommand(g),
		newDeleteCommand(g),
		newDescribeCommand(g),
		newStatusCommand(),
		newVersionCommand(g),
		newTokenCommand(g),
		newTaskCommand(g),
		newClusterCommand(g),
		newImagesCommand(),
		newBlobCommand(g),
		newKubeconfigCommand(g), // kubeconfig.go
		newCompletionCommand(),  // completion.go
		newAccessCommand(g),     // access.go
		newAuditCommand(g),      // audit.go
		newBackupCommand(g),     // backup.go
		newRestoreCommand(),     // backup.go
		newChartsCommand(g),     // charts.go
	)
	root.CompletionOptions.DisableDefaultCmd = true // completion.go has its own, with resource names
	addCompletions(root, g)                         // completion.go
	addUsageHints(root)                             // usage.go
	return root
}

// credentialPath finds the admin credential file: --config, then
// $OUTPOST_CONFIG, then ./outpost-data/admin.yaml, then
// ~/.config/outpost/admin.yaml.
func (g *globals) credentialPath() string {
	if g.config != "" {
		return g.config
	}
	if p := os.Getenv("OUTPOST_CONFIG"); p != "" {
		return p
	}
	local := filepath.Join("outpost-data", "admin.yaml")
	if _, err := os.Stat(local); err == nil {
		return local
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, ".config", "outpost", "admin.yaml")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return local
}
