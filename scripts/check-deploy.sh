#!/usr/bin/env bash
# Static checks of deploy/: cfn-lint on the CloudFormation templates (cfn-lint comes with the
# LocalStack venv), `systemd-analyze verify` on the unit (with ExecStart pointed at the built
# binary, since it is not installed here) and its exposure level, which must stay <= 2.0; the
# Prometheus rules (`promtool check rules`, and their unit tests with `promtool test rules`) and
# the Grafana dashboard's JSON. That every metric they name is exported, and that the alert fires
# on a real Prometheus, is tests/it/operator_kit.rs.
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
# The unit's Documentation= names the man page the binary prints; verify opens it with man(1).
mkdir -p "$unit_dir/man/man1"
"$binary" man >"$unit_dir/man/man1/sqs-batch-worker.1"
MANPATH="$unit_dir/man" systemd-analyze verify "$unit_dir/sqs-batch-worker.service"
echo "check-deploy: systemd-analyze verify clean"
exposure=$(systemd-analyze security --offline=true deploy/systemd/sqs-batch-worker.service 2>/dev/null \
  | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
python3 -c "import sys; e=float('$exposure'); print(f'check-deploy: systemd exposure {e}'); sys.exit(0 if e <= 2.0 else 1)" \
  || { echo "check-deploy: exposure $exposure is over 2.0. Fix: harden deploy/systemd/sqs-batch-worker.service" >&2; exit 1; }

command -v promtool >/dev/null || { echo "check-deploy: promtool not found. Fix: apt-get install prometheus" >&2; exit 1; }
promtool check rules deploy/prometheus/alerts.yaml
(cd deploy/prometheus && promtool test rules alerts_test.yaml)
promtool check config deploy/prometheus/prometheus.yml >/dev/null
echo "check-deploy: alerts.yaml and its unit tests pass (promtool $(promtool --version 2>&1 | sed -n 's/^promtool, version \([^ ]*\).*/\1/p'))"
python3 - deploy/grafana/dashboard.json <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1]))
panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
assert panels and all(p.get("targets") for p in panels), "every panel has a query"
print(f"check-deploy: dashboard.json parses, {len(panels)} panels with queries")
PY
