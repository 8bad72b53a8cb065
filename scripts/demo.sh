#!/usr/bin/env bash
# README command (a): installs what is missing and runs the whole thing end to end: LocalStack and
# the queues, the emulator, the worker, ~10,000 sample messages (some invalid on purpose), a summary,
# and a clean stop.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${DEMO_MESSAGES:-10000}
work=$(mktemp -d)
localstack/start.sh
cargo build --release --locked --bins
bin="${CARGO_TARGET_DIR:-target}/release"
eval "$(localstack/create-queues.sh --name "demo-$(date +%s)")"
export AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
"$bin/records-emulator" --listen 127.0.0.1:18080 --token demo-token >"$work/emulator.log" 2>&1 &
emu=$!
trap 'kill $emu $worker 2>/dev/null || true' EXIT
sleep 1
python3 - "$N" >"$work/messages.jsonl" <<'PY'
import json, sys
n = int(sys.argv[1])
for i in range(n):
    if i % 200 == 1: print("not json {")
    elif i % 200 == 2: print(json.dumps({"email": f"u{i}@example.com", "favourite_color": "red"}))
    elif i % 200 == 3: print(json.dumps({"email": f"broken-{i}"}))
    elif i % 200 == 4: print(json.dumps({"tier": "gold"}))
    else: print(json.dumps({"email": f"user{i % 5000}@example.com", "tier": "gold", "score": i, "last_seen_at": "2026-04-21T10:00:00Z"}))
PY
RECORDS_API_TOKEN=demo-token "$bin/sqs-batch-worker" run --queue-url "$SQS_QUEUE_URL" --dlq-url "$SQS_DLQ_URL" \
  --api-url http://127.0.0.1:18080/public/v1 --object profiles --batch-max-wait 1s --listen 127.0.0.1:19090 \
  --log-format json >"$work/worker.log" 2>&1 &
worker=$!
started=$(date +%s.%N)
"$bin/sqs-batch-worker" enqueue --queue-url "$SQS_QUEUE_URL" "$work/messages.jsonl"
metric() { curl -s 127.0.0.1:19090/metrics | awk -v m="$1" '$1 ~ "^"m {s+=$2} END {print s+0}'; }
for _ in $(seq 1 300); do
  done_n=$(( $(metric sbw_messages_deleted_total) ))
  [ "$done_n" -ge "$N" ] && [ "$(metric sbw_batches_in_flight)" = 0 ] && break
  sleep 1
done
elapsed=$(python3 -c "import time; print(round(time.time() - $started, 1))")
peak_rss_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$worker/status" 2>/dev/null || echo 0)
curl -s 127.0.0.1:18080/__emu/stats >"$work/stats.json"
curl -s 127.0.0.1:19090/metrics >"$work/metrics.txt"
python3 - "$work/stats.json" "$work/metrics.txt" "$N" "$elapsed" "$peak_rss_kb" <<'PY'
import json, sys
stats = json.load(open(sys.argv[1]))
n, elapsed, rss_kb = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5] or 0)
metrics = {}
for line in open(sys.argv[2]):
    if line.startswith("#") or not line.strip():
        continue
    name, value = line.rsplit(" ", 1)
    metrics[name] = float(value)
def total(prefix):
    return int(sum(v for k, v in metrics.items() if k.startswith(prefix)))
calls = stats["batches"]
requests = sum(sum(by_status.values()) for by_status in stats["requests"].values())
print(f"== summary: {n} messages in {elapsed} s ==")
print(f"  received {total('sbw_messages_received_total')}, deleted {total('sbw_messages_deleted_total')}")
print(f"  rows committed: {stats['rows_committed']} (user i and i+5000 share an email, so rows coalesce)")
print(f"  batch API calls: {calls} ({n / max(calls, 1):.0f} messages per call); all API requests incl. job polls: {requests}")
print("  DLQ entries by reason:")
for name, value in sorted(metrics.items()):
    if name.startswith("sbw_dlq_messages_total"):
        reason = name.split('reason="')[1].split('"')[0]
        print(f"    {reason:<20} {int(value)}")
print(f"  worker peak RSS: {rss_kb / 1024:.1f} MiB")
PY
kill -TERM $worker; wait $worker && echo "worker stopped cleanly (exit 0)"
kill $emu
