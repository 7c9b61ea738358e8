#!/usr/bin/env bash
# bench.sh runs Outpost's benchmarks. Each section prints the raw `go test`
# output, then a Markdown table comparing the two implementations its
# benchmarks pit against each other (sub-benchmarks named store=<name>).
# It exits non-zero if any `go test` run fails.
#
# To add a section: write a bench_<package> function and call it from main.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run_bench PKG BENCHTIME OUT runs PKG's benchmarks, printing the raw output
# and saving it in OUT.
run_bench() {
	go test -run '^$' -bench . -benchtime="$2" -count=1 "$1" | tee "$3"
}

# compare_table A B LABEL_A LABEL_B < OUT prints one row per operation and
# metric, with the results of store=A and store=B side by side. Rates (units
# ending in /s; ns/op becomes ops/s when a benchmark reports no rate) and
# latencies (units ending in -µs) are compared so that ratio > 1 means A is
# faster.
compare_table() {
	awk -v a="$1" -v b="$2" -v la="$3" -v lb="$4" '
	function add(row, store, v) {
		if (!(row in seen)) { seen[row] = 1; rows[++n] = row }
		val[row, store] = v
	}
	function num(row, store) {
		if (!((row, store) in val)) return "–"
		return sprintf(val[row, store] >= 100 ? "%.0f" : "%.2f", val[row, store])
	}
	/^Benchmark/ {
		name = $1
		sub(/-[0-9]+$/, "", name)                  # GOMAXPROCS suffix
		if (!match(name, /\/store=[^\/]+/)) next
		store = substr(name, RSTART + 7, RLENGTH - 7)
		op = substr(name, 1, RSTART - 1) substr(name, RSTART + RLENGTH)
		sub(/^Benchmark/, "", op)
		rate = 0; nsop = 0
		for (i = 3; i < NF; i += 2) {
			unit = $(i + 1)
			if (unit == "ns/op") nsop = $i
			if (unit ~ /\/s$/) rate = 1
			if (unit ~ /\/s$/ || unit ~ /-µs$/) add(op " (" unit ")", store, $i)
		}
		if (!rate && nsop > 0) add(op " (ops/s)", store, 1e9 / nsop)
	}
	END {
		printf "| operation | %s | %s | ratio |\n|---|--:|--:|--:|\n", la, lb
		for (i = 1; i <= n; i++) {
			r = rows[i]; ratio = "–"
			if ((r, a) in val && (r, b) in val && val[r, a] > 0 && val[r, b] > 0)
				ratio = sprintf("%.2f", r ~ /-µs\)$/ ? val[r, b] / val[r, a] : val[r, a] / val[r, b])
			printf "| %s | %s | %s | %s |\n", r, num(r, a), num(r, b), ratio
		}
		printf "\nratio: %s rate / %s rate, or %s latency / %s latency: > 1 means %s is faster.\n", la, lb, lb, la, la
	}'
}

# bench_consensus compares the Badger Raft log store with raft-boltdb, alone
# and under a three-node Raft group. About a minute on two cores.
bench_consensus() {
	echo "## consensus: Raft log store, Badger vs BoltDB"
	echo
	run_bench ./consensus/ 2s "$tmp/consensus.txt"
	echo
	compare_table badger bolt badger boltdb <"$tmp/consensus.txt"
}

