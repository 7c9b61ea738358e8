package main

import (
	"fmt"
	"io"
	"slices"
)

// printTables writes the results as markdown tables.
func printTables(w io.Writer, rs []result, o options, notes []string) {
	direct := map[string]result{}
	for _, r := range rs {
		if r.tunnel == "direct" && r.err == nil {
			direct[r.path] = r
		}
	}
	pathName := func(p string) string {
		if p == "link" {
			return fmt.Sprintf("%d Mbit/s link", o.mbit)
		}
		return p
	}
	fmt.Fprintf(w, "### Bulk download, edge to hub, one connection (%.0f s each)\n\n", o.secs)
	fmt.Fprintln(w, "| path | tunnel | MB/s | % of direct | tunnel cpu-s/GiB | total cpu-s/GiB |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|")
	for _, r := range rs {
		if r.err != nil {
			fmt.Fprintf(w, "| %s | %s | failed: %v | | | |\n", pathName(r.path), r.tunnel, r.err)
			continue
		}
		pct, tcpu := "", "—"
		if d, ok := direct[r.path]; ok && d.mbps > 0 {
			pct = fmt.Sprintf("%.1f%%", 100*r.mbps/d.mbps)
		}
		if r.tunnel != "direct" {
			tcpu = fmt.Sprintf("%.2f", r.tunnelCPU)
		}
		fmt.Fprintf(w, "| %s | %s | %.1f | %s | %s | %.2f |\n", pathName(r.path), r.tunnel, r.mbps, pct, tcpu, r.totalCPU)
	}
	fmt.Fprintln(w, "\n### 64-byte request round trips, one connection")
	fmt.Fprintln(w, "\n| path | tunnel | p50 µs | p99 µs | added p50 µs |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|")
	for _, r := range rs {
		if r.err != nil {
			continue
		}
		added := ""
		if d, ok := direct[r.path]; ok && r.tunnel != "direct" {
			added = fmt.Sprintf("%.0f", r.p50-d.p50)
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %.0f | %s |\n", pathName(r.path), r.tunnel, r.p50, r.p99, added)
	}
	fmt.Fprintf(w, "\n### %d concurrent downloads, without and with one more client that never reads\n\n", o.streams)
	fmt.Fprintln(w, "| path | tunnel | sum MB/s | sum with stalled reader | slowest stream MB/s | slowest with stalled reader |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|")
	for _, r := range rs {
		if r.err != nil || len(r.base) == 0 || len(r.slow) == 0 {
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %.1f | %.1f | %.2f | %.2f |\n", pathName(r.path), r.tunnel, sum(r.base), sum(r.slow), slices.Min(r.base), slices.Min(r.slow))
	}
	kube := false
	for _, r := range rs {
		kube = kube || r.getP50 > 0
	}
	if kube {
		fmt.Fprintf(w, "\n### Kubernetes API through each tunnel (client-go, one kept-alive connection, real kube-apiserver %s)\n\n", "v1.37.2")
		fmt.Fprintf(w, "| path | tunnel | GET p50 µs | GET p99 µs | LIST (%d) p50 µs | LIST p99 µs | added GET p50 µs |\n", listSize)
		fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|")
		for _, r := range rs {
			if r.err != nil || r.getP50 == 0 {
				continue
			}
			added := ""
			if d, ok := direct[r.path]; ok && r.tunnel != "direct" && d.getP50 > 0 {
				added = fmt.Sprintf("%.0f", r.getP50-d.getP50)
			}
			fmt.Fprintf(w, "| %s | %s | %.0f | %.0f | %.0f | %.0f | %s |\n", pathName(r.path), r.tunnel, r.getP50, r.getP99, r.listP50, r.listP99, added)
		}
	}
	fmt.Fprintln(w, "\ntunnel cpu-s/GiB: CPU of the tunnel's own processes (both ends) per GiB moved; total adds the client and the backend.")
	fmt.Fprintln(w, "ssh uses "+sshCipher+"; our tunnel is transport's QUIC (TLS 1.3, AES-GCM) with quic-go's GSO on.")
	for _, n := range notes {
		fmt.Fprintln(w, "\n"+n)
	}
}

func sum(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s
}
