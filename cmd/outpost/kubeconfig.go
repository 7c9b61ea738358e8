package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/outpost-mesh/outpost/internal/atomicfile"
	"github.com/outpost-mesh/outpost/node"
)

func newKubeconfigCommand(g *globals) *cobra.Command {
	var file, context string
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print a kubeconfig for the hub's API, so kubectl works on Outpost's resources",
		Long: `Print a kubeconfig that points kubectl at the hub's admin API: the server
URL, the CA and the token of your credential file (--config). kubectl get,
describe, apply (client-side) and get --watch work on every Outpost kind.`,
		Example: `  outpost kubeconfig > ~/.kube/outpost && export KUBECONFIG=~/.kube/outpost
  outpost kubeconfig --file ./kubeconfig
  kubectl --kubeconfig ./kubeconfig get tasks`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			creds, err := node.LoadCredentials(g.credentialPath())
			if err != nil {
				return err
			}
			b, err := clientcmd.Write(*kubeconfig(creds, context))
			if err != nil {
				return err
			}
			if file == "" {
				_, err = cmd.OutOrStdout().Write(b)
				return err
			}
			// It holds the token: readable by its owner only.
			if err := atomicfile.Write(file, b, 0o600); err != nil {
				return fmt.Errorf("--file %s: %w", file, err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s; use it with: kubectl --kubeconfig %s get tasks\n", file, file)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "write the kubeconfig to this file (mode 0600) instead of stdout")
	cmd.Flags().StringVar(&context, "context", "outpost", "name of the kubeconfig's cluster, user and context")
	return cmd
}

// kubeconfig is a one-context kubeconfig for the credentials.
func kubeconfig(creds *node.Credentials, name string) *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: creds.Server, CertificateAuthorityData: []byte(creds.CA)}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: creds.Token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	return cfg
}
