#!/usr/bin/env bash
# Before and after from one session: builds the worker of another git revision and runs the
# pipeline bench's alternating sequence (ceiling, this build, ceiling, REF's build, ceiling,
# per-receive baseline, ceiling, ...) with both binaries against the same LocalStack.
#
#   scripts/bench-compare.sh REF [pipeline bench flags]
#   scripts/bench-compare.sh main~3 --messages 20000 --repeat 3
#
# REF's tree is exported with `git archive` under target/compare/REV and built there, from a copy
# of this tree's release artefacts so that only what differs is compiled. Two traps, both met:
# hard links would let one build overwrite the other's files, and `git archive` dates the files
# at the commit, older than the copied artefacts, so cargo would take this tree's build of the
# worker crate as fresh. Hence a real copy, and every exported file touched.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ref="${1:?usage: scripts/bench-compare.sh REF [pipeline bench flags]}"
shift
rev="$(git rev-parse --short "$ref")"
root="$PWD/target/compare/$rev"
binary="$root/sqs-batch-worker"
if [ ! -x "$binary" ]; then
  rm -rf "$root"
  mkdir -p "$root/src"
  git archive "$rev" | tar -x -C "$root/src"
  find "$root/src" -type f -exec touch {} +
  if [ -d target/release ]; then
    mkdir -p "$root/target"
    cp -a --reflink=auto target/release "$root/target/release"
  fi
  echo "bench-compare: building $rev's worker" >&2
  (cd "$root/src" && CARGO_TARGET_DIR="$root/target" cargo build --release --bin sqs-batch-worker >&2)
  cp "$root/target/release/sqs-batch-worker" "$binary"
fi
echo "bench-compare: this tree ($(git rev-parse --short HEAD)$(git diff --quiet || echo +changes)) against $rev" >&2
exec cargo bench --bench pipeline -- --only alternate --baseline-bin "$binary" "$@"
