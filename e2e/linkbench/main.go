package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"
)

const (
	// msgSize is the size of each echo request and reply.
	msgSize = 64
	// readSize is the receiver's read buffer.
	readSize = 64 << 10
	// gib is what cpu-s/GiB divides by.
	gib = 1 << 30
)

// result is one process's JSON line.
type result struct {
	Role  string `json:"role"`
	Proto string `json:"proto"`
	GSO   bool   `json:"gso"`
	// Bytes is what the bulk stream moved: sent and acknowledged by the
	// server (client), or read to EOF (server).
	Bytes int64 `json:"bytes"`
	// Seconds is the bulk transfer's wall time on this side.
	Seconds float64 `json:"seconds"`
	// MBPerSec is Bytes / Seconds / 1e6.
	MBPerSec float64 `json:"mb_per_s"`
	// CPUSeconds is this process's user+system time during the transfer
	// (getrusage RUSAGE_SELF).
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUPerGiB  float64 `json:"cpu_s_per_gib"`
	// RTT* describe the 64-byte round trips (client only).
	RTTCount  int     `json:"rtt_count,omitempty"`
	RTTP50us  float64 `json:"rtt_p50_us,omitempty"`
	RTTP99us  float64 `json:"rtt_p99_us,omitempty"`
	RTTMeanus float64 `json:"rtt_mean_us,omitempty"`
	Error     string  `json:"error,omitempty"`
}

// options are the flags of both subcommands.
type options struct {
	proto, addr, certs string
	bytes              int64
	rttCount           int
	writeSize          int
	noGSO              bool
}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "server" && os.Args[1] != "client") {
		fmt.Fprintln(os.Stderr, "usage: linkbench server|client -proto quic|outpost|tcptls -addr IP:PORT -certs DIR [client: -bytes N -rtt-count M]")
		os.Exit(2)
	}
	role := os.Args[1]
	fs := flag.NewFlagSet("linkbench "+role, flag.ExitOnError)
	var o options
	fs.StringVar(&o.proto, "proto", "", "quic, outpost or tcptls")
	fs.StringVar(&o.addr, "addr", "", "server address IP:PORT (the server binds it, the client dials it)")
	fs.StringVar(&o.certs, "certs", "", "directory with ca.crt, server.crt/.key, client.crt/.key")
	fs.Int64Var(&o.bytes, "bytes", 64<<20, "client: bytes to send on the bulk stream (0: none)")
	fs.IntVar(&o.rttCount, "rtt-count", 2000, "client: 64-byte round trips to time (0: none)")
	fs.IntVar(&o.writeSize, "write-size", 32<<10, "client: size of each bulk Write")
	fs.BoolVar(&o.noGSO, "no-gso", false, "disable quic-go's UDP GSO (QUIC_GO_DISABLE_GSO=true)")
	_ = fs.Parse(os.Args[2:])
	if o.noGSO {
		os.Setenv("QUIC_GO_DISABLE_GSO", "true")
	}
	// quic-go prints its UDP buffer warning through the standard log; the
	// Endpoint raises the buffers itself, bare quic-go with SO_RCVBUFFORCE.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	if role == "server" {
		err = runServer(ctx, o)
	} else {
		err = runClient(ctx, o)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "linkbench %s: %v\n", role, err)
		stop()
		os.Exit(1)
	}
}

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// finish fills the rate and CPU fields.
func (r *result) finish(elapsed, cpu time.Duration) {
	r.Seconds = elapsed.Seconds()
	r.CPUSeconds = cpu.Seconds()
	if r.Seconds > 0 {
		r.MBPerSec = float64(r.Bytes) / r.Seconds / 1e6
	}
	if r.Bytes > 0 {
		r.CPUPerGiB = r.CPUSeconds / (float64(r.Bytes) / gib)
	}
}

// printMu keeps the server's JSON lines whole.
var printMu sync.Mutex

