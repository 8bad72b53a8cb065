#!/usr/bin/env bash
# Starts LocalStack in the background on 127.0.0.1:4566 with the services in LS_SERVICES (env.sh)
# and waits until it is healthy. Idempotent: a LocalStack that already answers with those services
# is reused; one of ours that lacks some is restarted. Installs it first when missing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if ls_healthy; then
  if ls_has_services; then
    echo "localstack: already running at $LS_URL"
    exit 0
  fi
  if [ -f "$LS_PIDFILE" ] && kill -0 "$(cat "$LS_PIDFILE")" 2>/dev/null; then
    echo "localstack: running without all of $LS_SERVICES; restarting it"
    "$LS_SCRIPTS/stop.sh"
  else
    echo "localstack: the instance at $LS_URL lacks some of $LS_SERVICES and is not ours; stop it first" >&2
    exit 1
  fi
fi
"$LS_SCRIPTS/install.sh"
mkdir -p "$LS_HOME" "$LS_DATA"
if [ -f "$LS_PIDFILE" ] && kill -0 "$(cat "$LS_PIDFILE")" 2>/dev/null; then
  echo "localstack: pid $(cat "$LS_PIDFILE") is alive but not healthy yet; waiting for it"
else
  echo "localstack: starting on $LS_URL (log: $LS_LOG)"
  # setsid detaches it from this shell so a finished script or CI step does not take it down.
  GATEWAY_LISTEN="$LS_HOST" \
  SERVICES="$LS_SERVICES" \
  SQS_ENDPOINT_STRATEGY=path \
  LOCALSTACK_VOLUME_DIR="$LS_DATA" \
  FILESYSTEM_ROOT="$LS_DATA/fs" \
  DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 \
    setsid "$LS_VENV/bin/python" -m localstack.runtime.main >"$LS_LOG" 2>&1 < /dev/null &
  echo $! > "$LS_PIDFILE"
fi
for _ in $(seq 1 120); do
  if ls_healthy; then
    echo "localstack: ready (pid $(cat "$LS_PIDFILE"))"
    exit 0
  fi
  if ! kill -0 "$(cat "$LS_PIDFILE")" 2>/dev/null; then
    echo "localstack: the process exited during start-up. Last lines of $LS_LOG:" >&2
    tail -n 30 "$LS_LOG" >&2
    exit 1
  fi
  sleep 0.5
done
echo "localstack: not healthy after 60 s. See $LS_LOG" >&2
exit 1
