#!/usr/bin/env bash
# Installs Debian's `prometheus` package (prometheus and promtool) when either is missing: the
# alert rules' unit tests and tests/it/operator_kit.rs use them. Needs root or sudo.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
"$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" install-prometheus prometheus
# The package starts a server where an init system runs; the tests start their own.
command -v promtool >/dev/null || { echo "install-prometheus: promtool is still missing. Fix: apt-get install prometheus" >&2; exit 1; }
