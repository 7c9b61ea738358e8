package registry

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/outpost-mesh/outpost/images/store"
)

// conformanceEnv names the OCI distribution-spec conformance binary; the
// tests that run it skip when it is unset or absent. testdata/conformance.sh
// builds it and runs these tests.
const conformanceEnv = "OUTPOST_OCI_CONFORMANCE"

func conformanceBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv(conformanceEnv)
	if bin == "" {
		t.Fatalf("%s is not set: `make unit` sets it after scripts/test-deps.sh built the OCI conformance suite (or run testdata/conformance.sh)", conformanceEnv)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s=%s: %v", conformanceEnv, bin, err)
	}
	return bin
}

// conformanceResult is the summary the suite prints.
type conformanceResult struct {
	Status string
	Counts map[string]int // Pass, Skip, Disabled, FAIL, Error, Total
	Output string
}

var countRE = regexp.MustCompile(`^\s+(Pass|Skip|Disabled|FAIL|Error|Total)\.*:\s+(\d+)\s*$`)

// runConformance runs the suite with env added and reads its 'OCI
// Conformance Result' block. The exit status is not used: in read-only
// mode the tool crashes while writing its reports, after the summary.
func runConformance(t *testing.T, bin string, env map[string]string) conformanceResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "OCI_RESULTS_DIR="+cmd.Dir+"/results", "OCI_LOG=warn")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = cmd.Run()
	res := conformanceResult{Counts: map[string]int{}, Output: out.String()}
	sc := bufio.NewScanner(strings.NewReader(res.Output))
	in := false
	for sc.Scan() {
		line := sc.Text()
		if s, ok := strings.CutPrefix(line, "OCI Conformance Result: "); ok {
			res.Status, in = strings.TrimSpace(s), true
			continue
		}
		if !in {
			continue
		}
		m := countRE.FindStringSubmatch(line)
		if m == nil {
			if len(res.Counts) > 0 {
				break
			}
			continue
		}
		res.Counts[m[1]], _ = strconv.Atoi(m[2])
	}
	if res.Status == "" {
		t.Fatalf("no 'OCI Conformance Result' in the suite's output:\n%s", res.Output)
	}
	if dir := os.Getenv("OUTPOST_OCI_CONFORMANCE_OUT"); dir != "" {
		_ = os.WriteFile(fmt.Sprintf("%s/%s.txt", dir, strings.ReplaceAll(t.Name(), "/", "_")), out.Bytes(), 0o644)
	}
	return res
}

func checkConformance(t *testing.T, res conformanceResult) {
	t.Helper()
	t.Logf("OCI conformance: %s, counts %v", res.Status, res.Counts)
	if res.Counts["FAIL"] != 0 || res.Counts["Error"] != 0 || res.Counts["Pass"] == 0 {
		t.Fatalf("conformance failures:\n%s", tail(res.Output, 200))
	}
}

func tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// TestOCIConformancePush runs the whole suite (push, pull, content
// discovery, content management) against a push-enabled registry that
// wants Basic authentication with an API token: once with the settings of
// distribution-spec 1.1 and once with those of its development version
// (upload cancel, digest headers required, tag parameters on push by
// digest).
func TestOCIConformancePush(t *testing.T) {
	bin := conformanceBinary(t)
	for _, version := range []string{"1.1", "dev"} {
		t.Run(version, func(t *testing.T) {
			srv := newServer(t, func(c *Config) {
				c.Push = true
				c.Authorize = tokenAuth
				c.AuthorizePull = tokenAuth
			})
			res := runConformance(t, bin, map[string]string{
				"OCI_VERSION":                 version,
				"OCI_REGISTRY":                srv.Addr,
				"OCI_TLS":                     "disabled",
				"OCI_REPO1":                   "conformance/repo1",
				"OCI_REPO2":                   "conformance/deep/path/repo2",
				"OCI_USERNAME":                "outpost",
				"OCI_PASSWORD":                testToken,
				"OCI_API_BLOBS_UPLOAD_CANCEL": "true",
			})
			checkConformance(t, res)
			if res.Status != "Pass" || res.Counts["Skip"] != 0 {
				t.Fatalf("result %s with %d skipped", res.Status, res.Counts["Skip"])
			}
		})
	}
}

// TestOCIConformanceReadOnly runs the pull-only suite against a registry
// with push off, over content pushed beforehand: once for the hub's own
// registry, and once as a Docker mirror (DefaultNamespace docker.io, the
// content stored under that namespace, requests without ns).
func TestOCIConformanceReadOnly(t *testing.T) {
	bin := conformanceBinary(t)
	for _, ns := range []string{"", "docker.io"} {
		t.Run("ns="+ns, func(t *testing.T) {
			st := openStore(t)
			pusher := newServerOn(t, st, func(c *Config) { c.Push = true })
			repo := "conformance/ro"
			img := pushSampleImage(t, pusher.URL, repo)
			if ns != "" {
				copyNamespace(t, st, repo, ns, img)
			}
			srv := newServerOn(t, st, func(c *Config) { c.DefaultNamespace = ns })
			res := runConformance(t, bin, map[string]string{
				"OCI_REGISTRY":             srv.Addr,
				"OCI_TLS":                  "disabled",
				"OCI_REPO1":                repo,
				"OCI_API_PUSH":             "false",
				"OCI_API_BLOBS_DELETE":     "false",
				"OCI_API_MANIFESTS_DELETE": "false",
				"OCI_API_TAGS_DELETE":      "false",
				"OCI_RO_DATA_TAGS":         strings.Join(img.Tags, " "),
				"OCI_RO_DATA_MANIFESTS":    strings.Join(img.Manifests, " "),
				"OCI_RO_DATA_BLOBS":        strings.Join(img.Blobs, " "),
				"OCI_RO_DATA_REFERRERS":    strings.Join(img.Subjects, " "),
			})
			checkConformance(t, res)
			if res.Status != "Pass" {
				t.Fatalf("result %s", res.Status)
			}
		})
	}
}

// copyNamespace links what repo holds in the hub's own registry into the
// same repository of namespace ns, as a mirror's fetch chain would store
// it.
func copyNamespace(t *testing.T, st *store.Store, repo, ns string, img sampleImage) {
	t.Helper()
	for _, b := range img.Blobs {
		if err := st.LinkBlob(ns, repo, digest.Digest(b)); err != nil {
			t.Fatal(err)
		}
	}
	// Children before the index that references them.
	for i := len(img.Manifests) - 1; i >= 0; i-- {
		m, err := st.ManifestByDigest(digest.Digest(img.Manifests[i]))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutManifest(ns, repo, m.Digest, m.MediaType, m.Body); err != nil {
			t.Fatal(err)
		}
	}
	for _, tag := range img.Tags {
		if err := st.Tag(ns, repo, tag, img.Index); err != nil {
			t.Fatal(err)
		}
	}
}
