#!/usr/bin/env bash
# Stops the LocalStack that start.sh started, by its pid file. Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if [ ! -f "$LS_PIDFILE" ]; then
  echo "localstack: no pid file at $LS_PIDFILE; nothing to stop"
  exit 0
fi
pid=$(cat "$LS_PIDFILE")
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  echo "localstack: stopped pid $pid"
else
  echo "localstack: pid $pid was not running"
fi
rm -f "$LS_PIDFILE"
