package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/outpost-mesh/outpost/node"
)

func newBackupCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "backup FILE",
		Short: "Save a consistent snapshot of the hub state (admin only)",
		Long: `Save the hub's whole state, one Raft snapshot taken on its leader, with the
mesh CA (certificate and key) so a restored hub opens its sealed secrets and
keeps its sites. The file is as secret as the CA key: it is written mode 0600.
Restore it into an empty data dir with: outpost node --restore FILE`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			resp, err := c.send(ctx, http.MethodGet, "/outpost/v1/backup", nil, "", "")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				return statusError(resp.StatusCode, b)
			}
			return writeBackup(args[0], resp.Body, resp.ContentLength)
		},
	}
}

// writeBackup writes r to path through a temporary file, mode 0600, and
// checks that want bytes (when known) arrived.
func writeBackup(path string, r io.Reader, want int64) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".outpost-backup-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, r)
	if err == nil && want >= 0 && n != want {
		err = fmt.Errorf("the hub sent %d of %d bytes", n, want)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("backup %s: %w; run it again", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "backup of %d bytes written to %s; it holds the mesh CA key: keep it safe\n", n, path)
	return nil
}

func newRestoreCommand() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "restore FILE --data-dir DIR",
		Short: "Prepare an empty data dir to start a hub from a backup",
		Long: `Prepare an empty data dir to become a hub restored from a backup of
` + "`outpost backup`" + `: its CA is installed and its state is restored when the
hub starts (outpost node --data-dir DIR). ` + "`outpost node --restore FILE`" + ` does both.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" {
				return errors.New("--data-dir is required: the empty directory of the new hub")
			}
			if err := node.PrepareRestore(dataDir, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restore prepared; start the hub with: outpost node --data-dir %s\n", dataDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "empty data dir of the new hub")
	return cmd
}
