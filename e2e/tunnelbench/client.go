package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"
)

// clientResult is what one client run prints, as JSON.
type clientResult struct {
	// Bulk: bytes read and the seconds they took.
	Bytes   int64   `json:"bytes,omitempty"`
	Seconds float64 `json:"seconds,omitempty"`
	// RTT: 64-byte round trips.
	RTTCount int     `json:"rtt_count,omitempty"`
	RTTP50us float64 `json:"rtt_p50_us,omitempty"`
	RTTP99us float64 `json:"rtt_p99_us,omitempty"`
	// Streams: each reading stream's MB/s.
	StreamMBps []float64 `json:"stream_mbps,omitempty"`
	// Kubernetes API: GET of one object and LIST of listSize, µs.
	GetP50us  float64 `json:"get_p50_us,omitempty"`
	GetP99us  float64 `json:"get_p99_us,omitempty"`
	ListP50us float64 `json:"list_p50_us,omitempty"`
	ListP99us float64 `json:"list_p99_us,omitempty"`
}

// clientMain runs one measurement against addr and prints its result.
func clientMain(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("client: bulk, rtt, streams or wait")
	}
	mode := args[0]
	fs := flag.NewFlagSet("client "+mode, flag.ExitOnError)
	addr := fs.String("addr", "", "address to connect to")
	secs := fs.Float64("secs", 3, "how long to measure")
	n := fs.Int("n", 16, "streams: how many streams read")
	slow := fs.Bool("slow", false, "streams: add one stream that never reads")
	kubeInfoPath := fs.String("kube-info", "", "kube: the file `tunnelbench kube` wrote")
	_ = fs.Parse(args[1:])
	d := time.Duration(*secs * float64(time.Second))
	var res clientResult
	var err error
	switch mode {
	case "bulk":
		res, err = bulk(ctx, *addr, d)
	case "rtt":
		res, err = rtt(ctx, *addr, d)
	case "streams":
		res, err = streams(ctx, *addr, *n, *slow, d)
	case "kube":
		res, err = kubeLatency(ctx, *addr, *kubeInfoPath, d)
	case "wait":
		err = wait(ctx, *addr, d)
	case "wait-tcp":
		err = waitTCP(ctx, *addr, d)
	default:
		err = fmt.Errorf("client: unknown mode %q", mode)
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// dialMode connects to addr and asks the backend for mode.
func dialMode(ctx context.Context, addr string, mode byte) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{mode}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// readFor reads c until d has passed since its first byte, and returns
// what it read and how long.
func readFor(c net.Conn, d time.Duration) (int64, time.Duration, error) {
	buf := make([]byte, 64<<10)
	var start time.Time
	var n int64
	for {
		k, err := c.Read(buf)
		if start.IsZero() {
			start = time.Now()
			_ = c.SetReadDeadline(start.Add(d))
		} else {
			n += int64(k) // the first read only starts the clock
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return n, time.Since(start), nil
			}
			return n, time.Since(start), err
		}
	}
}

func bulk(ctx context.Context, addr string, d time.Duration) (clientResult, error) {
	c, err := dialMode(ctx, addr, modeStream)
	if err != nil {
		return clientResult{}, err
	}
	defer c.Close()
	n, took, err := readFor(c, d)
	return clientResult{Bytes: n, Seconds: took.Seconds()}, err
}

func rtt(ctx context.Context, addr string, d time.Duration) (clientResult, error) {
	c, err := dialMode(ctx, addr, modeEcho)
	if err != nil {
		return clientResult{}, err
	}
	defer c.Close()
	buf := make([]byte, msgSize)
	var times []time.Duration
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end) && i < 1_000_000; i++ {
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			return clientResult{}, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return clientResult{}, err
		}
		if i >= 100 { // warm-up
			times = append(times, time.Since(start))
		}
	}
	if len(times) == 0 {
		return clientResult{}, errors.New("no round trip completed")
	}
	slices.Sort(times)
	us := func(q float64) float64 { return float64(times[int(q*float64(len(times)-1))].Nanoseconds()) / 1e3 }
	return clientResult{RTTCount: len(times), RTTP50us: us(0.5), RTTP99us: us(0.99)}, nil
}

// streams reads n streams at once for d; with slow, one more stream asks
// for data and never reads it.
func streams(ctx context.Context, addr string, n int, slow bool, d time.Duration) (clientResult, error) {
	if slow {
		c, err := dialMode(ctx, addr, modeStream)
		if err != nil {
			return clientResult{}, err
		}
		defer c.Close()
		time.Sleep(500 * time.Millisecond) // let it fill every buffer on the way
	}
	rates := make([]float64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := dialMode(ctx, addr, modeStream)
			if err != nil {
				errs[i] = err
				return
			}
			defer c.Close()
			b, took, err := readFor(c, d)
			rates[i], errs[i] = float64(b)/took.Seconds()/1e6, err
		})
	}
	wg.Wait()
	return clientResult{StreamMBps: rates}, errors.Join(errs...)
}

// wait polls until an echo round trip through addr works.
func wait(ctx context.Context, addr string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		if c, err := dialMode(ctx, addr, modeEcho); err == nil {
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, msgSize)
			_, err = c.Write(buf)
			if err == nil {
				_, err = io.ReadFull(c, buf)
			}
			c.Close()
			if err == nil {
				return nil
			}
			last = err
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not answering after %s: %v", addr, d, last)
}

// waitTCP polls until a TCP connection to addr succeeds (for servers that
// do not speak the backend's echo).
func waitTCP(ctx context.Context, addr string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		var dl net.Dialer
		c, err := dl.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not accepting after %s: %v", addr, d, last)
}
