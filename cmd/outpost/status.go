package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/outpost-mesh/outpost/node"
)

func newStatusCommand() *cobra.Command {
	var dataDir, output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this host's node and its Raft state (no credentials needed)",
		Long: `Ask the node running on this host, through its control socket
<data-dir>/outpost.sock, for its name, site, role and Raft state. It needs
no API credentials, only access to the data dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("-o %q: use text or json", output)
			}
			st, err := node.ReadLocalStatus(filepath.Join(dataDir, node.SocketName))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				b, err := json.MarshalIndent(st, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(out, "%s\n", b)
				return err
			}
			w := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
			fmt.Fprintf(w, "Name:\t%s\n", st.Name)
			fmt.Fprintf(w, "Site:\t%s\n", st.Site)
			fmt.Fprintf(w, "Role:\t%s\n", st.Role)
			fmt.Fprintf(w, "Version:\t%s\n", st.Version)
			fmt.Fprintf(w, "API:\t%s\n", st.APIAddr)
			fmt.Fprintf(w, "Uptime:\t%s\n", st.Uptime)
			fmt.Fprintf(w, "Raft:\t\n")
			fmt.Fprintf(w, "  State:\t%s\n", st.Raft.State)
			fmt.Fprintf(w, "  Leader:\t%s\n", st.Raft.LeaderID)
			fmt.Fprintf(w, "  Term:\t%d\n", st.Raft.Term)
			fmt.Fprintf(w, "  Commit Index:\t%d\n", st.Raft.CommitIndex)
			fmt.Fprintf(w, "  Applied Index:\t%d\n", st.Raft.AppliedIndex)
			fmt.Fprintf(w, "  Peers:\t%d\n", len(st.Raft.Peers))
			for _, p := range st.Raft.Peers {
				fmt.Fprintf(w, "    %s\t%s (%s)\n", p.ID, p.Address, p.Suffrage)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "outpost-data", "data dir of the node on this host")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	_ = cmd.Flags().SetAnnotation("output", outputForms, []string{"text", "json"})
	return cmd
}
