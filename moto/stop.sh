#!/usr/bin/env bash
# Stops the moto server that moto/start.sh started.
set -euo pipefail
home="${SBW_MOTO_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/sqs-batch-worker/moto}"
if [ -f "$home/moto.pid" ] && kill "$(cat "$home/moto.pid")" 2>/dev/null; then
  echo "moto: stopped"
fi
rm -f "$home/moto.pid"
