package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/node"
)

func newTokenCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage join tokens"}
	var site string
	var ttl time.Duration
	var uses int
	create := &cobra.Command{
		Use:   "create --site SITE",
		Short: "Create a join token; only the token goes to stdout",
		Long: `Create a join token for a site. The secret is made here and only its hash
reaches the hub; the token printed carries the secret and the mesh CA's
fingerprint, which the joining node pins:

  TOKEN=$(outpost token create --site factory-berlin --uses 10)
  outpost node --join HUB:7443 --token "$TOKEN" --site factory-berlin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if site == "" {
				return errors.New("--site is required: the site the token lets nodes join")
			}
			if ttl < 0 || uses < 0 {
				return errors.New("--ttl and --uses must not be negative")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			defer cancel()
			creds, err := node.LoadCredentials(g.credentialPath())
			if err != nil {
				return err
			}
			fp, err := caFingerprint(creds.CA)
			if err != nil {
				return err
			}
			c, r, err := connect(ctx, g, "jointokens")
			if err != nil {
				return err
			}
			b := make([]byte, 24)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			secret := base64.RawURLEncoding.EncodeToString(b)
			sum := sha256.Sum256([]byte(secret))
			id := "jt-" + hex.EncodeToString(b[:4])
			spec := node.JoinTokenSpec{Site: site, SecretHash: hex.EncodeToString(sum[:]), MaxUses: uses}
			if ttl > 0 {
				exp := metav1.NewTime(time.Now().Add(ttl).UTC().Truncate(time.Second))
				spec.Expires = &exp
			}
			body, err := json.Marshal(map[string]any{
				"apiVersion": r.apiVersion(), "kind": r.Kind,
				"metadata": map[string]any{"name": id}, "spec": spec,
			})
			if err != nil {
				return err
			}
			if _, err := c.do(ctx, http.MethodPost, r.path("", ""), body, "application/json", ""); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "join token %s for site %s created (uses: %s, expires: %s)\n", id, site, usesText(uses), expiryText(spec.Expires))
			fmt.Fprintln(cmd.OutOrStdout(), id+"."+secret+"."+fp)
			return nil
		},
	}
	create.Flags().StringVar(&site, "site", "", "site the token joins nodes to")
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid (0: no expiry)")
	create.Flags().IntVar(&uses, "uses", 0, "how many nodes may join with it (0: unlimited)")
	cmd.AddCommand(create)
	return cmd
}

func usesText(n int) string {
	if n == 0 {
		return "unlimited"
	}
	return fmt.Sprint(n)
}

func expiryText(t *metav1.Time) string {
	if t == nil {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

// caFingerprint is the SHA-256 of the CA certificate in PEM, hex encoded.
func caFingerprint(caPEM string) (string, error) {
	block, _ := pem.Decode([]byte(caPEM))
	if block == nil {
		return "", errors.New("the credential file has no CA certificate; recreate it from the hub's data dir")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:]), nil
}
