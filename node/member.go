package node

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
)

// runMember does the one-time work of a group's leader: on the hub, the
// admin credential, the hub Site and its gossip key; everywhere, the Site.
// It retries until it has succeeded once as leader, then returns.
func (n *Node) runMember(ctx context.Context) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if n.group.IsLeader() {
			err := n.ensureBootstrapObjects(ctx)
			if err == nil {
				return nil
			}
			if ctx.Err() == nil {
				n.log.Debug("bootstrap objects not written yet", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (n *Node) ensureBootstrapObjects(ctx context.Context) error {
	if restoreWaiting(n.cfg.DataDir) {
		// The backup's state replaces whatever would be written now, and
		// an admin.yaml written now would name a token it does not hold:
		// restorePending writes them once the backup is in (backup.go).
		return nil
	}
	store := n.group.Store()
	if err := n.ensureSite(ctx, store); err != nil {
		return err
	}
	if n.id.Role != RoleHub {
		return nil
	}
	if _, err := n.siteKey(ctx, HubSite, n.id.GossipKey); err != nil {
		return err
	}
	if err := n.ensureSelfMember(ctx, store); err != nil {
		return err
	}
	if n.apiLn != nil && n.id.BootstrapSite {
		return n.ensureAdmin(ctx, store)
	}
	return nil
}

// ensureAdmin creates the bootstrap admin token and writes
// <data-dir>/admin.yaml, once; later starts refresh the file's server and CA.
func (n *Node) ensureAdmin(ctx context.Context, store *consensus.Store) error {
	path := n.cfg.DataDir + "/admin.yaml"
	creds, err := LoadCredentials(path)
	if err == nil {
		if id, _, ok := splitToken(creds.Token); ok {
			if _, err := store.Get(ctx, &AccessTokenKind, "", id, consensus.ReadOptions{}); err == nil {
				creds.Server, creds.CA = n.localAPIURL(), string(n.ca.CertPEM)
				return creds.Write(path)
			}
		}
	}
	id := "admin-" + randomSuffix(6)
	token, hash := newToken(id)
	obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: id, Labels: map[string]string{"outpost.dev/bootstrap": "true"}}}
	if err := obj.SetSpec(AccessTokenSpec{Role: RoleAdmin, SecretHash: hash}); err != nil {
		return err
	}
	if _, err := store.Create(ctx, &AccessTokenKind, obj); err != nil {
		return fmt.Errorf("create admin token: %w", err)
	}
	creds = &Credentials{Server: n.localAPIURL(), CA: string(n.ca.CertPEM), Token: token}
	if err := creds.Write(path); err != nil {
		return err
	}
	n.log.Info("wrote admin credentials", "path", path)
	return nil
}

// ensureSite creates this node's Site object when it does not exist.
func (n *Node) ensureSite(ctx context.Context, store *consensus.Store) error {
	obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: n.id.Site}}
	_, err := store.Create(ctx, &SiteKind, obj)
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("register site %s: %w", n.id.Site, err)
	}
	return nil
}

// siteKey returns the gossip key of a site from the hub's store, creating
// it (with want, or random when want is nil) when the site has none. created
// says whether this call made it: the node it is for is the site's first.
func (n *Node) siteKey(ctx context.Context, site string, want []byte) (key []byte, err error) {
	key, _, err = n.siteKeyCreated(ctx, site, want)
	return key, err
}

func (n *Node) siteKeyCreated(ctx context.Context, site string, want []byte) ([]byte, bool, error) {
	store := n.group.Store()
	name := "site-" + site
	obj, err := store.Get(ctx, &SecretKind, "", name, consensus.ReadOptions{})
	if err == nil {
		var spec SecretSpec
		if err := obj.DecodeSpec(&spec); err != nil {
			return nil, false, err
		}
		return spec.Data["gossipKey"], false, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, false, err
	}
	if want == nil {
		want = make([]byte, 32)
		if _, err := rand.Read(want); err != nil {
			return nil, false, err
		}
	}
	obj = &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := obj.SetSpec(SecretSpec{Data: map[string][]byte{"gossipKey": want}}); err != nil {
		return nil, false, err
	}
	if _, err := store.Create(ctx, &SecretKind, obj); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return n.siteKeyCreated(ctx, site, nil)
		}
		return nil, false, err
	}
	return want, true, nil
}

// ensureSelfMember records the bootstrap hub member's identity, so its name
// is taken like any joined node's.
func (n *Node) ensureSelfMember(ctx context.Context, store *consensus.Store) error {
	cert, _ := n.id.certificate()
	now := metav1.Now()
	obj := &consensus.Object{ObjectMeta: metav1.ObjectMeta{Name: n.id.Name}}
	if err := obj.SetSpec(MemberSpec{Site: n.id.Site, Role: n.id.Role, Serials: []string{cert.Leaf.SerialNumber.Text(16)}, Joined: &now}); err != nil {
		return err
	}
	_, err := store.Create(ctx, &MemberKind, obj)
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// localAPIURL is the API's URL as a client on this host reaches it: an API
// bound to every address (0.0.0.0, ::) is reached on loopback, which its
// certificate names.
func (n *Node) localAPIURL() string {
	host, port, err := net.SplitHostPort(n.apiAddr())
	if err != nil {
		return n.APIURL()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "https://" + net.JoinHostPort(host, port)
}
