package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/outpost-mesh/outpost/clusters"
	"github.com/outpost-mesh/outpost/internal/atomicfile"
	"github.com/outpost-mesh/outpost/node"
)

// agentNamespace is where agent-manifest puts the agent.
const agentNamespace = "outpost-system"

func newClusterCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Register edge Kubernetes clusters and reach them"}
	cmd.AddCommand(newClusterCreateCommand(g), newClusterTokenCommand(g), newClusterKubeconfigCommand(g), newClusterAgentManifestCommand(g))
	return cmd
}

func newClusterCreateCommand(g *globals) *cobra.Command {
	var kubeconfig, endpoint, provider string
	var proxy, external bool
	cmd := &cobra.Command{
		Use:   "create NAME (--kubeconfig FILE | --proxy)",
		Short: "Register a cluster: reached directly with a kubeconfig, or through its agent's tunnel",
		Long: `Register an edge Kubernetes cluster with the hub (a shortcut for applying a
Cluster). With --kubeconfig the hub connects directly; the file is sealed at
rest and never returned by the API. With --proxy the cluster's agent dials the
hub; the cluster token the agent needs goes to stdout, and only its hash
reaches the hub:

  outpost cluster create store-12 --kubeconfig store-12.yaml
  TOKEN=$(outpost cluster create store-13 --proxy)
  outpost cluster agent-manifest store-13 --token "$TOKEN" | kubectl apply -f -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			conn := clusters.Connection{}
			var agentToken string
			switch {
			case proxy && kubeconfig != "":
				return errors.New("--proxy and --kubeconfig contradict each other: a proxy cluster is reached through its agent")
			case kubeconfig != "":
				b, err := os.ReadFile(kubeconfig)
				if err != nil {
					return fmt.Errorf("--kubeconfig: %w", err)
				}
				conn = clusters.Connection{Type: clusters.ConnectionDirect, Kubeconfig: b, KubernetesAPIEndpoint: endpoint}
			case proxy:
				if endpoint != "" {
					return errors.New("--endpoint is for direct clusters: the hub fills a proxy cluster's")
				}
				tok, hash, err := clusters.NewToken()
				if err != nil {
					return err
				}
				if agentToken, err = agentTokenFor(g, tok); err != nil {
					return err
				}
				conn = clusters.Connection{Type: clusters.ConnectionProxy, TokenHash: hash}
			default:
				return errors.New("say how the hub reaches the cluster: --kubeconfig FILE (direct) or --proxy (its agent dials the hub)")
			}
			spec := clusters.ClusterSpec{Provider: provider, Connection: conn, ExternalKubeAPIEnabled: external}
			body, err := json.Marshal(map[string]any{
				"apiVersion": clusters.ClusterKind.APIVersion(), "kind": clusters.ClusterKind.Kind,
				"metadata": map[string]any{"name": name}, "spec": spec,
			})
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			defer cancel()
			c, r, err := connect(ctx, g, "clusters")
			if err != nil {
				return err
			}
			if _, err := c.do(ctx, http.MethodPost, r.path("", ""), body, "application/json", ""); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "cluster %s created (%s); watch it with: outpost get cluster %s\n", name, conn.Type, name)
			if agentToken != "" {
				fmt.Fprintln(cmd.OutOrStdout(), agentToken)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file the hub connects with (a direct cluster)")
	f.BoolVar(&proxy, "proxy", false, "the cluster's agent dials the hub (no inbound port at the edge); prints the cluster token")
	f.StringVar(&endpoint, "endpoint", "", "direct clusters: API server URL that replaces the kubeconfig's, as the hub reaches it")
	f.StringVar(&provider, "provider", "", "where the cluster comes from (k3s, kubeadm, eks, ...)")
	f.BoolVar(&external, "external", false, "proxy clusters: bind the cluster's tunnel port on the hub's public address, not loopback")
	return cmd
}

func newClusterTokenCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "token NAME",
		Short: "Issue a new cluster token for a proxy cluster's agent (the old one stops working)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := rotateToken(cmd.Context(), g, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
}

// rotateToken makes a new cluster token, stores its hash in the Cluster
// and returns the agent token.
func rotateToken(ctx context.Context, g *globals, name string) (string, error) {
	tok, hash, err := clusters.NewToken()
	if err != nil {
		return "", err
	}
	agentToken, err := agentTokenFor(g, tok)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	c, r, err := connect(ctx, g, "clusters")
	if err != nil {
		return "", err
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"connection": map[string]any{"tokenHash": hash}}})
	if _, err := c.do(ctx, http.MethodPatch, r.path("", name), patch, "application/merge-patch+json", ""); err != nil {
		return "", err
	}
	fmt.Fprintf(os.Stderr, "new cluster token for %s issued; the previous one no longer works\n", name)
	return agentToken, nil
}

// agentTokenFor appends the mesh CA's fingerprint, which the agent pins.
func agentTokenFor(g *globals, token string) (string, error) {
	fp, err := meshFingerprint(g)
	if err != nil {
		return "", err
	}
	return clusters.FormatAgentToken(token, fp), nil
}

// meshFingerprint is the SHA-256 of the mesh CA in the credential file.
func meshFingerprint(g *globals) (string, error) {
	creds, err := node.LoadCredentials(g.credentialPath())
	if err != nil {
		return "", err
	}
	return caFingerprint(creds.CA)
}

func newClusterKubeconfigCommand(g *globals) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "kubeconfig NAME",
		Short: "Write a kubeconfig for the cluster (admins only): kubectl --kubeconfig FILE get ns",
		Long: `Write a kubeconfig that reaches the cluster from here: for a direct cluster the
one it was registered with; for a proxy cluster one that goes through the
hub's tunnel port, with TLS verified end to end against the edge API server
(tls-server-name). It carries credentials: written with mode 0600.

  outpost cluster kubeconfig store-13 --file store-13.yaml
  kubectl --kubeconfig store-13.yaml get namespaces`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			defer cancel()
			c, r, err := connect(ctx, g, "clusters")
			if err != nil {
				return err
			}
			kc, err := c.do(ctx, http.MethodGet, r.path("", args[0])+"/kubeconfig", nil, "", "application/yaml")
			if err != nil {
				return err
			}
			if _, err := clientcmd.Load(kc); err != nil {
				return fmt.Errorf("the hub sent no kubeconfig: %w", err)
			}
			if loopbackOnly(kc, c.server) {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: cluster %s's tunnel port is bound on the hub leader's loopback (spec.externalKubeAPIEnabled is false), so this kubeconfig works on the hub leader only; to use it from here, set spec.externalKubeAPIEnabled: true (outpost apply) or create the cluster with --external\n", args[0])
			}
			if file == "" || file == "-" {
				_, err = cmd.OutOrStdout().Write(kc)
				return err
			}
			if err := atomicfile.Write(file, kc, 0o600); err != nil {
				return fmt.Errorf("--file %s: %w", file, err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s; try: kubectl --kubeconfig %s get namespaces\n", file, file)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "write the kubeconfig to this file (mode 0600) instead of stdout")
	return cmd
}

// loopbackOnly reports whether kubeconfig kc reaches its cluster at a
// loopback address while the hub's API is elsewhere: the kubeconfig of a
// proxy cluster whose tunnel port the hub leader binds on its loopback
// only, of no use on another machine.
func loopbackOnly(kc []byte, hubServer string) bool {
	cfg, err := clientcmd.Load(kc)
	if err != nil {
		return false
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || cfg.Clusters[ctx.Cluster] == nil {
		return false
	}
	isLoopback := func(raw string) bool {
		u, err := url.Parse(raw)
		if err != nil {
			return false
		}
		if u.Hostname() == "localhost" {
			return true
		}
		ip := net.ParseIP(u.Hostname())
		return ip != nil && ip.IsLoopback()
	}
	return isLoopback(cfg.Clusters[ctx.Cluster].Server) && !isLoopback(hubServer)
}

func newClusterAgentManifestCommand(g *globals) *cobra.Command {
	var image, hub, token string
	cmd := &cobra.Command{
		Use:   "agent-manifest NAME",
		Short: "Print what to kubectl apply in a proxy cluster: its agent, which dials the hub",
		Long: `Print the manifests that run a proxy cluster's agent: the outpost-system
namespace, a service account bound to cluster-admin (the hub manages the
cluster through it), a Secret with the cluster token and a Deployment running
outpost agent --cluster NAME, which pins the hub by the mesh CA's fingerprint
(--ca-fingerprint). Without --token a new token is issued, and the previous one
stops working.

  outpost cluster agent-manifest store-13 --hub hub.example.net:7443 | kubectl apply -f -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if hub == "" {
				creds, err := node.LoadCredentials(g.credentialPath())
				if err != nil {
					return err
				}
				u, err := url.Parse(creds.Server)
				if err != nil || u.Hostname() == "" {
					return fmt.Errorf("--hub is required: the credential file names no hub address (%q)", creds.Server)
				}
				hub = net.JoinHostPort(u.Hostname(), "7443")
			}
			if _, _, err := net.SplitHostPort(hub); err != nil {
				return fmt.Errorf("--hub %q must be host:port (a hub member's QUIC address)", hub)
			}
			if token == "" {
				var err error
				if token, err = rotateToken(cmd.Context(), g, name); err != nil {
					return err
				}
			}
			_, fp, err := clusters.ParseAgentToken(token)
			if err != nil {
				return fmt.Errorf("--token: %w", err)
			}
			if mesh, err := meshFingerprint(g); err == nil && !strings.EqualFold(fp, mesh) {
				return fmt.Errorf("--token: its CA fingerprint %s is not this mesh's (%s): the token is for another hub", fp, mesh)
			}
			return writeAgentManifest(cmd.OutOrStdout(), name, image, hub, token, fp)
		},
	}
	f := cmd.Flags()
	f.StringVar(&image, "image", "ghcr.io/outpost-mesh/outpost:"+node.BuildVersion(), "container image with the outpost binary")
	f.StringVar(&hub, "hub", "", "hub member's QUIC address the agent dials, host:port (default: the API's host, port 7443)")
	f.StringVar(&token, "token", "", "the cluster token that outpost cluster create --proxy printed (default: issue a new one)")
	return cmd
}

