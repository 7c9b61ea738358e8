#!/usr/bin/env bash
# The embedded default, shown working: a one-node hub in ./outpost-data plus a
# site "lab" of two nodes joined with a token (all on this host: the site's
# nodes listen on 127.0.0.1 with their own ports), then a real OTA task across
# both sites and a real image pull through the site's cache, all through the
# real CLI. Processes already running from an
# earlier `make demo` are reused. `scripts/demo.sh stop` stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./bin/outpost
DATA=outpost-data
SITE_NODES=(edge-1 edge-2)

pidfile() { if [ "$1" = hub ]; then echo "$DATA/outpost.pid"; else echo "$DATA/lab/$1/outpost.pid"; fi; }
running() { local f; f=$(pidfile "$1"); [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

stop() {
  for n in "${SITE_NODES[@]}" hub; do
    if running "$n"; then
      kill -TERM "$(cat "$(pidfile "$n")")"
      for _ in $(seq 1 150); do running "$n" || break; sleep 0.1; done
      echo "$n stopped"
    fi
    rm -f "$(pidfile "$n")"
  done
  echo "(the data stays in ./$DATA; remove it to start afresh)"
}

if [ "${1:-}" = stop ]; then
  stop
  exit 0
fi

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

# wait_for DESCRIPTION LOG PROCESS COMMAND...: poll COMMAND (bounded, 30 s).
wait_for() {
  local what=$1 log=$2 proc=$3
  shift 3
  for i in $(seq 1 150); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! running "$proc"; then echo "$proc exited; its log:"; cat "$log"; exit 1; fi
    if [ "$i" = 150 ]; then echo "$what did not happen in 30 s; the log of $proc:"; cat "$log"; exit 1; fi
    sleep 0.2
  done
}

hub_has() { "$BIN" get nodes -o json 2>/dev/null | grep -q "\"name\": \"$1\""; }
hub_alive() { [ -f "$DATA/admin.yaml" ] && "$BIN" get nodes -o json 2>/dev/null | grep -q '"state": "alive"'; }

mkdir -p "$DATA"
if running hub; then
  echo "the hub is already running from ./$DATA (pid $(cat "$(pidfile hub)"))"
else
  # The embedded default, kept on loopback for the demo.
  echo "starting the embedded default, a one-node hub: $BIN node --bind-addr 127.0.0.1 --registry-push   (log: $DATA/outpost.log)"
  nohup "$BIN" node --bind-addr 127.0.0.1 --registry-push >"$DATA/outpost.log" 2>&1 &
  echo $! >"$(pidfile hub)"
fi
wait_for "the hub's start" "$DATA/outpost.log" hub hub_alive

# The site "lab": two nodes on 127.0.0.1, each with its own ports and data dir.
port=7453
for n in "${SITE_NODES[@]}"; do
  dir=$DATA/lab/$n
  mkdir -p "$dir"
  if running "$n"; then
    echo "$n is already running"
  else
    args=(node --name "$n" --data-dir "$dir" --bind-addr 127.0.0.1 --quic-port "$port" --gossip-port $((port + 500)) --api-addr "127.0.0.1:$((port + 1000))" --registry-addr "127.0.0.1:$((port + 2000))")
    if [ ! -f "$dir/identity/identity.yaml" ]; then
      [ -n "${TOKEN:-}" ] || TOKEN=$("$BIN" token create --site lab --uses ${#SITE_NODES[@]} --ttl 10m)
      args+=(--join 127.0.0.1:7443 --token "$TOKEN")
    fi
    echo "starting site node $n: $BIN ${args[*]//$'\n'/}" | sed 's/--token [^ ]*/--token $TOKEN/'
    nohup "$BIN" "${args[@]}" >"$dir/outpost.log" 2>&1 &
    echo $! >"$(pidfile "$n")"
  fi
  wait_for "$n joining" "$dir/outpost.log" "$n" hub_has "$n"
  port=$((port + 10))
done

step "$BIN" status
step "$BIN" get nodes -o wide
step "$BIN" get sites
step "$BIN" apply -f examples/sites.yaml
step "$BIN" describe site lab

# An OTA task: the harmless six-step onboarding, on the hub and the lab site.
"$BIN" delete task onboard-demo >/dev/null 2>&1 || true
step "$BIN" apply -f examples/onboard-demo.yaml
step "$BIN" task watch onboard-demo || true
step "$BIN" task results onboard-demo
step "$BIN" task logs onboard-demo --node edge-1 --step register

# An image: loaded into the hub's own registry, then pulled through edge-1's
# mirror (from the hub over QUIC) and edge-2's (from edge-1, its site peer).
step "$BIN" images push examples/hello-image:v1 127.0.0.1:5000/demo/hello:v1
step "$BIN" images pull 127.0.0.1:9453/demo/hello:v1 --mirror 127.0.0.1:9453
sleep 1 # the site's blob index learns that edge-1 holds the image
step "$BIN" images pull 127.0.0.1:9463/demo/hello:v1 --mirror 127.0.0.1:9463

cat <<MSG

The hub and the lab site keep running in the background (hub API on
https://127.0.0.1:7080; credentials in ./$DATA/admin.yaml, which the CLI finds
by itself). Try: $BIN get nodes --watch      Stop them: make demo-stop
MSG
