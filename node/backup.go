package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/internal/atomicfile"
	"github.com/outpost-mesh/outpost/internal/pki"
)

// BackupFormat names the backup file format: one JSON header line, then
// the hub group's Raft snapshot as the state store writes it.
const BackupFormat = "outpost-backup-1"

// stateMagic starts every state snapshot (consensus/snapshot.go).
const stateMagic = "OUTPOST-STATE-1\n"

// BackupHeader is the first line of a backup. It carries the mesh CA, key
// included: the key that seals secrets at rest is derived from it, and the
// sites' certificates chain to it, so a hub restored with it opens the old
// secrets and takes the old sites back. A backup is as secret as the CA
// key; keep it so (the CLI writes it with mode 0600).
type BackupHeader struct {
	Format  string      `json:"format"`
	Created metav1.Time `json:"created"`
	Hub     string      `json:"hub"`
	// Index and Term are the snapshot's Raft position; Size its length.
	Index  uint64 `json:"index"`
	Term   uint64 `json:"term"`
	Size   int64  `json:"size"`
	CACert string `json:"caCert"`
	CAKey  string `json:"caKey"`
}

// restoreDir holds a backup that `outpost restore` (or `outpost node
// --restore`) prepared, until the new hub's leader has restored it.
func restoreDir(dataDir string) string { return filepath.Join(dataDir, "restore") }

// restoreWaiting reports whether dataDir holds a prepared backup not yet
// restored.
func restoreWaiting(dataDir string) bool {
	_, err := os.Stat(filepath.Join(restoreDir(dataDir), "header.json"))
	return err == nil
}

// adminHandler serves the API's /outpost/v1/ admin calls.
func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /outpost/v1/backup", n.serveBackup)
	return mux
}

// serveBackup streams a backup of the hub state: a Raft snapshot taken on
// the leader, so it is one consistent resourceVersion of every kind.
func (n *Node) serveBackup(w http.ResponseWriter, r *http.Request) {
	a := n.api
	req := request{kind: &consensus.Kind{Group: CoreGroup, Plural: "backups"}}
	if !a.authorize(w, r, req, verbGet) {
		return
	}
	if a.forward != nil && !n.group.IsLeader() {
		a.forward(w, r)
		return
	}
	ev := auditFor(r, req, "backup")
	ev.Code = http.StatusOK
	// The event is also what makes the snapshot below new.
	a.audit.record(r.Context(), ev)
	rf := n.group.Raft()
	if rf == nil {
		writeError(w, apierrors.NewServiceUnavailable("raft has not started"), n.log)
		return
	}
	f := rf.Snapshot()
	if err := f.Error(); err != nil {
		writeError(w, fmt.Errorf("take snapshot: %w", err), n.log)
		return
	}
	meta, rc, err := f.Open()
	if err != nil {
		writeError(w, fmt.Errorf("open snapshot: %w", err), n.log)
		return
	}
	defer rc.Close()
	key, err := n.ca.KeyPEM()
	if err != nil {
		writeError(w, err, n.log)
		return
	}
	hdr, _ := json.Marshal(BackupHeader{
		Format: BackupFormat, Created: metav1.Now(), Hub: n.id.Name,
		Index: meta.Index, Term: meta.Term, Size: meta.Size,
		CACert: string(n.ca.CertPEM), CAKey: string(key),
	})
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(int64(len(hdr))+1+meta.Size, 10))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(hdr, '\n'))
	if _, err := io.Copy(w, rc); err != nil {
		n.log.Warn("backup stream ended early", "err", err)
	}
}

// ReadBackupHeader reads and checks a backup's header line, leaving r at
// the snapshot.
func ReadBackupHeader(r *bufio.Reader) (*BackupHeader, error) {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("read backup header: %w", err)
	}
	var h BackupHeader
	if err := json.Unmarshal(line, &h); err != nil || h.Format != BackupFormat {
		return nil, fmt.Errorf("not an outpost backup (want format %s)", BackupFormat)
	}
	if h.CACert == "" || h.CAKey == "" || h.Index == 0 || h.Size <= 0 {
		return nil, errors.New("backup header is incomplete (caCert, caKey, index and size are required)")
	}
	magic, err := r.Peek(len(stateMagic))
	if err != nil || string(magic) != stateMagic {
		return nil, errors.New("backup holds no hub state snapshot after its header")
	}
	return &h, nil
}

