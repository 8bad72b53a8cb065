#!/usr/bin/env bash
# Starts moto's server (moto[server] from PyPI, pinned in requirements.lock) on 127.0.0.1:5000 in the
# background: a second, independent SQS (and DynamoDB) on loopback, for the chaos suite's short
# round (issue 19). Installs it into a venv under ~/.cache/sqs-batch-worker/moto when missing.
# Idempotent: a moto that already answers is reused. `moto/stop.sh` stops it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
home="${SBW_MOTO_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/sqs-batch-worker/moto}"
venv="$home/venv"
port="${MOTO_PORT:-5000}"
url="http://127.0.0.1:$port"

healthy() { curl -fsS --max-time 2 "$url/moto-api/data.json" >/dev/null 2>&1; }

if healthy; then
  echo "moto: already running at $url"
  exit 0
fi
want=$(sha256sum "$here/requirements.lock" | cut -d' ' -f1)
if [ ! -x "$venv/bin/moto_server" ] || [ "$(cat "$venv/.lock-sha256" 2>/dev/null)" != "$want" ]; then
  py=""
  for candidate in "${MOTO_PYTHON:-}" "$HOME"/.pyenv/versions/3.1[23]*/bin/python "$(command -v python3 || true)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' 2>/dev/null; then
      py=$candidate; break
    fi
  done
  [ -n "$py" ] || { echo "moto: no Python >= 3.9. Fix: install one (pyenv install 3.12) or set MOTO_PYTHON" >&2; exit 1; }
  echo "moto: installing moto[server] with $py into $venv"
  rm -rf "$venv" && mkdir -p "$home"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet -r "$here/requirements.lock"
  echo "$want" > "$venv/.lock-sha256"
fi
echo "moto: starting on $url (log: $home/moto.log)"
setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$home/moto.log" 2>&1 < /dev/null &
echo $! > "$home/moto.pid"
for _ in $(seq 1 60); do
  if healthy; then echo "moto: ready (pid $(cat "$home/moto.pid"))"; exit 0; fi
  sleep 0.5
done
echo "moto: did not answer at $url within 30 s; see $home/moto.log" >&2
exit 1
