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
