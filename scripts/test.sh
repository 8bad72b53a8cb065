#!/usr/bin/env bash
# README command (b): the whole test suite. Installs and starts LocalStack (and moto's server, a
# second SQS for the chaos suite's short round) when they are not running,
# Prometheus (Debian's package, for promtool and the alert test) and faketime (libfaketime, for
# the stepped-clock tests) when they are missing; then
# checks formatting and lints, builds the container image from the Dockerfile (scripts/image.sh:
# podman, installed when missing, with no registry; the compile runs inside the build stage), runs
# every test against LocalStack and the emulator (the image's among them), checks
# deploy/ (cfn-lint, systemd-analyze, promtool), checks the dependency tree (cargo deny, offline,
# scripts/deny.sh), builds the benchmarks and runs a short fuzz pass over the parsers (the
# 10-million-input run is `cargo bench --bench fuzz`). `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "test: cargo not found. Fix: install Rust 1.95 with rustup." >&2; exit 1; }
started=$(date +%s)
localstack/start.sh
moto/start.sh
scripts/install-prometheus.sh
scripts/install-faketime.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
scripts/image.sh
cargo test --locked
# The chaos suite's short round again, on a second, independent SQS (moto's server): what it
# finds there that LocalStack hides is in docs/benchmarks.md ("Two SQS implementations").
SBW_TEST_SQS_URL=http://127.0.0.1:5000 cargo test --locked --test it chaos::
scripts/check-deploy.sh
scripts/deny.sh
cargo bench --locked --no-run
cargo bench --locked --bench fuzz -- --inputs 500000
echo "test: all green in $(( $(date +%s) - started )) s"
