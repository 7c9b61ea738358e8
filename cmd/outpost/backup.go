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
Restore it on a fresh hub with: outpost restore FILE --data-dir EMPTY-DIR`,
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
	dataDir := node.DefaultConfig().DataDir
	cmd := &cobra.Command{
		Use:   "restore FILE [--data-dir DIR]",
		Short: "Make a fresh hub from a backup: run it in the new hub's empty data dir",
		Long: `Make a fresh hub from a file of ` + "`outpost backup`" + `: in the new hub's empty data
dir (--data-dir, else $OUTPOST_DATA_DIR, else ./outpost-data, as outpost node
takes it) the backup's mesh CA is installed, so sealed secrets open and the
old sites' certificates stay valid, and its state is kept, which the hub
restores when it starts: then start the node on that data dir as usual
(systemctl start outpost, or outpost node --data-dir DIR), with the hub's
old address so that sites reconnect. Every resource of the backup is there;
the hub makes a new admin credential (admin.yaml) and the old tokens work.
` + "`outpost node --restore FILE`" + ` does both steps at once.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("data-dir") {
				if env := os.Getenv("OUTPOST_DATA_DIR"); env != "" {
					dataDir = env
				}
			}
			if dataDir == "" {
				return errors.New("--data-dir must name the empty data dir of the new hub")
			}
			if err := node.PrepareRestore(dataDir, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backup %s ready in %s: start the hub on it (systemctl start outpost, or outpost node --data-dir %s)\n", args[0], dataDir, dataDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", dataDir, "empty data dir of the new hub (default $OUTPOST_DATA_DIR, else ./outpost-data)")
	return cmd
}
