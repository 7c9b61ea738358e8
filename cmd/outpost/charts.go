package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/outpost-mesh/outpost/clusters/components"
	"github.com/outpost-mesh/outpost/node"
)

func newChartsCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "charts",
		Short: "Helm charts in the hub's registry, for clusters' components",
	}
	var registry, repo string
	var secure bool
	push := &cobra.Command{
		Use:   "push [DIR|TGZ...]",
		Short: "Push Helm charts to the hub's registry",
		Long: `Package each chart (a chart directory or a .tgz made by helm package or
helm pull) and push it to the hub's own registry (the hub's mirror, started
with --registry-push) as an OCI artifact REGISTRY/charts/NAME:VERSION,
authenticated with the API token of the credential file. The hub installs
clusters' components from there, so sites need no internet: mirror each
component's upstream chart at the version its default names, e.g.

  helm pull oci://ghcr.io/loft-sh/charts/vcluster --version 0.28.0
  outpost charts push vcluster-0.28.0.tgz

With no argument it pushes the project's own charts, built into this
binary: outpost-agent and outpost-node, the core components.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			creds, err := node.LoadCredentials(g.credentialPath())
			if err != nil {
				return err
			}
			cfg := components.OCIChartsConfig{Host: registry, PlainHTTP: !secure, Username: "outpost", Password: creds.Token}
			pushed := func(refs []string, err error) error {
				if errors.Is(err, components.ErrPush) {
					return fmt.Errorf("%w (is the hub's mirror at --registry %s, started with --registry-push?)", err, registry)
				}
				for _, ref := range refs {
					fmt.Fprintln(cmd.OutOrStdout(), "pushed oci://"+ref)
				}
				return err
			}
			if len(args) == 0 {
				return pushed(components.PushCoreCharts(cfg, repo))
			}
			for _, src := range args {
				ref, err := components.PushChart(cfg, repo, src)
				if err != nil {
					return pushed(nil, err)
				}
				_ = pushed([]string{ref}, nil)
			}
			return nil
		},
	}
	push.Flags().StringVar(&registry, "registry", "127.0.0.1:5000", "address of the hub's registry (a hub member's --registry-addr)")
	push.Flags().StringVar(&repo, "repository", components.ChartsRepository, "repository of the hub's registry the charts go under")
	push.Flags().BoolVar(&secure, "https", false, "talk HTTPS to the registry (the hub's mirror serves HTTP)")
	cmd.AddCommand(push)
	return cmd
}
