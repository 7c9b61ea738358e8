package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-mesh/outpost/transport"
)

// mode is what a stream is for. Bare QUIC and TCP streams carry it as their
// first byte; Outpost streams as their kind.
type mode byte

const (
	modeBulk mode = 'B'
	modeEcho mode = 'E'
)

// kindOf maps a mode to the Outpost stream kind that carries it.
var kindOf = map[mode]transport.Kind{modeBulk: transport.KindBlob, modeEcho: transport.KindRPC}

// quicALPN is the ALPN of bare quic-go connections.
const quicALPN = "linkbench/1"

// stream is one QUIC stream or TCP connection of a run.
type stream interface {
	io.ReadWriter
	// CloseWrite half-closes: the peer reads EOF.
	CloseWrite() error
	// Close ends both directions.
	Close() error
}

// handler serves one accepted stream of mode m.
type handler func(ctx context.Context, m mode, s stream)

// opener is the client side of a protocol.
type opener interface {
	// Open starts a stream of mode m.
	Open(ctx context.Context, m mode) (stream, error)
	// Close ends the client's connections.
	Close() error
}

// certs is what the certificate directory holds.
type certs struct {
	pool   *x509.CertPool
	server tls.Certificate
	client tls.Certificate
}

func loadCerts(dir string) (*certs, error) {
	if dir == "" {
		return nil, errors.New("-certs is required")
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in %s", filepath.Join(dir, "ca.crt"))
	}
	c := &certs{pool: pool}
	for name, dst := range map[string]*tls.Certificate{"server": &c.server, "client": &c.client} {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		if err != nil {
			return nil, fmt.Errorf("load %s certificate: %w", name, err)
		}
		*dst = pair
	}
	return c, nil
}

// serve listens on addr with proto and runs h for every stream until ctx
// ends. ready runs once the socket is bound.
func serve(ctx context.Context, proto, addr string, c *certs, h handler, ready func()) error {
	switch proto {
	case "quic":
		return serveQUIC(ctx, addr, c, h, ready)
	case "outpost":
		return serveOutpost(ctx, addr, c, h, ready)
	case "tcptls":
		return serveTCPTLS(ctx, addr, c, h, ready)
	}
	return fmt.Errorf("-proto %q must be quic, outpost or tcptls", proto)
}

// dial connects to addr with proto (the TCP protocol connects per Open).
func dial(ctx context.Context, proto, addr string, c *certs) (opener, error) {
	switch proto {
	case "quic":
		return dialQUIC(ctx, addr, c)
	case "outpost":
		return dialOutpost(addr, c)
	case "tcptls":
		return &tcpTLSOpener{addr: addr, conf: clientTLS(c, addr, nil)}, nil
	}
	return nil, fmt.Errorf("-proto %q must be quic, outpost or tcptls", proto)
}

// serverTLS requires and verifies a client certificate.
func serverTLS(c *certs, alpn []string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13, NextProtos: alpn, Certificates: []tls.Certificate{c.server},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: c.pool,
	}
}

// clientTLS verifies the server's certificate for the IP it dials.
func clientTLS(c *certs, addr string, alpn []string) *tls.Config {
	host, _, _ := net.SplitHostPort(addr)
	return &tls.Config{
		MinVersion: tls.VersionTLS13, NextProtos: alpn, Certificates: []tls.Certificate{c.client},
		RootCAs: c.pool, ServerName: host,
	}
}

// quicConfig matches the transport benchmarks' bare quic-go: quic-go's
// default windows, as Outpost uses.
func quicConfig() *quic.Config {
	return &quic.Config{MaxIdleTimeout: 30 * time.Second}
}

// readMode reads a stream's mode byte.
func readMode(r io.Reader) (mode, error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, fmt.Errorf("read mode byte: %w", err)
	}
	return mode(b[0]), nil
}

func serveQUIC(ctx context.Context, addr string, c *certs, h handler, ready func()) error {
	ln, err := quic.ListenAddr(addr, serverTLS(c, []string{quicALPN}), quicConfig())
	if err != nil {
		return fmt.Errorf("listen quic %s: %w", addr, err)
	}
	ready()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-ctx.Done()
		return ln.Close()
	})
	g.Go(func() error {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return nil // ctx is done
			}
			g.Go(func() error {
				defer conn.CloseWithError(0, "")
				for {
					qs, err := conn.AcceptStream(ctx)
					if err != nil {
						return nil // connection or ctx closed
					}
					g.Go(func() error {
						s := quicStream{qs}
						defer s.Close()
						if m, err := readMode(qs); err == nil {
							h(ctx, m, s)
						}
						return nil
					})
				}
			})
		}
	})
	return g.Wait()
}