// PrepareRestore readies dataDir, which must hold no node yet, to start a
// hub from the backup at path: it installs the backup's mesh CA (so sealed
// secrets open and the old sites' certificates stay valid) and keeps the
// snapshot, which the hub's leader restores once it runs. Start the node
// with the same data dir afterwards.
func PrepareRestore(dataDir, path string) error {
	if id, err := loadIdentity(dataDir); err != nil {
		return err
	} else if id != nil {
		return fmt.Errorf("restore %s: %s already holds node %s; restore into an empty --data-dir (stop that node and move the directory away first)", path, dataDir, id.Name)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("restore: %w; name the file that `outpost backup` wrote", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	h, err := ReadBackupHeader(br)
	if err != nil {
		return fmt.Errorf("restore %s: %w", path, err)
	}
	if err := os.MkdirAll(restoreDir(dataDir), 0o700); err != nil {
		return err
	}
	state := filepath.Join(restoreDir(dataDir), "state")
	out, err := os.OpenFile(state, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(out, br)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("restore %s: copy the snapshot into %s: %w", path, dataDir, err)
	}
	if n != h.Size {
		return fmt.Errorf("restore %s: the snapshot is %d bytes, the header says %d: the file is truncated; take another backup, or use an older one", path, n, h.Size)
	}
	if _, err := pki.Install(caDir(dataDir), []byte(h.CACert), []byte(h.CAKey)); err != nil {
		return fmt.Errorf("restore %s: install the backup's CA: %w", path, err)
	}
	hdr, _ := json.Marshal(h)
	return atomicfile.Write(filepath.Join(restoreDir(dataDir), "header.json"), hdr, 0o600)
}

// restorePending restores a backup that PrepareRestore left in the data
// dir, once this member leads the new hub, then writes again what is this
// hub's own (its Site, member record, gossip key and admin credential),
// which the backup's state replaced.
func (n *Node) restorePending(ctx context.Context) error {
	dir := restoreDir(n.cfg.DataDir)
	hb, err := os.ReadFile(filepath.Join(dir, "header.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var h BackupHeader
	if err := json.Unmarshal(hb, &h); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "header.json"), err)
	}
	for !n.group.IsLeader() {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
	f, err := os.Open(filepath.Join(dir, "state"))
	if err != nil {
		return err
	}
	defer f.Close()
	rf := n.group.Raft()
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: h.Index, Term: h.Term, Size: h.Size}
	if err := rf.Restore(meta, f, time.Minute); err != nil {
		return fmt.Errorf("restore the backup of hub %s: %w", h.Hub, err)
	}
	store := n.group.Store()
	key := n.id.GossipKey
	if err := n.ensureSite(ctx, store); err != nil {
		return err
	}
	if err := n.restoreHubKey(ctx, store, key); err != nil {
		return err
	}
	if err := n.restoreSelfMember(ctx, store); err != nil {
		return err
	}
	if err := n.ensureAdmin(ctx, store); err != nil {
		return err
	}
	n.log.Info("hub restored from backup", "from_hub", h.Hub, "index", h.Index, "taken", h.Created.UTC().Format(time.RFC3339))
	return os.RemoveAll(dir)
}

// restoreHubKey makes the hub site's gossip key this member's again.
func (n *Node) restoreHubKey(ctx context.Context, store *consensus.Store, key []byte) error {
	name := "site-" + HubSite
	obj, err := store.Get(ctx, &SecretKind, "", name, consensus.ReadOptions{})
	if apierrors.IsNotFound(err) {
		_, err = n.siteKey(ctx, HubSite, key)
		return err
	}
	if err != nil {
		return err
	}
	var spec SecretSpec
	if err := obj.DecodeSpec(&spec); err != nil {
		return err
	}
	if bytes.Equal(spec.Data["gossipKey"], key) {
		return nil
	}
	spec.Data["gossipKey"] = key
	next := obj.DeepCopy()
	if err := next.SetSpec(spec); err != nil {
		return err
	}
	_, err = store.Update(ctx, &SecretKind, next)
	return err
}

// restoreSelfMember records this member's certificate, under a name the
// old hub may have used too.
func (n *Node) restoreSelfMember(ctx context.Context, store *consensus.Store) error {
	obj, err := store.Get(ctx, &MemberKind, "", n.id.Name, consensus.ReadOptions{})
	if apierrors.IsNotFound(err) {
		return n.ensureSelfMember(ctx, store)
	}
	if err != nil {
		return err
	}
	cert, _ := n.id.certificate()
	var spec MemberSpec
	if err := obj.DecodeSpec(&spec); err != nil {
		return err
	}
	spec.Site, spec.Role = n.id.Site, n.id.Role
	spec.Serials = append(spec.Serials, cert.Leaf.SerialNumber.Text(16))
	next := obj.DeepCopy()
	if err := next.SetSpec(spec); err != nil {
		return err
	}
	_, err = store.Update(ctx, &MemberKind, next)
	return err
}
