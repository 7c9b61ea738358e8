package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/outpost-mesh/outpost/internal/kubetest"
)

// kubeInfo is what `tunnelbench kube` writes for the others: where its API
// server is (on the edge side's loopback) and how to trust it.
type kubeInfo struct {
	Addr string `json:"addr"`
	CA   []byte `json:"ca"`
}

// listSize is how many ConfigMaps the LIST returns.
const listSize = 100

// kubeMain runs a real kube-apiserver and etcd (internal/kubetest) with
// listSize ConfigMaps in namespace "bench", writes a kubeInfo to -info, and
// with -forward also accepts connections there for the API server (how the
// hub side reaches it directly across the link; the server binds loopback).
func kubeMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kube", flag.ExitOnError)
	info := fs.String("info", "", "file to write the API server's address and CA to")
	forward := fs.String("forward", "", "address to forward to the API server (direct access from the hub side)")
	_ = fs.Parse(args)
	s, err := kubetest.Start(ctx)
	if err != nil {
		return err
	}
	defer s.Stop()
	if _, err := s.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for i := range listSize {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%d", i)}, Data: map[string]string{"k": "some value of a typical size, about a line"}}
		if _, err := s.Client.CoreV1().ConfigMaps("bench").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	u, err := url.Parse(s.URL)
	if err != nil {
		return err
	}
	if *forward != "" {
		ln, err := net.Listen("tcp", *forward)
		if err != nil {
			return err
		}
		context.AfterFunc(ctx, func() { ln.Close() })
		go forwardAll(ln, u.Host) // ends when ctx closes the listener
	}
	b, _ := json.Marshal(kubeInfo{Addr: u.Host, CA: s.CAPEM})
	if err := os.WriteFile(*info, b, 0o600); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// forwardAll relays each connection accepted on ln to target.
func forwardAll(ln net.Listener, target string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r, err := net.Dial("tcp", target)
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

// kubeLatency times GETs of one ConfigMap, then LISTs of the namespace's
// listSize ConfigMaps, each for d, over client-go's kept-alive connection
// through addr, verifying the server as its certificate names it.
func kubeLatency(ctx context.Context, addr, infoPath string, d time.Duration) (clientResult, error) {
	b, err := os.ReadFile(infoPath)
	if err != nil {
		return clientResult{}, err
	}
	var info kubeInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return clientResult{}, err
	}
	cfg := &rest.Config{
		Host: "https://" + addr, BearerToken: kubetest.AdminToken, QPS: -1,
		TLSClientConfig: rest.TLSClientConfig{CAData: info.CA, ServerName: kubetest.ServerName},
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return clientResult{}, err
	}
	cms := cs.CoreV1().ConfigMaps("bench")
	time1 := func(f func() error) ([]time.Duration, error) {
		var ts []time.Duration
		end := time.Now().Add(d)
		for i := 0; time.Now().Before(end) && i < 100_000; i++ {
			start := time.Now()
			if err := f(); err != nil {
				return nil, err
			}
			if i >= 10 { // warm-up
				ts = append(ts, time.Since(start))
			}
		}
		slices.Sort(ts)
		return ts, nil
	}
	gets, err := time1(func() error { _, err := cms.Get(ctx, "cm-0", metav1.GetOptions{}); return err })
	if err != nil {
		return clientResult{}, fmt.Errorf("GET: %w", err)
	}
	lists, err := time1(func() error {
		l, err := cms.List(ctx, metav1.ListOptions{})
		if err == nil && len(l.Items) != listSize {
			err = fmt.Errorf("LIST returned %d items, want %d", len(l.Items), listSize)
		}
		return err
	})
	if err != nil {
		return clientResult{}, fmt.Errorf("LIST: %w", err)
	}
	q := func(ts []time.Duration, p float64) float64 {
		if len(ts) == 0 {
			return 0
		}
		return float64(ts[int(p*float64(len(ts)-1))].Nanoseconds()) / 1e3
	}
	return clientResult{GetP50us: q(gets, 0.5), GetP99us: q(gets, 0.99), ListP50us: q(lists, 0.5), ListP99us: q(lists, 0.99)}, nil
}
