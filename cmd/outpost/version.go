package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/version"

	"github.com/outpost-mesh/outpost/node"
)

func newVersionCommand(g *globals) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client's version, and the hub's when it answers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Client Version: %s (%s, %s/%s)\n", node.BuildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			if clientOnly {
				return nil
			}
			c, err := newClient(g)
			if err != nil {
				return nil
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			body, err := c.do(ctx, http.MethodGet, "/version", nil, "", "")
			if err != nil {
				fmt.Fprintf(out, "Server Version: unknown (%v)\n", err)
				return nil
			}
			var v version.Info
			if err := json.Unmarshal(body, &v); err != nil {
				return err
			}
			fmt.Fprintf(out, "Server Version: %s (%s, %s)\n", v.GitVersion, v.GoVersion, v.Platform)
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only the client's version")
	return cmd
}
