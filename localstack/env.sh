# Shared settings for the localstack/ scripts. Source it; do not run it.
# Every path can be overridden from the environment.
LOCALSTACK_VERSION=4.14.0
LS_HOME="${SBW_LOCALSTACK_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/sqs-batch-worker/localstack}"
LS_VENV="$LS_HOME/venv-$LOCALSTACK_VERSION"
LS_PIDFILE="$LS_HOME/localstack.pid"
LS_LOG="$LS_HOME/localstack.log"
LS_DATA="$LS_HOME/data"
LS_HOST="${LOCALSTACK_HOST_PORT:-127.0.0.1:4566}"
LS_URL="http://$LS_HOST"
LS_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

ls_healthy() {
  curl -fsS --max-time 2 "$LS_URL/_localstack/health" >/dev/null 2>&1
}

# SQS for the worker; SNS for the producer tests (a topic with SQS subscriptions); CloudFormation, CloudWatch, IAM and STS for the deploy/ stack test.
LS_SERVICES="${LOCALSTACK_SERVICES:-sqs,sns,cloudformation,cloudwatch,iam,sts}"

# True when every service in LS_SERVICES is enabled in the running LocalStack.
ls_has_services() {
  curl -fsS --max-time 2 "$LS_URL/_localstack/health" 2>/dev/null | python3 -c '
import json, sys
services = json.load(sys.stdin).get("services", {})
wanted = sys.argv[1].split(",")
sys.exit(0 if all(services.get(s) in ("available", "running") for s in wanted) else 1)
' "$LS_SERVICES"
}
