package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/spf13/cobra"

	"github.com/outpost-mesh/outpost/node"
)

// newImagesPushCommand is `outpost images push SRC DEST`: load an image
// into the hub's own registry from a file, as an air-gapped headquarters
// does with no other OCI client at hand.
func newImagesPushCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "push SRC HOST/REPOSITORY:TAG",
		Short: "Push an image from an OCI layout directory or a docker-save tarball to the hub's registry",
		Long: `Push an image to the hub's own registry (a hub member's mirror, started with
--registry-push), authenticated with the API token of the credential file.
SRC is an OCI image layout directory (DIR, or DIR:TAG to pick one of its
images by its org.opencontainers.image.ref.name) or a tarball written by
docker save. Multi-platform indexes in a layout are pushed whole.

Any OCI client does the same, e.g.
  skopeo copy --dest-creds outpost:$TOKEN oci:DIR:TAG docker://HOST/REPOSITORY:TAG`,
		Example: "  outpost images push examples/hello-image:v1 127.0.0.1:5000/demo/hello:v1",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			creds, err := node.LoadCredentials(globalsOf(cmd).credentialPath())
			if err != nil {
				return err
			}
			dst, err := name.ParseReference(args[1], name.Insecure)
			if err != nil {
				return fmt.Errorf("destination %q: %w", args[1], err)
			}
			opts := []remote.Option{remote.WithAuth(&authn.Basic{Username: "outpost", Password: creds.Token}), remote.WithContext(cmd.Context())}
			src := args[0]
			if st, err := os.Stat(src); err == nil && !st.IsDir() {
				img, err := tarball.ImageFromPath(src, nil)
				if err != nil {
					return fmt.Errorf("%s: %w (want an OCI layout directory or a docker-save tarball)", src, err)
				}
				return pushed(cmd, dst, remote.Write(dst, img, opts...), img)
			}
			dir, tag := src, ""
			if i := strings.LastIndexByte(src, ':'); i > 0 && !strings.Contains(src[i:], string(filepath.Separator)) {
				dir, tag = src[:i], src[i+1:]
			}
			idx, err := layout.ImageIndexFromPath(dir)
			if err != nil {
				return fmt.Errorf("%s: %w (want an OCI layout directory or a docker-save tarball)", dir, err)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				return err
			}
			var pick *v1.Descriptor
			for i, d := range im.Manifests {
				if tag == "" || d.Annotations["org.opencontainers.image.ref.name"] == tag {
					if pick != nil {
						return fmt.Errorf("%s holds several images: name one as %s:TAG", dir, dir)
					}
					pick = &im.Manifests[i]
				}
			}
			if pick == nil {
				return fmt.Errorf("%s has no image tagged %q", dir, tag)
			}
			if pick.MediaType.IsIndex() {
				sub, err := idx.ImageIndex(pick.Digest)
				if err != nil {
					return err
				}
				err = remote.WriteIndex(dst, sub, opts...)
				if err == nil {
					fmt.Fprintf(cmd.OutOrStdout(), "pushed %s@%s (an index)\n", dst, pick.Digest)
				}
				return pushHint(err, dst)
			}
			img, err := idx.Image(pick.Digest)
			if err != nil {
				return err
			}
			return pushed(cmd, dst, remote.Write(dst, img, opts...), img)
		},
	}
}

func pushed(cmd *cobra.Command, dst name.Reference, err error, img v1.Image) error {
	if err != nil {
		return pushHint(err, dst)
	}
	d, _ := img.Digest()
	fmt.Fprintf(cmd.OutOrStdout(), "pushed %s@%s\n", dst, d)
	return nil
}

func pushHint(err error, dst name.Reference) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("push %s: %w (the hub's mirror must run with --registry-push, and the token may push: admin or operator)", dst, err)
}

// newImagesPullCommand is `outpost images pull REF`: a pull through a
// node's mirror that reads every blob, checks each digest and says how
// long it took: what a container runtime would get, without one.
func newImagesPullCommand() *cobra.Command {
	var mirror, platform string
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image through a node's mirror and check every digest",
		Long: `Pull REF through the node's mirror (--mirror, the node's --registry-addr),
reading every blob and checking its digest, as a container runtime would.
A REF on another registry is asked for with ?ns=<registry>, as containerd
does; a REF on the mirror's own address is the hub's own registry.`,
		Example: "  outpost images pull 127.0.0.1:5000/demo/hello:v1\n  outpost images pull docker.io/library/alpine:3.20 --platform linux/arm64",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := name.ParseReference(args[0], name.Insecure)
			if err != nil {
				return fmt.Errorf("%q: %w", args[0], err)
			}
			plat, err := v1.ParsePlatform(platform)
			if err != nil {
				return fmt.Errorf("--platform %q: %w", platform, err)
			}
			ns := ref.Context().RegistryStr()
			switch ns {
			case mirror:
				ns = ""
			case name.DefaultRegistry:
				ns = "docker.io"
			}
			tr := &mirrorTransport{mirror: mirror, ns: ns, base: http.DefaultTransport}
			start := time.Now()
			img, err := remote.Image(ref, remote.WithTransport(tr), remote.WithPlatform(*plat), remote.WithContext(cmd.Context()))
			if err != nil {
				return fmt.Errorf("pull %s through %s: %w (is a node's mirror at --mirror %s?)", ref, mirror, err, mirror)
			}
			layers, err := img.Layers()
			if err != nil {
				return err
			}
			var total int64
			for _, l := range layers {
				rc, err := l.Compressed() // verified against its digest as it is read
				if err != nil {
					return err
				}
				n, err := io.Copy(io.Discard, rc)
				rc.Close()
				total += n
				if err != nil {
					d, _ := l.Digest()
					return fmt.Errorf("blob %s: %w", d, err)
				}
			}
			d, _ := img.Digest()
			secs := time.Since(start).Seconds()
			fmt.Fprintf(cmd.OutOrStdout(), "pulled %s@%s through %s: %d layers, %d bytes in %.2fs (%.1f MB/s), every digest checked\n",
				ref, d, mirror, len(layers), total, secs, float64(total)/secs/1e6)
			return nil
		},
	}
	cmd.Flags().StringVar(&mirror, "mirror", node.DefaultRegistryAddr, "the node's mirror (its --registry-addr)")
	cmd.Flags().StringVar(&platform, "platform", runtime.GOOS+"/"+runtime.GOARCH, "platform to pull from a multi-platform image")
	return cmd
}

// mirrorTransport sends every registry request to the mirror, naming the
// registry meant with ?ns= as containerd does.
type mirrorTransport struct {
	mirror, ns string
	base       http.RoundTripper
}

func (t *mirrorTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host, r.Host = "http", t.mirror, t.mirror
	if t.ns != "" && strings.HasPrefix(r.URL.Path, "/v2/") && r.URL.Path != "/v2/" {
		q := r.URL.Query()
		q.Set("ns", t.ns)
		r.URL.RawQuery = q.Encode()
	}
	return t.base.RoundTrip(r)
}
