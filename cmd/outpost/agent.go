package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/outpost-mesh/outpost/clusters/tunnel"
	"github.com/outpost-mesh/outpost/node"
)

// inClusterServerName is the name the API server's certificate carries
// for in-cluster clients (kubeadm, k3s and managed clusters all add it).
const inClusterServerName = "kubernetes.default.svc"

func newAgentCommand() *cobra.Command {
	cfg := tunnel.DefaultAgentConfig()
	var kubeconfig, logLevel, logFormat string
	var inCluster bool
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a proxy cluster's agent: the reverse tunnel from the edge cluster to the hub",
		Long: `Run the agent of a proxy cluster. It dials the hub over QUIC (nothing at the edge
listens), authenticates with the cluster token, and carries the connections the
hub accepts on the cluster's tunnel ports to the cluster's API server, with TLS
end to end. It reconnects by itself and follows the hub leader.

Inside the cluster it runs with --in-cluster (see ` + "`outpost cluster agent-manifest`" + `);
elsewhere it reads --kubeconfig. Every flag can also be set as OUTPOST_<FLAG>
(e.g. OUTPOST_TOKEN).`,
		Example: `  outpost agent --cluster edge-a --hub hub.example.net:7443 --token oct_... --ca-fingerprint 3f5a... --in-cluster`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := layerConfig(cmd.Flags(), ""); err != nil {
				return err
			}
			logger, err := newLogger(logLevel, logFormat)
			if err != nil {
				return err
			}
			rc, err := edgeRESTConfig(kubeconfig, inCluster)
			if err != nil {
				return err
			}
			if cfg.KubeAPIAddr, cfg.Report, err = tunnel.EdgeAPI(rc); err != nil {
				return fmt.Errorf("edge API server: %w", err)
			}
			cfg.Report.Version = node.BuildVersion()
			cfg.Refresh = func() (tunnel.Report, error) {
				_, r, err := tunnel.EdgeAPI(rc)
				r.Version = node.BuildVersion()
				return r, err
			}
			cfg.Token, cfg.CAFingerprint = splitClusterToken(cfg.Token, cfg.CAFingerprint)
			cfg.Logger = logger
			a, err := tunnel.NewAgent(cfg)
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Cluster, "cluster", "", "name of the Cluster at the hub")
	f.StringSliceVar(&cfg.HubAddrs, "hub", nil, "QUIC address of a hub member, host:port (several: tried in turn)")
	f.StringVar(&cfg.Token, "token", "", "the cluster token that outpost cluster create --proxy printed (TOKEN.FINGERPRINT; better: OUTPOST_TOKEN)")
	f.StringVar(&cfg.CAFingerprint, "ca-fingerprint", "", "SHA-256 of the mesh CA (hex), which the hub's certificate must chain to; not needed when the token ends in .<fingerprint>")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the edge cluster's API server")
	f.BoolVar(&inCluster, "in-cluster", false, "use the pod's service account to reach the API server")
	f.StringVar(&cfg.PlatformAddr, "platform-addr", "", "host:port of the platform API behind the cluster's platform port (default: none)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	return cmd
}

// edgeRESTConfig is the client configuration of the edge API server:
// --kubeconfig, or the pod's with --in-cluster (exactly one).
func edgeRESTConfig(kubeconfig string, inCluster bool) (*rest.Config, error) {
	switch {
	case kubeconfig != "" && inCluster:
		return nil, errors.New("--kubeconfig and --in-cluster contradict each other: give one")
	case inCluster:
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("--in-cluster: %w", err)
		}
		rc.ServerName = inClusterServerName // the service IP the host names may change; this name does not
		return rc, nil
	case kubeconfig != "":
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
		return rc, nil
	}
	return nil, errors.New("give --kubeconfig PATH or --in-cluster: the agent needs to reach the edge cluster's API server")
}

// splitClusterToken takes the CA fingerprint off a token written as
// <token>.<fingerprint>, unless --ca-fingerprint gave one.
func splitClusterToken(token, fingerprint string) (string, string) {
	i := strings.LastIndexByte(token, '.')
	if i < 0 || len(token)-i-1 != 64 {
		return token, fingerprint
	}
	if fingerprint == "" {
		fingerprint = token[i+1:]
	}
	return token[:i], fingerprint
}
