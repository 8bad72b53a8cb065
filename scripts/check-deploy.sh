#!/usr/bin/env bash
# Static checks of deploy/: cfn-lint on the CloudFormation templates (cfn-lint comes with the
# LocalStack venv), `systemd-analyze verify` on the unit (with ExecStart pointed at the built
# binary, since it is not installed here) and its exposure level, which must stay <= 2.0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source localstack/env.sh

"$LS_VENV/bin/cfn-lint" deploy/cloudformation/*.yaml deploy/ecs/*.yaml
echo "check-deploy: cfn-lint clean"

command -v systemd-analyze >/dev/null || { echo "check-deploy: systemd-analyze not found. Fix: apt-get install systemd" >&2; exit 1; }
binary="${CARGO_TARGET_DIR:-$PWD/target}/debug/sqs-batch-worker"
[ -x "$binary" ] || cargo build --locked --bin sqs-batch-worker
unit_dir=$(mktemp -d)
trap 'rm -rf "$unit_dir"' EXIT
sed "s#/usr/local/bin/sqs-batch-worker#$binary#" deploy/systemd/sqs-batch-worker.service \
  >"$unit_dir/sqs-batch-worker.service"
systemd-analyze verify "$unit_dir/sqs-batch-worker.service"
echo "check-deploy: systemd-analyze verify clean"
exposure=$(systemd-analyze security --offline=true deploy/systemd/sqs-batch-worker.service 2>/dev/null \
  | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
python3 -c "import sys; e=float('$exposure'); print(f'check-deploy: systemd exposure {e}'); sys.exit(0 if e <= 2.0 else 1)" \
  || { echo "check-deploy: exposure $exposure is over 2.0. Fix: harden deploy/systemd/sqs-batch-worker.service" >&2; exit 1; }
