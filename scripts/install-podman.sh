#!/usr/bin/env bash
# Installs Debian's podman, runc and debootstrap when any is missing: scripts/image.sh builds the
# image with them and tests/it/container.rs runs it. crun, podman's default runtime on Debian,
# refuses containers on cgroup v1/hybrid hosts ("cgroups in hybrid mode not supported"), so the
# image scripts select runc in their private containers.conf. Needs root or sudo.
set -euo pipefail
missing=()
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
"$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" install-podman podman runc debootstrap
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || { echo "install-podman: $tool is still missing. Fix: apt-get install podman runc debootstrap" >&2; exit 1; }
done
