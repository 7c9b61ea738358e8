#!/usr/bin/env bash
# The embedded default: start a one-node hub in ./outpost-data (or reuse the
# one running there), then show it working with the real CLI.
# `scripts/demo.sh stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./bin/outpost
DATA=outpost-data
PIDFILE=$DATA/outpost.pid

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

if [ "${1:-}" = stop ]; then
  if running; then
    kill -TERM "$(cat "$PIDFILE")"
    for _ in $(seq 1 100); do running || break; sleep 0.1; done
    rm -f "$PIDFILE"
    echo "hub stopped (its data stays in ./$DATA)"
  else
    echo "no hub running from ./$DATA"
  fi
  exit 0
fi

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

if running; then
  echo "a hub is already running from ./$DATA (pid $(cat "$PIDFILE"))"
else
  mkdir -p "$DATA"
  echo "starting a one-node hub: $BIN node   (log: $DATA/outpost.log)"
  nohup "$BIN" node >"$DATA/outpost.log" 2>&1 &
  echo $! >"$PIDFILE"
fi

# Wait (bounded) for the hub to write its admin credentials and answer.
for i in $(seq 1 150); do
  if [ -f "$DATA/admin.yaml" ] && "$BIN" get nodes -o json 2>/dev/null | grep -q '"state": "alive"'; then break; fi
  if ! running; then echo "the hub exited; its log:"; cat "$DATA/outpost.log"; exit 1; fi
  if [ "$i" = 150 ]; then echo "the hub did not become ready in 30 s; its log:"; cat "$DATA/outpost.log"; exit 1; fi
  sleep 0.2
done

step "$BIN" status
step "$BIN" get nodes -o wide
step "$BIN" apply -f examples/sites.yaml
step "$BIN" get sites
step "$BIN" describe site factory-berlin

# An OTA task: the harmless six-step onboarding, on this hub.
"$BIN" delete task onboard-demo >/dev/null 2>&1 || true
step "$BIN" apply -f examples/onboard-demo.yaml
step "$BIN" task watch onboard-demo || true
step "$BIN" task results onboard-demo

cat <<MSG

The hub keeps running in the background (API https://127.0.0.1:7080,
credentials in ./$DATA/admin.yaml, which the CLI finds by itself).
Try: $BIN get nodes --watch      Stop it: make demo-stop
MSG