func printResult(r result) {
	b, _ := json.Marshal(r)
	printMu.Lock()
	defer printMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

func gsoOn() bool { return os.Getenv("QUIC_GO_DISABLE_GSO") != "true" }

// runServer serves until ctx ends (SIGTERM): it echoes on echo streams and
// on each bulk stream reads to EOF, prints a result line, then answers with
// the count.
func runServer(ctx context.Context, o options) error {
	c, err := loadCerts(o.certs)
	if err != nil {
		return err
	}
	h := func(ctx context.Context, m mode, s stream) {
		switch m {
		case modeEcho:
			buf := make([]byte, msgSize)
			for {
				if _, err := io.ReadFull(s, buf); err != nil {
					return
				}
				if _, err := s.Write(buf); err != nil {
					return
				}
			}
		case modeBulk:
			res := result{Role: "server", Proto: o.proto, GSO: gsoOn()}
			t0, cpu0 := time.Now(), cpuTime()
			buf := make([]byte, readSize)
			var err error
			for {
				var n int
				n, err = s.Read(buf)
				res.Bytes += int64(n)
				if err != nil {
					break
				}
			}
			res.finish(time.Since(t0), cpuTime()-cpu0)
			if !errors.Is(err, io.EOF) {
				res.Error = err.Error()
			}
			// Printed before the answer, so the line is in the log when
			// the client has its answer.
			printResult(res)
			var ack [8]byte
			binary.BigEndian.PutUint64(ack[:], uint64(res.Bytes))
			_, _ = s.Write(ack[:])
			// Returning closes the stream: the answer is still delivered
			// (FIN after the data; nothing is left unread to cause a
			// TCP reset).
		}
	}
	err = serve(ctx, o.proto, o.addr, c, h, func() {
		fmt.Fprintf(os.Stderr, "linkbench: serving %s on %s (gso %v)\n", o.proto, o.addr, gsoOn())
	})
	if err != nil && ctx.Err() != nil {
		return nil // stopped by a signal; a shutdown error does not matter here
	}
	return err
}

// runClient times the round trips, then the bulk transfer, and prints one
// result line. A failed run still prints its line, with error set.
func runClient(ctx context.Context, o options) error {
	res := result{Role: "client", Proto: o.proto, GSO: gsoOn()}
	err := client(ctx, o, &res)
	if err != nil {
		res.Error = err.Error()
	}
	printResult(res)
	return err
}

func client(ctx context.Context, o options, res *result) (err error) {
	if o.writeSize <= 0 {
		return fmt.Errorf("-write-size %d must be positive", o.writeSize)
	}
	c, err := loadCerts(o.certs)
	if err != nil {
		return err
	}
	op, err := dial(ctx, o.proto, o.addr, c)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, op.Close()) }()
	if o.rttCount > 0 {
		if err := roundTrips(ctx, op, o.rttCount, res); err != nil {
			return err
		}
	}
	if o.bytes > 0 {
		return bulk(ctx, op, o.bytes, o.writeSize, res)
	}
	return nil
}

// roundTrips times n 64-byte request/response exchanges on one stream,
// after a warm-up of n/10 (at most 100) untimed ones.
func roundTrips(ctx context.Context, op opener, n int, res *result) error {
	s, err := op.Open(ctx, modeEcho)
	if err != nil {
		return err
	}
	defer s.Close()
	msg, reply := make([]byte, msgSize), make([]byte, msgSize)
	warm := min(n/10, 100)
	lat := make([]time.Duration, 0, n)
	for i := range warm + n {
		t0 := time.Now()
		if _, err := s.Write(msg); err != nil {
			return fmt.Errorf("echo write: %w", err)
		}
		if _, err := io.ReadFull(s, reply); err != nil {
			return fmt.Errorf("echo read: %w", err)
		}
		if i >= warm {
			lat = append(lat, time.Since(t0))
		}
	}
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	slices.Sort(lat)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	res.RTTCount = n
	res.RTTP50us = us(lat[n/2])
	res.RTTP99us = us(lat[n*99/100])
	res.RTTMeanus = us(sum / time.Duration(n))
	return nil
}

// bulk sends total bytes in writes of size, half-closes, and waits for the
// server's count.
func bulk(ctx context.Context, op opener, total int64, size int, res *result) error {
	s, err := op.Open(ctx, modeBulk)
	if err != nil {
		return err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { _ = s.Close() })
	defer stop()
	buf := make([]byte, size)
	t0, cpu0 := time.Now(), cpuTime()
	for left := total; left > 0; {
		n := min(int64(size), left)
		if _, err := s.Write(buf[:n]); err != nil {
			return fmt.Errorf("bulk write: %w", err)
		}
		left -= n
	}
	if err := s.CloseWrite(); err != nil {
		return fmt.Errorf("bulk close write: %w", err)
	}
	var ack [8]byte
	if _, err := io.ReadFull(s, ack[:]); err != nil {
		return fmt.Errorf("read the server's count: %w", err)
	}
	res.Bytes = int64(binary.BigEndian.Uint64(ack[:]))
	res.finish(time.Since(t0), cpuTime()-cpu0)
	if res.Bytes != total {
		return fmt.Errorf("server received %d bytes, sent %d", res.Bytes, total)
	}
	return nil
}
