package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/spf13/cobra"

	"github.com/outpost-mesh/outpost/node"
	"github.com/outpost-mesh/outpost/ota"
)

func newBlobCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "blob",
		Short: "Files in the hub's registry, for OTA steps' contentFrom",
	}
	var registry, repo string
	push := &cobra.Command{
		Use:   "push FILE",
		Short: "Upload a file to the hub's registry and print the contentFrom that writes it",
		Long: `Upload FILE as a blob of the hub's own registry (the hub's mirror, started
with --registry-push), authenticated with the API token of the credential
file. Print the contentFrom of a write or playbook step that uses it: each
site then fetches the file over the WAN once and its nodes share it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			creds, err := node.LoadCredentials(g.credentialPath())
			if err != nil {
				return err
			}
			l, err := newFileLayer(args[0])
			if err != nil {
				return err
			}
			r, err := name.NewRepository(registry+"/"+repo, name.Insecure)
			if err != nil {
				return fmt.Errorf("--registry %s --repository %s: %w", registry, repo, err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "uploading %s (%d bytes, %s) to %s\n", args[0], l.size, l.digest, r)
			if err := remote.WriteLayer(r, l, remote.WithAuth(&authn.Basic{Username: "outpost", Password: creds.Token}), remote.WithContext(cmd.Context())); err != nil {
				return fmt.Errorf("upload to %s: %w (is the hub's mirror at --registry %s, started with --registry-push?)", r, err, registry)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "contentFrom:\n  blob: %s\n  size: %d\n", l.digest, l.size)
			if repo != ota.DefaultContentRepository {
				fmt.Fprintf(cmd.OutOrStdout(), "  repository: %s\n", repo)
			}
			return nil
		},
	}
	push.Flags().StringVar(&registry, "registry", "127.0.0.1:5000", "address of the hub's registry (a hub member's --registry-addr)")
	push.Flags().StringVar(&repo, "repository", ota.DefaultContentRepository, "repository of the hub's registry to put the file in")
	cmd.AddCommand(push)
	return cmd
}

// fileLayer is a file uploaded as a blob as it is (no compression).
type fileLayer struct {
	path   string
	digest v1.Hash
	size   int64
}

func newFileLayer(path string) (*fileLayer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return &fileLayer{path: path, size: n, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}}, nil
}

// Digest and DiffID are the file's SHA-256.
func (l *fileLayer) Digest() (v1.Hash, error) { return l.digest, nil }

// DiffID is the digest: the blob is not compressed.
func (l *fileLayer) DiffID() (v1.Hash, error) { return l.digest, nil }

// Compressed opens the file.
func (l *fileLayer) Compressed() (io.ReadCloser, error) { return os.Open(l.path) }

// Uncompressed opens the file.
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return os.Open(l.path) }

// Size is the file's size.
func (l *fileLayer) Size() (int64, error) { return l.size, nil }

// MediaType says the blob is opaque bytes.
func (l *fileLayer) MediaType() (types.MediaType, error) { return "application/octet-stream", nil }