# bench_transport compares Outpost's QUIC streams with bare quic-go and with
# TCP + TLS 1.3 on loopback (throughput, CPU per GiB for both ends, 64-byte
# round trips; bulk again with GSO off), and Raft over the QUIC stream layer
# with Raft's own TCP transport. About a minute and a half on two cores.
bench_transport() {
	echo "## transport: QUIC streams vs bare quic-go vs TCP+TLS 1.3; Raft over QUIC vs TCP"
	echo
	go test -run '^$' -bench 'Bulk$|RTT64|RaftApply' -benchtime=1s -count=1 ./transport/ | tee "$tmp/transport.txt"
	echo
	echo "GSO off (QUIC_GO_DISABLE_GSO=true):"
	QUIC_GO_DISABLE_GSO=true go test -run '^$' -bench 'Bulk$/(quic-bare|outpost)' -benchtime=1s -count=1 ./transport/ | tee "$tmp/transport-nogso.txt"
	echo
	awk '
	FNR == 1 { pre = (FILENAME ~ /nogso/) ? "nogso:" : "" }
	/^Benchmark/ {
		name = $1
		sub(/-[0-9]+$/, "", name)
		sub(/^Benchmark/, "", name)
		for (i = 3; i < NF; i += 2) v[pre name, $(i + 1)] = $i
	}
	function get(k, u) { return ((k, u) in v) ? v[k, u] : "" }
	function fmt(x) { return x == "" ? "–" : sprintf(x >= 100 ? "%.0f" : "%.2f", x) }
	function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "–" : sprintf("%.2f", a / b) }
	function row(label, o, q, t, u,    a, b, c) {
		a = get(o, u); b = get(q, u); c = get(t, u)
		printf "| %s | %s | %s | %s | %s | %s |\n", label, fmt(a), fmt(b), fmt(c), ratio(a, b), ratio(b, c)
	}
	END {
		print "| measure | outpost stream | bare quic-go | TCP+TLS 1.3 | outpost / quic-go | quic-go / TCP+TLS |"
		print "|---|--:|--:|--:|--:|--:|"
		row("bulk, 1 stream (MB/s)", "Bulk/outpost-stream-1", "Bulk/quic-bare-1stream", "Bulk/tcp-tls13-1conn", "MB/s")
		row("bulk, 1 stream (cpu-s/GiB)", "Bulk/outpost-stream-1", "Bulk/quic-bare-1stream", "Bulk/tcp-tls13-1conn", "cpu-s/GiB")
		row("bulk, 8 streams (MB/s)", "Bulk/outpost-stream-8", "Bulk/quic-bare-8streams", "Bulk/tcp-tls13-8conns", "MB/s")
		row("bulk, 8 streams (cpu-s/GiB)", "Bulk/outpost-stream-8", "Bulk/quic-bare-8streams", "Bulk/tcp-tls13-8conns", "cpu-s/GiB")
		row("bulk, 1 stream, GSO off (MB/s)", "nogso:Bulk/outpost-stream-1", "nogso:Bulk/quic-bare-1stream", "", "MB/s")
		row("bulk, 1 stream, GSO off (cpu-s/GiB)", "nogso:Bulk/outpost-stream-1", "nogso:Bulk/quic-bare-1stream", "", "cpu-s/GiB")
		row("64-byte round trip (µs)", "RTT64/outpost-stream", "RTT64/quic-bare", "RTT64/tcp-tls13", "µs/rtt")
		print ""
		print "ratio = left column / right column: above 1 is better for MB/s, worse for cpu-s/GiB and µs."
		print ""
		print "| Raft apply, 3 servers | over QUIC stream layer | raft TCP transport | QUIC / TCP |"
		print "|---|--:|--:|--:|"
		split("applies/s p50-µs p99-µs", units, " ")
		for (i = 1; i <= 3; i++) {
			a = get("RaftApply/quic-streamlayer", units[i]); b = get("RaftApply/tcp-transport", units[i])
			printf "| %s | %s | %s | %s |\n", units[i], fmt(a), fmt(b), ratio(a, b)
		}
	}' "$tmp/transport.txt" "$tmp/transport-nogso.txt"
}

# bench_link runs e2e's TestLinkBench: bare quic-go, Outpost streams and
# TCP + TLS 1.3 between two network-namespace hosts behind a 100 Mbit/s tbf
# each way (throughput, % of the link, CPU per GiB of sender and receiver,
# 64-byte round trips). Needs root (it skips otherwise). About a minute.
bench_link() {
	echo "## link: QUIC streams vs bare quic-go vs TCP+TLS 1.3 across 100 Mbit/s (e2e TestLinkBench)"
	echo
	go test -tags e2e -count=1 -timeout 10m -run '^TestLinkBench$' -v ./e2e/ | tee "$tmp/link.txt"
	echo
	sed -nE 's/^ +((\||link: ).*)$/\1/p' "$tmp/link.txt"
}

# bench_ota_hub measures the hub's own share of a 10,000-device task in 100
# sites (creating the DeviceResults, ingesting one result per device), with
# the sites' reports made in-process: the node side is not simulated.
bench_ota_hub() {
	echo "== OTA hub: 10,000 devices in 100 sites"
	go test -run '^$' -bench BenchmarkHubFanout -benchtime 1x -count=1 ./ota/control/ | tee "$tmp/ota.txt"
	awk '/^BenchmarkHubFanout/ {
		for (i = 3; i < NF; i += 2) v[$(i + 1)] = $i
		printf "\n| measure | value |\n|---|--:|\n"
		printf "| create 10,000 DeviceResults (s) | %.2f |\n", v["create-s"]
		printf "| ingest 10,000 results (s) | %.2f |\n", v["ingest-s"]
		printf "| results ingested per second | %.0f |\n", v["results-ingested/s"]
		printf "| Go heap in use (MiB) | %.0f |\n", v["heap-MiB"]
	}' "$tmp/ota.txt"
}

main() {
	bench_consensus
	bench_transport
	bench_link
	bench_ota_hub
}

main "$@"
