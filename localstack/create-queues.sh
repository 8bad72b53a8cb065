#!/usr/bin/env bash
# Creates the demo queues on LocalStack: a source queue, the worker's reject DLQ, and a redrive DLQ that
# the source queue's RedrivePolicy points at. Idempotent: existing queues are reused.
# Prints shell assignments (SQS_QUEUE_URL=..., SQS_DLQ_URL=..., SQS_REDRIVE_DLQ_URL=...) on stdout.
#
# Usage: create-queues.sh [--name NAME] [--fifo] [--visibility SECONDS] [--max-receive N]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

name=sbw-demo fifo=false visibility=30 max_receive=5
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name=$2; shift 2 ;;
    --fifo) fifo=true; shift ;;
    --visibility) visibility=$2; shift 2 ;;
    --max-receive) max_receive=$2; shift 2 ;;
    *) echo "create-queues: unknown argument '$1'. Usage: create-queues.sh [--name NAME] [--fifo] [--visibility S] [--max-receive N]" >&2; exit 2 ;;
  esac
done
ls_healthy || { echo "create-queues: LocalStack is not answering at $LS_URL. Fix: run localstack/start.sh first." >&2; exit 1; }

AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test} \
AWS_DEFAULT_REGION=${AWS_REGION:-us-east-1} \
"$LS_VENV/bin/python" - "$LS_URL" "$name" "$fifo" "$visibility" "$max_receive" <<'PY'
import json, sys
import boto3
url, name, fifo, visibility, max_receive = sys.argv[1], sys.argv[2], sys.argv[3] == "true", sys.argv[4], sys.argv[5]
sqs = boto3.client("sqs", endpoint_url=url)
suffix = ".fifo" if fifo else ""
def create(queue, attrs):
    if fifo:
        attrs = dict(attrs, FifoQueue="true")
    return sqs.create_queue(QueueName=queue + suffix, Attributes=attrs)["QueueUrl"]
redrive = create(name + "-redrive-dlq", {"MessageRetentionPeriod": "1209600"})
redrive_arn = sqs.get_queue_attributes(QueueUrl=redrive, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
dlq = create(name + "-dlq", {"MessageRetentionPeriod": "1209600"})
src = create(name, {
    "VisibilityTimeout": visibility,
    "RedrivePolicy": json.dumps({"deadLetterTargetArn": redrive_arn, "maxReceiveCount": max_receive}),
})
print(f"SQS_QUEUE_URL={src}")
print(f"SQS_DLQ_URL={dlq}")
print(f"SQS_REDRIVE_DLQ_URL={redrive}")
PY
