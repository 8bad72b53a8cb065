#!/usr/bin/env bash
# Installs Debian's `faketime` package (libfaketime) when it is missing: the shared-budget tests
# step a worker's wall clock with it (tests/it/shared_budget.rs, b05 and b06). Needs root or sudo.
set -euo pipefail
library="/usr/lib/$(uname -m)-linux-gnu/faketime/libfaketimeMT.so.1"
if [ -f "$library" ]; then
  exit 0
fi
"$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" install-faketime faketime
[ -f "$library" ] || { echo "install-faketime: $library is still missing. Fix: apt-get install faketime" >&2; exit 1; }
