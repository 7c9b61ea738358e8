package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// document is one YAML document of a manifest file, converted to JSON.
type document struct {
	source string // file:line where the document starts
	json   []byte
	head   struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// readManifests reads multi-document YAML (or JSON) from a file, or from
// standard input when path is "-". Every document is parsed before any is
// returned, so a malformed one stops the whole apply; its error names the
// file and the line.
func readManifests(path string, stdin io.Reader) ([]*document, error) {
	var data []byte
	var err error
	name := path
	if path == "-" {
		name = "<stdin>"
		data, err = io.ReadAll(io.LimitReader(stdin, 64<<20))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	var docs []*document
	for _, chunk := range splitDocuments(data) {
		if len(bytes.TrimSpace(stripComments(chunk.text))) == 0 {
			continue
		}
		j, err := yaml.YAMLToJSON(chunk.text)
		if err != nil {
			return nil, fmt.Errorf("%s: %s", locate(name, chunk, err), cleanYAMLError(err))
		}
		d := &document{source: fmt.Sprintf("%s:%d", name, chunk.line), json: j}
		if err := json.Unmarshal(j, &d.head); err != nil {
			return nil, fmt.Errorf("%s: the document must be an object with apiVersion, kind and metadata", d.source)
		}
		switch {
		case d.head.APIVersion == "":
			return nil, fmt.Errorf("%s: apiVersion is missing", d.source)
		case d.head.Kind == "":
			return nil, fmt.Errorf("%s: kind is missing", d.source)
		case d.head.Metadata.Name == "":
			return nil, fmt.Errorf("%s: metadata.name is missing", d.source)
		}
		docs = append(docs, d)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: no objects to apply", name)
	}
	return docs, nil
}

type chunk struct {
	text []byte
	line int // first line of the document, 1-based
}

// splitDocuments splits YAML at "---" lines, remembering where each
// document starts.
func splitDocuments(data []byte) []chunk {
	var out []chunk
	var cur bytes.Buffer
	start, n := 1, 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		n++
		line := sc.Text()
		if line == "---" || strings.HasPrefix(line, "--- ") || strings.HasPrefix(line, "---\t") {
			out = append(out, chunk{text: append([]byte(nil), cur.Bytes()...), line: start})
			cur.Reset()
			start = n + 1
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	return append(out, chunk{text: cur.Bytes(), line: start})
}

func stripComments(b []byte) []byte {
	var out bytes.Buffer
	for _, l := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out.Write(l)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

// yamlParserProblem matches the errors of yaml.v2's parser, which report
// the 0-based line of the token they stopped at (its scanner's errors are
// 1-based): a bad indent on line 4 reads "line 3: did not find expected key".
var yamlParserProblem = regexp.MustCompile(`did not find expected (key|node content|'-' indicator|',' or '[]}]'|<document start>|<stream-start>)|found (undefined tag handle|duplicate %YAML directive|duplicate %TAG directive|incompatible YAML document)`)

// locate turns a YAML error's document-relative line into file:line. An
// error at the end of the document (an unclosed quote or bracket) names the
// document's last non-blank line rather than the "---" after it.
func locate(file string, c chunk, err error) string {
	m := yamlLine.FindStringSubmatch(err.Error())
	if m == nil {
		return fmt.Sprintf("%s:%d", file, c.line)
	}
	n, e := strconv.Atoi(m[1])
	if e != nil {
		return fmt.Sprintf("%s:%d", file, c.line)
	}
	if yamlParserProblem.MatchString(err.Error()) {
		n++
	}
	last := len(bytes.Split(bytes.TrimRight(c.text, " \t\r\n"), []byte("\n")))
	if n > last {
		n = last
	}
	return fmt.Sprintf("%s:%d", file, c.line+n-1)
}

func cleanYAMLError(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = yamlLine.ReplaceAllString(msg, "")
	msg = strings.TrimPrefix(strings.TrimSpace(msg), ": ")
	return "malformed YAML: " + msg
}
