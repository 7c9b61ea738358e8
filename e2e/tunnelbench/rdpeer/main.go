package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rancher/remotedialer"
	"github.com/sirupsen/logrus"
)

const clientKey = "edge"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: rdpeer server -ws IP:PORT -forward LISTEN=TARGET [-forward ...] | client -url ws://IP:PORT/connect")
		os.Exit(2)
	}
	logrus.SetLevel(logrus.WarnLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	ws := fs.String("ws", "", "server: address of the websocket endpoint the client dials")
	var forwards forwardList
	fs.Var(&forwards, "forward", "server: LISTEN=TARGET: connections accepted on LISTEN go through the tunnel to TARGET (repeatable)")
	url := fs.String("url", "", "client: the server's websocket URL")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "server":
		err = server(ctx, *ws, forwards)
	case "client":
		err = client(ctx, *url)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "rdpeer:", err)
		os.Exit(1)
	}
}

// forwardList is the repeated -forward flag.
type forwardList [][2]string

func (f *forwardList) String() string { return fmt.Sprint(*f) }

func (f *forwardList) Set(v string) error {
	listen, target, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("-forward %q must be LISTEN=TARGET", v)
	}
	*f = append(*f, [2]string{listen, target})
	return nil
}

// server serves the websocket and carries each connection accepted on a
// forward's listen address to its target through the client's tunnel, as
// Rancher's server does with Server.Dialer.
func server(ctx context.Context, ws string, forwards forwardList) error {
	srv := remotedialer.New(func(*http.Request) (string, bool, error) { return clientKey, true, nil }, remotedialer.DefaultErrorWriter)
	hs := &http.Server{Addr: ws, Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); _ = hs.Close() }()
	go func() { _ = hs.ListenAndServe() }()
	dial := srv.Dialer(clientKey)
	errs := make(chan error, len(forwards))
	for _, f := range forwards {
		ln, err := net.Listen("tcp", f[0])
		if err != nil {
			return err
		}
		go func() { <-ctx.Done(); _ = ln.Close() }()
		go func() { errs <- serveForward(ctx, ln, dial, f[1]) }()
	}
	for range forwards {
		if err := <-errs; err != nil {
			return err
		}
	}
	return ctx.Err()
}

// serveForward accepts connections on ln and relays each through dial to
// target.
func serveForward(ctx context.Context, ln net.Listener, dial remotedialer.Dialer, target string) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil
		}
		go func() {
			defer c.Close()
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			r, err := dial(dctx, "tcp", target)
			cancel()
			if err != nil {
				return
			}
			defer r.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(r, c); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, r); done <- struct{}{} }()
			<-done
		}()
	}
}

// client keeps the tunnel to the server up, allowing every dial.
func client(ctx context.Context, url string) error {
	headers := http.Header{"X-Tunnel-ID": []string{clientKey}}
	for ctx.Err() == nil {
		_ = remotedialer.ClientConnect(ctx, url, headers, nil, func(string, string) bool { return true }, nil)
	}
	return ctx.Err()
}
