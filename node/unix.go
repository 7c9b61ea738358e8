package node

import (
	"context"
	"net"
)

type unixDialer struct{ path string }

func (d *unixDialer) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	var nd net.Dialer
	return nd.DialContext(ctx, "unix", d.path)
}
