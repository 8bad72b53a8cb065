#!/usr/bin/env bash
# Installs Debian packages with apt-get, as root or through sudo, refreshing the package lists
# only when the first try fails: `scripts/apt-install.sh WHO PACKAGE...`. The install-*.sh
# scripts call it once they have found something missing, and check the result themselves.
set -euo pipefail
who="$1"
shift
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "$who: apt-get install $*"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -qq "$@" >/dev/null 2>&1 \
  || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null; }
