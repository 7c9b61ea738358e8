//go:build e2e && imagebench

package e2e

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ibChunk is how much random data ibWriteLayer writes between checks of
// its context.
const ibChunk = 8 << 20

// ibImage is an OCI image layout on disk, tagged "v1", that ibWriteImage
// made.
type ibImage struct {
	dir    string
	layers []v1.Descriptor
	// size is what a pull moves: the manifest, the config and the layers.
	size int64
}

// ibWriteImage writes an OCI image of n layers, each a tar of one file of
// layerSize random bytes, into dir as an OCI layout. The layers are gzip
// streams of stored (uncompressed) blocks: real gzip, so skopeo neither
// recompresses them on a push nor spends time on it, at 0.01% over the
// random payload, and written in seconds where go-containerregistry's
// random.Layer would gzip a gigabyte for minutes.
func ibWriteImage(ctx context.Context, dir string, n int, layerSize int64) (ibImage, error) {
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return ibImage{}, err
	}
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return ibImage{}, err
	}
	rng := mrand.NewChaCha8(seed)
	img := ibImage{dir: dir}
	var diffIDs []string
	for range n {
		desc, diffID, err := ibWriteLayer(ctx, blobs, layerSize, rng)
		if err != nil {
			return ibImage{}, err
		}
		img.layers = append(img.layers, desc)
		img.size += desc.Size
		diffIDs = append(diffIDs, diffID.String())
	}
	config := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	cfgDesc, err := ibWriteJSONBlob(blobs, types.OCIConfigJSON, config)
	if err != nil {
		return ibImage{}, err
	}
	manifest := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: cfgDesc, Layers: img.layers}
	manDesc, err := ibWriteJSONBlob(blobs, types.OCIManifestSchema1, manifest)
	if err != nil {
		return ibImage{}, err
	}
	img.size += cfgDesc.Size + manDesc.Size
	manDesc.Annotations = map[string]string{"org.opencontainers.image.ref.name": "v1"}
	index, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{manDesc}})
	if err != nil {
		return ibImage{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644); err != nil {
		return ibImage{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return ibImage{}, err
	}
	return img, nil
}

// ibWriteLayer writes one layer into blobs and returns its descriptor and
// its diff ID (the digest of the uncompressed tar).
func ibWriteLayer(ctx context.Context, blobs string, size int64, rng io.Reader) (v1.Descriptor, v1.Hash, error) {
	f, err := os.CreateTemp(blobs, "layer-")
	if err != nil {
		return v1.Descriptor{}, v1.Hash{}, err
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	defer f.Close()
	digest, diffID := sha256.New(), sha256.New()
	buf := bufio.NewWriterSize(io.MultiWriter(f, digest), 1<<20)
	count := &ibCountingWriter{w: buf}
	gz, err := gzip.NewWriterLevel(count, gzip.NoCompression)
	if err != nil {
		return v1.Descriptor{}, v1.Hash{}, err
	}
	tw := tar.NewWriter(io.MultiWriter(gz, diffID))
	if err := tw.WriteHeader(&tar.Header{Name: "random.bin", Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
		return v1.Descriptor{}, v1.Hash{}, err
	}
	for left := size; left > 0; left -= ibChunk {
		if err := ctx.Err(); err != nil {
			return v1.Descriptor{}, v1.Hash{}, err
		}
		if _, err := io.CopyN(tw, rng, min(left, ibChunk)); err != nil {
			return v1.Descriptor{}, v1.Hash{}, err
		}
	}
	for _, c := range []io.Closer{tw, gz} {
		if err := c.Close(); err != nil {
			return v1.Descriptor{}, v1.Hash{}, err
		}
	}
	if err := buf.Flush(); err != nil {
		return v1.Descriptor{}, v1.Hash{}, err
	}
	if err := f.Close(); err != nil {
		return v1.Descriptor{}, v1.Hash{}, err
	}
	d := ibHash(digest)
	if err := os.Rename(f.Name(), filepath.Join(blobs, d.Hex)); err != nil {
		return v1.Descriptor{}, v1.Hash{}, err
	}
	return v1.Descriptor{MediaType: types.OCILayer, Size: count.n, Digest: d}, ibHash(diffID), nil
}

// ibWriteJSONBlob writes v as a JSON blob into blobs.
func ibWriteJSONBlob(blobs string, mt types.MediaType, v any) (v1.Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("marshal %s: %w", mt, err)
	}
	sum := sha256.Sum256(b)
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	if err := os.WriteFile(filepath.Join(blobs, d.Hex), b, 0o644); err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: mt, Size: int64(len(b)), Digest: d}, nil
}

func ibHash(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

// ibCountingWriter counts the bytes written through it.
type ibCountingWriter struct {
	w io.Writer
	n int64
}

func (c *ibCountingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
