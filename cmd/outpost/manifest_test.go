package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeManifest writes text to dir/name and returns the path.
func writeManifest(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const siteA = `apiVersion: core.outpost.dev/v1alpha1
kind: Site
metadata:
  name: a
`

func TestReadManifestsErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		text string
		// wantPos follows the file's path at the start of the error: the
		// absolute line of the bad line. wantMsg is what the error says.
		wantPos string
		wantMsg string
	}{
		{
			name: "malformed document in the middle",
			text: siteA + `---
apiVersion: core.outpost.dev/v1alpha1
kind: Site
metadata:
  name: b
  labels: [unclosed
---
` + siteA,
			wantPos: ":10:",
			wantMsg: "malformed YAML",
		},
		{
			name: "bad indentation in the second document",
			text: siteA + `---
# a comment line counts too
apiVersion: core.outpost.dev/v1alpha1
kind: Site
metadata:
  name: b
 location: x
`,
			wantPos: ":11:",
			wantMsg: "did not find expected key",
		},
		{
			name: "tab indentation in the first document",
			text: `apiVersion: core.outpost.dev/v1alpha1
kind: Site
metadata:
	name: a
`,
			wantPos: ":4:",
			wantMsg: "malformed YAML",
		},
		{
			name:    "mapping value in a scalar",
			text:    siteA + "---\napiVersion: core.outpost.dev/v1alpha1\nkind: Site\nmetadata:\n  name: b: c\n",
			wantPos: ":9:",
			wantMsg: "mapping values are not allowed",
		},
		{
			name:    "list item inside a mapping",
			text:    siteA + "---\napiVersion: core.outpost.dev/v1alpha1\nkind: Site\n- metadata\n",
			wantPos: ":8:",
			wantMsg: "malformed YAML",
		},
		{
			name:    "unterminated quote at the end of a document",
			text:    siteA + "---\napiVersion: core.outpost.dev/v1alpha1\nkind: Site\nmetadata:\n  name: 'b\n\n---\n" + siteA,
			wantPos: ":9:",
			wantMsg: "malformed YAML",
		},
		{
			name:    "missing kind",
			text:    siteA + "---\napiVersion: core.outpost.dev/v1alpha1\nmetadata:\n  name: b\n",
			wantPos: ":6:",
			wantMsg: "kind is missing",
		},
		{
			name:    "missing apiVersion",
			text:    siteA + "---\n\n# the document starts here\nkind: Site\nmetadata:\n  name: b\n",
			wantPos: ":6:",
			wantMsg: "apiVersion is missing",
		},
		{
			name:    "missing metadata.name",
			text:    "apiVersion: core.outpost.dev/v1alpha1\nkind: Site\nmetadata:\n  labels: {a: b}\n",
			wantPos: ":1:",
			wantMsg: "metadata.name is missing",
		},
		{
			name:    "a list is not an object",
			text:    siteA + "---\n- a\n- b\n",
			wantPos: ":6:",
			wantMsg: "must be an object",
		},
		{
			name:    "nothing to apply",
			text:    "# only a comment\n---\n\n---\n",
			wantPos: ": ",
			wantMsg: "no objects to apply",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeManifest(t, "bad.yaml", tc.text)
			docs, err := readManifests(path, strings.NewReader(""))
			if err == nil {
				t.Fatalf("readManifests: no error, %d documents", len(docs))
			}
			if docs != nil {
				t.Errorf("readManifests returned %d documents with its error; want none", len(docs))
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, path+tc.wantPos) {
				t.Errorf("error %q: want it to start with %q", msg, path+tc.wantPos)
			}
			if !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error %q does not say %q", msg, tc.wantMsg)
			}
		})
	}
}

func TestReadManifestsSkipsEmptyDocuments(t *testing.T) {
	t.Parallel()
	text := `# leading comment, no document
---
---
` + siteA + `---
# only comments here
# and here
---

---
apiVersion: core.outpost.dev/v1alpha1
kind: Site
metadata:
  name: b
spec:
  location: lab
---
`
	path := writeManifest(t, "sites.yaml", text)
	docs, err := readManifests(path, strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 {
		t.Fatalf("got %d documents, want 2", len(docs))
	}
	want := []struct{ name, source string }{
		{"a", path + ":4"},
		{"b", path + ":14"},
	}
	for i, w := range want {
		d := docs[i]
		if d.head.Metadata.Name != w.name || d.head.Kind != "Site" || d.head.APIVersion != "core.outpost.dev/v1alpha1" {
			t.Errorf("document %d: head %+v, want Site %s", i, d.head, w.name)
		}
		if d.source != w.source {
			t.Errorf("document %d: source %q, want %q", i, d.source, w.source)
		}
	}
	if !strings.Contains(string(docs[1].json), `"location":"lab"`) {
		t.Errorf("document 1 JSON %s lacks the spec", docs[1].json)
	}
}

func TestReadManifestsStdin(t *testing.T) {
	t.Parallel()
	docs, err := readManifests("-", strings.NewReader(siteA+"---\n"+strings.Replace(siteA, "name: a", "name: b", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 || docs[0].head.Metadata.Name != "a" || docs[1].head.Metadata.Name != "b" {
		t.Fatalf("got %d documents, want a and b", len(docs))
	}
	if docs[1].source != "<stdin>:6" {
		t.Errorf("source %q, want <stdin>:6", docs[1].source)
	}

	_, err = readManifests("-", strings.NewReader(siteA+"---\nkind: Site\nmetadata: {name: c}\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "<stdin>:6:") {
		t.Errorf("error %v, want one naming <stdin>:6", err)
	}
}

func TestReadManifestsJSON(t *testing.T) {
	t.Parallel()
	path := writeManifest(t, "site.json", `{"apiVersion":"core.outpost.dev/v1alpha1","kind":"Site","metadata":{"name":"j"}}`)
	docs, err := readManifests(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1 || docs[0].head.Metadata.Name != "j" {
		t.Fatalf("got %+v, want one Site j", docs)
	}
}

func TestReadManifestsMissingFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := readManifests(path, nil)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v, want one naming %s", err, path)
	}
}
