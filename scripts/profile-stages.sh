#!/usr/bin/env bash
# Where the worker's CPU goes, per pipeline stage: runs the pipeline bench's worker run under
# `perf record` (DWARF call graphs from the release profile's line tables), then attributes every
# sample to a stage with scripts/perf_stages.py.
#
#   scripts/profile-stages.sh [WORKER_BINARY] [MESSAGES]
#
# WORKER_BINARY defaults to this tree's release build; pass another revision's build to compare.
# Prints the stage table; the raw profile stays in target/bench/perf-<name>.data.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
cargo build --release --bin sqs-batch-worker >&2
binary="$(realpath "${1:-target/release/sqs-batch-worker}")"
messages="${2:-20000}"
name="$(echo "$binary" | md5sum | cut -c1-8)"
mkdir -p target/bench
data="$PWD/target/bench/perf-$name.data"
wrapper="$PWD/target/bench/perf-wrapper-$name.sh"
cat >"$wrapper" <<WRAP
#!/usr/bin/env bash
exec perf record -q -F 999 --call-graph dwarf,65528 -o "$data" -- "$binary" "\$@"
WRAP
chmod +x "$wrapper"
SBW_WORKER_BIN="$wrapper" cargo bench --bench pipeline -- --only worker --messages "$messages" >&2
sleep 2
perf script -i "$data" -F comm,tid,ip,sym --no-inline 2>/dev/null \
  | python3 scripts/perf_stages.py --messages "$messages"