// writeAgentManifest prints the agent's objects as one YAML stream. The
// Deployment pins the hub by the mesh CA's fingerprint in its arguments,
// so the pin is in plain sight and survives a Secret that holds a bare
// token.
func writeAgentManifest(w io.Writer, cluster, image, hub, token, fingerprint string) error {
	labels := map[string]string{"app.kubernetes.io/name": "outpost-agent", "outpost.dev/cluster": cluster}
	meta := func(kind, name string) (metav1.TypeMeta, metav1.ObjectMeta) {
		return metav1.TypeMeta{APIVersion: apiVersionOf(kind), Kind: kind}, metav1.ObjectMeta{Name: name, Namespace: agentNamespace, Labels: labels}
	}
	ns := &corev1.Namespace{}
	ns.TypeMeta, ns.ObjectMeta = meta("Namespace", agentNamespace)
	ns.Namespace = ""
	sa := &corev1.ServiceAccount{}
	sa.TypeMeta, sa.ObjectMeta = meta("ServiceAccount", "outpost-agent")
	crb := &rbacv1.ClusterRoleBinding{
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "outpost-agent", Namespace: agentNamespace}},
	}
	crb.TypeMeta, crb.ObjectMeta = meta("ClusterRoleBinding", "outpost-agent")
	crb.Namespace = ""
	secret := &corev1.Secret{Type: corev1.SecretTypeOpaque, StringData: map[string]string{"token": token}}
	secret.TypeMeta, secret.ObjectMeta = meta("Secret", "outpost-agent-token")
	one := int32(1)
	f := false
	t := true
	dep := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{
		Replicas: &one,
		Selector: &metav1.LabelSelector{MatchLabels: labels},
		Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: corev1.PodSpec{
				ServiceAccountName: "outpost-agent",
				Containers: []corev1.Container{{
					Name: "agent", Image: image,
					Args: []string{"agent", "--cluster", cluster, "--hub", hub, "--in-cluster", "--ca-fingerprint", fingerprint, "--token", "$(OUTPOST_CLUSTER_TOKEN)"},
					Env: []corev1.EnvVar{{Name: "OUTPOST_CLUSTER_TOKEN", ValueFrom: &corev1.EnvVarSource{
						SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "outpost-agent-token"}, Key: "token"},
					}}},
					SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &f, RunAsNonRoot: &t, ReadOnlyRootFilesystem: &t},
				}},
			},
		},
	}}
	dep.TypeMeta, dep.ObjectMeta = meta("Deployment", "outpost-agent")
	// The hub's outpost-agent component (a Helm release of that name in
	// agentNamespace) adopts these and keeps them up to date.
	for _, m := range []*metav1.ObjectMeta{&sa.ObjectMeta, &crb.ObjectMeta, &dep.ObjectMeta} {
		m.Labels = maps.Clone(labels)
		m.Labels["app.kubernetes.io/managed-by"] = "Helm"
		m.Annotations = map[string]string{"meta.helm.sh/release-name": "outpost-agent", "meta.helm.sh/release-namespace": agentNamespace}
	}
	var b strings.Builder
	for i, obj := range []any{ns, sa, crb, secret, dep} {
		y, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func apiVersionOf(kind string) string {
	switch kind {
	case "Deployment":
		return "apps/v1"
	case "ClusterRoleBinding":
		return "rbac.authorization.k8s.io/v1"
	}
	return "v1"
}
