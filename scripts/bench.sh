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

main() {
	bench_consensus
}

main "$@"
