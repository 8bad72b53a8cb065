#!/usr/bin/env bash
# Installs Debian's `faketime` package (libfaketime) when it is missing: the shared-budget tests
# step a worker's wall clock with it (tests/it/shared_budget.rs, b05 and b06). Needs root or sudo.
set -euo pipefail
lib_dir="/usr/lib/$(uname -m)-linux-gnu/faketime"
if [ -f "$lib_dir/libfaketimeMT.so.1" ]; then
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "install-faketime: apt-get install faketime"
$sudo apt-get install -y -qq faketime >/dev/null 2>&1 \
  || { $sudo apt-get update -qq && $sudo apt-get install -y -qq faketime >/dev/null; }
[ -f "$lib_dir/libfaketimeMT.so.1" ] || { echo "install-faketime: libfaketime is still missing. Fix: apt-get install faketime" >&2; exit 1; }
