#!/usr/bin/env bash
# Deploys deploy/cloudformation/queues.yaml on LocalStack and prints the stack's outputs as
# KEY=VALUE lines. Needs LocalStack started with cloudformation in LOCALSTACK_SERVICES (start.sh's
# default includes it). Usage: localstack/deploy-stack.sh STACK_NAME [Fifo=true] [MaxReceiveCount=3]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
stack="${1:?usage: deploy-stack.sh STACK_NAME [Param=Value ...]}"
shift
"$LS_VENV/bin/python" - "$stack" "$here/../deploy/cloudformation/queues.yaml" "$@" <<'PY'
import sys, time, boto3
stack, template_path, params = sys.argv[1], sys.argv[2], sys.argv[3:]
cfn = boto3.client("cloudformation", endpoint_url="http://127.0.0.1:4566", region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
parameters = [{"ParameterKey": k, "ParameterValue": v} for k, v in (p.split("=", 1) for p in params)]
parameters.append({"ParameterKey": "Name", "ParameterValue": stack})
cfn.create_stack(StackName=stack, TemplateBody=open(template_path).read(), Parameters=parameters)
for _ in range(120):
    status = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
    if status.endswith("_COMPLETE") or status.endswith("_FAILED"):
        break
    time.sleep(1)
description = cfn.describe_stacks(StackName=stack)["Stacks"][0]
if description["StackStatus"] != "CREATE_COMPLETE":
    events = cfn.describe_stack_events(StackName=stack)["StackEvents"]
    reasons = [e.get("ResourceStatusReason", "") for e in events if "FAILED" in e["ResourceStatus"]]
    sys.exit(f"stack {stack}: {description['StackStatus']}: {reasons}")
for output in description.get("Outputs", []):
    print(f"{output['OutputKey']}={output['OutputValue']}")
PY
