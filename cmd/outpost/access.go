package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/node"
)

func newAccessCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "access", Short: "Manage API access tokens (admin only)"}
	var role string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create NAME --role admin|operator|viewer",
		Short: "Create an API token; only the token goes to stdout, once",
		Long: `Create an API token with a role: admin (everything), operator (tasks, syncs,
clusters, registries, sites and node labels; no token management) or viewer
(read only; no output of tasks annotated ota.outpost.dev/secret-output=true).
The secret is made here and only its hash reaches the hub:

  TOKEN=$(outpost access create ci --role operator --ttl 720h)`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch role {
			case node.RoleAdmin, node.RoleOperator, node.RoleViewer:
			default:
				return fmt.Errorf("--role %q must be admin, operator or viewer", role)
			}
			if ttl < 0 {
				return errors.New("--ttl must not be negative")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			defer cancel()
			c, r, err := connect(ctx, g, "accesstokens")
			if err != nil {
				return err
			}
			b := make([]byte, 32)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			secret := base64.RawURLEncoding.EncodeToString(b)
			sum := sha256.Sum256([]byte(secret))
			spec := node.AccessTokenSpec{Role: role, SecretHash: hex.EncodeToString(sum[:])}
			if ttl > 0 {
				exp := metav1.NewTime(time.Now().Add(ttl).UTC().Truncate(time.Second))
				spec.Expires = &exp
			}
			body, err := json.Marshal(map[string]any{
				"apiVersion": r.apiVersion(), "kind": r.Kind, "metadata": map[string]any{"name": args[0]}, "spec": spec,
			})
			if err != nil {
				return err
			}
			if _, err := c.do(ctx, http.MethodPost, r.path("", ""), body, "application/json", ""); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "access token %s created (role %s, expires %s); it is shown only now\n", args[0], role, expiryText(spec.Expires))
			fmt.Fprintln(cmd.OutOrStdout(), args[0]+"."+secret)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "admin, operator or viewer")
	create.Flags().DurationVar(&ttl, "ttl", 0, "how long the token is valid (0: no expiry)")

	var output string
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List access tokens: name, role, expiry, creation (never the secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutputOf(output, "table"); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			defer cancel()
			c, r, err := connect(ctx, g, "accesstokens")
			if err != nil {
				return err
			}
			raw, err := c.do(ctx, http.MethodGet, r.path("", ""), nil, "", "")
			if err != nil {
				return err
			}
			switch output {
			case "name":
				return printNames(cmd.OutOrStdout(), r, raw)
			case "json", "yaml":
				return printObject(cmd.OutOrStdout(), raw, output)
			}
			var list struct {
				Items []struct {
					Metadata metav1.ObjectMeta    `json:"metadata"`
					Spec     node.AccessTokenSpec `json:"spec"`
				} `json:"items"`
			}
			if err := json.Unmarshal(raw, &list); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tEXPIRES\tCREATED")
			for _, t := range list.Items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Metadata.Name, t.Spec.Role, expiryText(t.Spec.Expires), t.Metadata.CreationTimestamp.UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an access token: it is refused from the next call on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			defer cancel()
			c, r, err := connect(ctx, g, "accesstokens")
			if err != nil {
				return err
			}
			if _, err := c.do(ctx, http.MethodDelete, r.path("", args[0]), nil, "", ""); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "access token %s revoked\n", args[0])
			return nil
		},
	}
	addOutputFlag(ls, &output, "table")
	cmd.AddCommand(create, ls, revoke)
	return cmd
}
