package main

import (
	"context"
	"flag"
	"io"
	"net"
)

// The backend's modes, the first byte a client sends.
const (
	modeStream = 'S' // the backend writes until the client goes away
	modeEcho   = 'E' // the backend echoes msgSize-byte messages
)

// msgSize is the size of each echo request and reply.
const msgSize = 64

// backendMain serves the backend: the edge service the tunnels reach.
func backendMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("backend", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:9000", "TCP address to serve")
	_ = fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	for {
		c, err := ln.Accept()
		if err != nil {
			return ctx.Err()
		}
		go serveBackend(ctx, c) // ends with its connection, closed on ctx
	}
}

var streamChunk = make([]byte, 64<<10)

func serveBackend(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case modeStream:
		for {
			if _, err := c.Write(streamChunk); err != nil {
				return
			}
		}
	case modeEcho:
		buf := make([]byte, msgSize)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
}
