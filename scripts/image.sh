#!/usr/bin/env bash
# Builds the container image from the repo's Dockerfile, unmodified, with no registry: the
# `FROM` images are made on this machine and tagged with the exact names the Dockerfile uses,
# and every build runs with --pull=never.
#   - debian:bookworm-slim: debootstrap --variant=minbase from Debian's mirror, with the same
#     apt sources as the official image (bookworm, -updates, -security).
#   - rust:1.95-slim-bookworm: the same base plus gcc and libc6-dev (as in the official slim
#     image) and the Rust 1.95 toolchain already on this machine, laid out as the official image
#     lays it out (RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo).
# Then it builds, prints the image's size beside the base's, and its layers.
#
#   scripts/image.sh                  the whole Dockerfile: compiles inside the build stage
#   scripts/image.sh --around BINARY  only the runtime stage, around a binary built on the host
#                                     (the build stage is replaced with --build-context)
#   --tag NAME (default localhost/sqs-batch-worker:dev), --file DOCKERFILE (default ./Dockerfile)
#   --rebuild-bases                   remake both base images
#
# Needs root (podman as root, debootstrap); installs podman, runc and debootstrap when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

tag=localhost/sqs-batch-worker:dev
dockerfile=Dockerfile
around=""
rebuild_bases=false
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --file) dockerfile="$2"; shift 2 ;;
    --around) around="$2"; shift 2 ;;
    --rebuild-bases) rebuild_bases=true; shift ;;
    *) echo "image: unknown argument '$1'. Fix: see the usage at the top of scripts/image.sh" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "image: podman and debootstrap need root here. Fix: run as root (sudo scripts/image.sh)" >&2; exit 1; }

scripts/install-podman.sh
export CONTAINERS_CONF="$repo/scripts/podman/containers.conf"
started=$(date +%s)
scratch=$(mktemp -d /var/tmp/sbw-image.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
debian_base=docker.io/library/debian:bookworm-slim
rust_base=docker.io/library/rust:1.95-slim-bookworm

# A bookworm root file system in $1 with the extra packages in $2 (comma-separated).
bootstrap() {
  local root=$1 include=$2
  echo "image: debootstrap bookworm${include:+ with $include} (${mirror})"
  debootstrap --variant=minbase ${include:+--include="$include"} bookworm "$root" "$mirror" \
    >"$scratch/debootstrap.log" 2>&1 \
    || { tail -20 "$scratch/debootstrap.log" >&2; echo "image: debootstrap failed. Fix: check that $mirror answers (DEBIAN_MIRROR names another)" >&2; exit 1; }
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  slim "$root"
}

# What debuerreotype does to make the official `-slim` images: apt keeps no caches and fetches
# no translations, dpkg leaves out documentation, manuals and locales (and removes those already
# there), and services never start during a build. The Dockerfile's `apt-get install` relies on
# this: without docker-clean, apt's 90 MB of package caches would stay in its layer.
slim() {
  local root=$1
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
  echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
DPKG
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
  rm -rf "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/usr/share/man/* \
    "$root"/usr/share/groff/* "$root"/usr/share/linda/* "$root"/usr/share/lintian/overrides/*
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/log/apt/* "$root"/var/log/dpkg.log "$root"/var/log/bootstrap.log
}

import() {
  local root=$1 name=$2
  shift 2
  tar -C "$root" -c . | podman import --quiet "$@" - "$name" >/dev/null
}

if $rebuild_bases || ! podman image exists "$debian_base"; then
  bootstrap "$scratch/debian" ""
  import "$scratch/debian" "$debian_base" --change 'CMD ["bash"]'
fi

if [ -z "$around" ] && { $rebuild_bases || ! podman image exists "$rust_base"; }; then
  command -v rustc >/dev/null || { echo "image: rustc not found. Fix: install Rust 1.95 with rustup" >&2; exit 1; }
  version=$(rustc -V | awk '{print $2}')
  case "$version" in
    1.95.*) ;;
    *) echo "image: the host's rustc is $version; the Dockerfile's builder is rust:1.95. Fix: rustup default 1.95" >&2; exit 1 ;;
  esac
  sysroot=$(rustc --print sysroot)
  bootstrap "$scratch/rust" "ca-certificates,gcc,libc6-dev"
  toolchain="$scratch/rust/usr/local/rustup/toolchains/$version-x86_64-unknown-linux-gnu"
  mkdir -p "$toolchain" "$scratch/rust/usr/local/cargo/bin"
  # The compiler, cargo and the standard library; the documentation stays behind.
  cp -a "$sysroot/bin" "$sysroot/lib" "$toolchain/"
  [ -d "$sysroot/libexec" ] && cp -a "$sysroot/libexec" "$toolchain/"
  for tool in cargo rustc rustdoc; do
    ln -s "/usr/local/rustup/toolchains/$version-x86_64-unknown-linux-gnu/bin/$tool" \
      "$scratch/rust/usr/local/cargo/bin/$tool"
  done
  # The builder fetches crates from crates.io; on a machine whose egress goes through a proxy
  # with its own CA, the builder trusts what this machine trusts (the runtime image does not).
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$scratch/rust/usr/local/share/ca-certificates/"
    chroot "$scratch/rust" update-ca-certificates >/dev/null 2>&1 \
      || { echo "image: update-ca-certificates failed in the builder. Fix: check /usr/local/share/ca-certificates" >&2; exit 1; }
  fi
  echo "image: toolchain $version from $sysroot"
  import "$scratch/rust" "$rust_base" \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV RUST_VERSION=$version" \
    --change 'CMD ["bash"]'
fi

build_args=(--pull=never --format docker --network host --file "$dockerfile" --tag "$tag")
if [ -n "$around" ]; then
  [ -x "$around" ] || { echo "image: --around $around is not an executable. Fix: cargo build --release --locked --bin sqs-batch-worker" >&2; exit 1; }
  # The Dockerfile copies /src/target/release/sqs-batch-worker from its build stage; this
  # context stands in for that stage.
  mkdir -p "$scratch/build/src/target/release"
  cp "$around" "$scratch/build/src/target/release/sqs-batch-worker"
  strip "$scratch/build/src/target/release/sqs-batch-worker" 2>/dev/null || true
  build_args+=(--target runtime --build-context "build=$scratch/build")
fi
build() {
  echo "image: podman build $* ."
  if ! podman build "$@" . 2>&1 | sed 's/^/  /'; then
    echo "image: the build failed (above). Fix: a COPY that misses a file the build needs shows here first" >&2
    exit 1
  fi
}
if [ -z "$around" ]; then
  # The build stage (about 2 GB: the compiler and target/) gets a tag of its own, so that it stays
  # as the layer cache while older build stages, left untagged, are pruned below.
  build --pull=never --format docker --network host --file "$dockerfile" --target build \
    --tag localhost/sqs-batch-worker-build:cache
fi
build "${build_args[@]}"
podman image prune --force >/dev/null

size() { podman image inspect --format '{{.Size}}' "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
image_size=$(size "$tag")
base_size=$(size "$debian_base")
echo "image: $tag is $(mib "$image_size"); its base $debian_base is $(mib "$base_size"), so the worker adds $(mib $((image_size - base_size)))"
podman history --format '  {{.Size}}\t{{.CreatedBy}}' "$tag" | cut -c1-150
echo "image: built in $(( $(date +%s) - started )) s"
