package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/clusters"
	imagesapi "github.com/outpost-mesh/outpost/images/api"
	"github.com/outpost-mesh/outpost/ota"
)

func newDeleteCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "delete KIND NAME",
		Short:   "Delete a resource",
		Example: `  outpost delete site lab`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			defer cancel()
			c, r, err := connect(ctx, g, args[0])
			if err != nil {
				return err
			}
			body, err := c.do(ctx, http.MethodDelete, r.path(g.namespace, args[1]), nil, "", "")
			if err != nil {
				return err
			}
			var obj struct {
				Metadata metav1.ObjectMeta `json:"metadata"`
			}
			_ = json.Unmarshal(body, &obj)
			label := strings.ToLower(r.Kind) + " \"" + args[1] + "\""
			if obj.Metadata.DeletionTimestamp != nil && len(obj.Metadata.Finalizers) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%s marked for deletion; waiting for finalizers: %s\n", label, strings.Join(obj.Metadata.Finalizers, ", "))
				for _, f := range obj.Metadata.Finalizers {
					if why, ok := finalizerWork[f]; ok {
						fmt.Fprintf(cmd.OutOrStdout(), "  %s\n", why)
					}
				}
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s deleted\n", label)
			return nil
		},
	}
}

// finalizerWork says what the controllers do before an object with each
// finalizer goes.
var finalizerWork = map[string]string{
	ota.TaskFinalizer:           "its devices are being canceled (running ones killed); it goes once they have stopped, at most 2 minutes",
	clusters.Finalizer:          "the cluster's installers are cleaning up after it",
	imagesapi.RegistryFinalizer: "its repositories are being removed and its pending image syncs waited for",
}