// quicStream gives a quic-go stream the stream shape.
type quicStream struct{ *quic.Stream }

func (s quicStream) CloseWrite() error { return s.Stream.Close() }

func (s quicStream) Close() error {
	s.CancelRead(0)
	return s.Stream.Close()
}

// quicOpener opens streams on one connection.
type quicOpener struct{ conn *quic.Conn }

func dialQUIC(ctx context.Context, addr string, c *certs) (*quicOpener, error) {
	conn, err := quic.DialAddr(ctx, addr, clientTLS(c, addr, []string{quicALPN}), quicConfig())
	if err != nil {
		return nil, fmt.Errorf("dial quic %s: %w", addr, err)
	}
	return &quicOpener{conn: conn}, nil
}

func (o *quicOpener) Open(ctx context.Context, m mode) (stream, error) {
	qs, err := o.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	if _, err := qs.Write([]byte{byte(m)}); err != nil {
		return nil, fmt.Errorf("write mode byte: %w", err)
	}
	return quicStream{qs}, nil
}

func (o *quicOpener) Close() error { return o.conn.CloseWithError(0, "") }

// outpostConfig is the production transport config on addr with the given
// certificate; warnings (socket buffers) go to stderr.
func outpostConfig(addr string, c *certs, cert *tls.Certificate) transport.Config {
	cfg := transport.DefaultConfig()
	cfg.BindAddr = addr
	cfg.CAs = c.pool
	cfg.GetCertificate = func() (*tls.Certificate, error) { return cert, nil }
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cfg
}

func serveOutpost(ctx context.Context, addr string, c *certs, h handler, ready func()) error {
	e, err := transport.New(outpostConfig(addr, c, &c.server))
	if err != nil {
		return err
	}
	for m, k := range kindOf {
		e.Handle(k, func(ctx context.Context, s *transport.Stream) { h(ctx, m, s) })
	}
	ready() // the socket is bound: datagrams wait in its buffer until Run
	return e.Run(ctx)
}

// outpostOpener is a client Endpoint running until Close.
type outpostOpener struct {
	e      *transport.Endpoint
	addr   string
	cancel context.CancelFunc
	g      *errgroup.Group
}

func dialOutpost(addr string, c *certs) (*outpostOpener, error) {
	e, err := transport.New(outpostConfig("0.0.0.0:0", c, &c.client))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := new(errgroup.Group)
	g.Go(func() error { return e.Run(ctx) })
	return &outpostOpener{e: e, addr: addr, cancel: cancel, g: g}, nil
}

func (o *outpostOpener) Open(ctx context.Context, m mode) (stream, error) {
	s, err := o.e.Dial(ctx, o.addr, kindOf[m])
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", o.addr, err)
	}
	return s, nil
}

func (o *outpostOpener) Close() error {
	o.cancel()
	return o.g.Wait()
}

func serveTCPTLS(ctx context.Context, addr string, c *certs, h handler, ready func()) error {
	ln, err := tls.Listen("tcp", addr, serverTLS(c, nil))
	if err != nil {
		return fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	ready()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-ctx.Done()
		return ln.Close()
	})
	g.Go(func() error {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return nil // the listener was closed
			}
			g.Go(func() error {
				conn := nc.(*tls.Conn)
				stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
				defer stop()
				defer conn.Close()
				if m, err := readMode(conn); err == nil {
					h(ctx, m, conn)
				}
				return nil
			})
		}
	})
	return g.Wait()
}

// tcpTLSOpener makes one TLS connection per Open.
type tcpTLSOpener struct {
	addr string
	conf *tls.Config
}

func (o *tcpTLSOpener) Open(ctx context.Context, m mode) (stream, error) {
	d := tls.Dialer{Config: o.conf}
	nc, err := d.DialContext(ctx, "tcp", o.addr)
	if err != nil {
		return nil, fmt.Errorf("dial tcp %s: %w", o.addr, err)
	}
	conn := nc.(*tls.Conn)
	if _, err := conn.Write([]byte{byte(m)}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("write mode byte: %w", err)
	}
	return conn, nil
}

func (o *tcpTLSOpener) Close() error { return nil }
