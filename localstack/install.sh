#!/usr/bin/env bash
# Installs LocalStack 4.14.0 into a Python >= 3.12 venv from requirements.lock.
# Idempotent: a venv whose stamp matches the lock file is left alone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

find_python() {
  local candidate
  if [ -n "${LOCALSTACK_PYTHON:-}" ]; then echo "$LOCALSTACK_PYTHON"; return 0; fi
  for candidate in "$HOME"/.pyenv/versions/3.13*/bin/python "$HOME"/.pyenv/versions/3.12*/bin/python \
                   "$(command -v python3.13 || true)" "$(command -v python3.12 || true)" "$(command -v python3 || true)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

lock="$LS_SCRIPTS/requirements.lock"
stamp="$LS_VENV/.lock-sha256"
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ -x "$LS_VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "localstack: $LOCALSTACK_VERSION already installed in $LS_VENV"
  exit 0
fi

if ! py=$(find_python); then
  echo "localstack: no Python >= 3.12 found. LocalStack $LOCALSTACK_VERSION needs one." >&2
  echo "  Fix: install one (e.g. 'pyenv install 3.13.0') or set LOCALSTACK_PYTHON=/path/to/python3.12+." >&2
  exit 1
fi
echo "localstack: installing $LOCALSTACK_VERSION with $py into $LS_VENV"
rm -rf "$LS_VENV"
mkdir -p "$LS_HOME"
"$py" -m venv "$LS_VENV"
"$LS_VENV/bin/python" -m pip install --quiet --upgrade pip
"$LS_VENV/bin/python" -m pip install --quiet -r "$lock"
echo "$want" > "$stamp"
echo "localstack: installed $("$LS_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("localstack-core"))')"
