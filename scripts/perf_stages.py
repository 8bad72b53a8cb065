"""Attributes `perf script -F comm,tid,ip,sym` samples (with call chains) to the worker's stages.

Each sample goes to the stage of the innermost frame that names a worker stage (STAGES), else to
the shared machinery its innermost frame names (SHARED);
independently, a sample whose innermost frame is in the allocator counts as allocation. Prints a
table of stage, share of samples, share that is allocation, and estimated CPU-s per 100k messages
(the share of the process's sampled CPU time, at the sampling rate, scaled to 100k messages).
"""
import argparse
import re
import sys

# Worker stages, matched innermost frame first: a sample belongs to the stage of the deepest
# frame that names one (decode inside the poller is decode, the SDK inside settle is delete).
STAGES = [
    ("metrics and tracing", r"prometheus_client|tracing_core|tracing_subscriber|tracing::span|Instrumented<T>>::drop|sqs_batch_worker::telemetry"),
    ("MD5 and decode", r"sqs_batch_worker::decode|md5::|md_5|Received::from_sdk"),
    ("batch encode and coalescing", r"sqs_batch_worker::batch|dispatch::run"),
    ("heartbeat", r"source::heartbeat|pipeline::heartbeat|operation::change_message_visibility"),
    ("job polls", r"sink::jobs|pipeline::jobs|RecordsApi::job"),
    ("delete (settle)", r"operation::delete_message_batch|source::settle|pipeline::settle|Holdings::forget|Holdings::receipt|outcome::Settlement"),
    ("DLQ", r"source::dlq|sqs::dlq|operation::send_message_batch"),
    ("receive (SDK) and hold", r"operation::receive_message|Poller::run|Holdings::hold|sqs_batch_worker::lease"),
    ("API client (submit)", r"sink::api|sqs_batch_worker::api|reqwest"),
    ("budget and concurrency", r"sqs_batch_worker::sink::budget|sink::concurrency|sqs_batch_worker::budget|pipeline::concurrency"),
    ("deliver (per-batch orchestration)", r"sink::deliver|pipeline::deliver"),
]
# Shared machinery, only when no worker stage is on the stack.
SHARED = [
    ("/metrics endpoint (the bench scrapes it)", r"telemetry::server|axum"),
    ("SQS connections (hyper I/O)", r"hyper|aws_smithy|h2::"),
    ("tokio runtime and timers", r"tokio::runtime|tokio::time|mio::|epoll"),
    ("stack too deep to attribute", r"^\[unknown\]$"),
]
ALLOC = re.compile(r"^(mi_|_mi_|malloc|free|realloc|calloc|__rust_alloc|__rust_dealloc|__rust_realloc|_int_malloc|_int_free|cfree|__libc_malloc|__libc_free|mimalloc)")


def samples(lines):
    stack = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if stack:
                yield stack
            stack = []
        elif line.startswith((" ", "\t")):
            parts = line.strip().split(None, 1)
            stack.append(parts[1] if len(parts) > 1 else parts[0])
        else:
            stack = []
    if stack:
        yield stack


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, required=True)
    ap.add_argument("--hz", type=float, default=999.0)
    args = ap.parse_args()
    tiers = [[(name, re.compile(p)) for name, p in tier] for tier in (STAGES, SHARED)]
    counts, allocs = {}, {}
    zeroed = 0
    total = 0
    for stack in samples(sys.stdin):
        total += 1
        stage = next(
            (name for tier in tiers for frame in stack for name, p in tier if p.search(frame)),
            "other",
        )
        counts[stage] = counts.get(stage, 0) + 1
        if stack[0].startswith("clear_page"):
            zeroed += 1
        if ALLOC.search(stack[0]):
            allocs[stage] = allocs.get(stage, 0) + 1
    if not total:
        sys.exit("no samples: did perf record run?")
    cpu_s = total / args.hz
    per_100k = cpu_s * 100_000 / args.messages
    print(f"{total} samples, {cpu_s:.1f} CPU-s sampled for {args.messages} messages "
          f"({per_100k:.2f} CPU-s per 100k)")
    print(f"| stage | share | of which allocation | CPU-s per 100k |")
    print(f"|---|---|---|---|")
    order = [name for name, _ in STAGES + SHARED] + ["other"]
    for name in order:
        n = counts.get(name, 0)
        if not n:
            continue
        print(f"| {name} | {100 * n / total:.1f}% | {100 * allocs.get(name, 0) / total:.1f}% | "
              f"{per_100k * n / total:.2f} |")
    all_alloc = sum(allocs.values())
    print(f"| (allocation, all stages) | {100 * all_alloc / total:.1f}% | | {per_100k * all_alloc / total:.2f} |")
    print(f"| (the kernel zeroing fresh heap pages, all stages) | {100 * zeroed / total:.1f}% | | {per_100k * zeroed / total:.2f} |")


main()
