package main

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func TestSplitClusterToken(t *testing.T) {
	t.Parallel()
	fp := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		token, flag, wantToken, wantFP string
	}{
		{"oct_abc", "", "oct_abc", ""},
		{"oct_abc." + fp, "", "oct_abc", fp},
		{"oct_abc." + fp, "cd", "oct_abc", "cd"}, // --ca-fingerprint wins
		{"oct_abc.short", "", "oct_abc.short", ""},
	} {
		tok, got := splitClusterToken(tc.token, tc.flag)
		if tok != tc.wantToken || got != tc.wantFP {
			t.Errorf("splitClusterToken(%q, %q) = %q, %q; want %q, %q", tc.token, tc.flag, tok, got, tc.wantToken, tc.wantFP)
		}
	}
}

func TestAgentNeedsAnAPIServer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		kubeconfig string
		inCluster  bool
		errorHas   string
	}{
		{"", false, "give --kubeconfig PATH or --in-cluster"},
		{"/x", true, "contradict"},
		{"/does/not/exist", false, "--kubeconfig /does/not/exist"},
	} {
		if _, err := edgeRESTConfig(tc.kubeconfig, tc.inCluster); err == nil || !strings.Contains(err.Error(), tc.errorHas) {
			t.Errorf("edgeRESTConfig(%q, %v): %v, want an error saying %q", tc.kubeconfig, tc.inCluster, err, tc.errorHas)
		}
	}
}

// TestFlagValueNames: pflag takes `backquoted` text in a flag's usage as
// the name of its value, so "from `outpost cluster create`" would render
// as "--token outpost cluster create". No flag's value name may be more
// than a word.
func TestFlagValueNames(t *testing.T) {
	t.Parallel()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if name, _ := pflag.UnquoteUsage(f); strings.ContainsAny(name, " \t") {
				t.Errorf("%s --%s renders as --%s %s: rephrase its usage without backquotes", c.CommandPath(), f.Name, f.Name, name)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCommand())
}
