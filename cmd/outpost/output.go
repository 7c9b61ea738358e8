package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

// Every verb that prints resources takes the same -o: its human form
// (table and wide for get, text elsewhere) and the machine forms json, yaml
// and name (kind.group/name, one a line, as kubectl prints it).
var machineOutputs = []string{"json", "yaml", "name"}

// outputForms is the annotation of a -o flag that lists the forms it
// takes, for completion.
const outputForms = "outpost_output_forms"

// addOutputFlag adds -o to cmd; human are its human forms, the first being
// the default.
func addOutputFlag(cmd *cobra.Command, p *string, human ...string) {
	all := append(slices.Clone(human), machineOutputs...)
	cmd.Flags().StringVarP(p, "output", "o", human[0], "output format: "+orList(all))
	_ = cmd.Flags().SetAnnotation("output", outputForms, all)
}

// checkOutputOf reports a -o value that cmd does not take, saying which it
// does.
func checkOutputOf(output string, human ...string) error {
	all := append(slices.Clone(human), machineOutputs...)
	if slices.Contains(all, output) {
		return nil
	}
	return fmt.Errorf("-o %q is not an output format here: use %s", output, orList(all))
}

func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// printNames prints an object or a list as kind.group/name lines.
func printNames(out io.Writer, r *resource, body []byte) error {
	var doc struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return err
	}
	prefix := strings.ToLower(r.Kind) + "." + r.Group + "/"
	if doc.Items == nil && doc.Metadata.Name != "" {
		_, err := fmt.Fprintln(out, prefix+doc.Metadata.Name)
		return err
	}
	for _, it := range doc.Items {
		if _, err := fmt.Fprintln(out, prefix+it.Metadata.Name); err != nil {
			return err
		}
	}
	return nil
}

// colorOutput reports whether to print colour to w: only to a terminal,
// and never when NO_COLOR is set (https://no-color.org) or TERM is dumb.
func colorOutput(w io.Writer) bool { return colorWanted(isTerminal(w)) }

// colorWanted is colorOutput's decision for an output that is, or is not,
// a terminal.
func colorWanted(tty bool) bool {
	if os.Getenv("NO_COLOR") != "" {
		return false
	}
	return tty && os.Getenv("TERM") != "dumb"
}

// ANSI foreground colours of table cells. Every one is five bytes, the
// reset included, so that a column whose cells all carry one stays aligned
// by tabwriter.
const (
	ansiGreen  = "\033[32m"
	ansiYellow = "\033[33m"
	ansiRed    = "\033[31m"
	ansiPlain  = "\033[39m"
)

// stateColor is the colour of a state word in a table cell: green for
// good, yellow for in-between, red for bad, plain for anything else.
func stateColor(word string) string {
	switch strings.ToLower(word) {
	case "true", "alive", "succeeded", "ready", "connected", "leader":
		return ansiGreen
	case "running", "pending", "queued", "halted", "suspect", "unknown", "candidate":
		return ansiYellow
	case "false", "dead", "failed", "timedout", "unreachable", "canceled", "left":
		return ansiRed
	}
	return ansiPlain
}

// stateColumn reports whether a column holds state words worth colouring.
func stateColumn(name string) bool {
	switch strings.ToLower(name) {
	case "phase", "state", "ready", "connected", "schedulable", "status":
		return true
	}
	return false
}
