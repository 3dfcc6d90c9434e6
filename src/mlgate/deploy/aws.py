"""``mlgate deploy aws``: an AWS SAM template (``template.yaml``) and its README.

The template, as seed 000 deployed it: the models as container images on Lambda behind a REST
API (HTTP APIs have no usage plans) with ``ApiKeyRequired``, a usage plan and key (the reference
plan: 10/s, burst 10, 1,000 a month), the store on S3, the registry on PostgreSQL when given,
and CloudWatch alarms for the built-in alert rules (5xx rate, p99 latency) plus throttles.

Two functions, not one per service nor one for all: the seed's two sizes. ``Regressor``
(temperatura, cardiaco: 1024 MB / 60 s) and ``Detector`` (intrusos, vehiculos: 2048 MB / 30 s,
OpenCV/TFLite). Each loads only its services' models (``MLGATE_SERVICES``), so the regressor's
cold start does not pay for the detector's; one function per service would add cold starts
and alarms for nothing the two sizes do not already separate. The registry API (``/v1/...``)
and the probes go to the regressor.

No web framework is imported here (the import-linter contract on ``mlgate.deploy``).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FUNCTIONS", "LambdaFunction", "render_readme", "template", "write"]

#: the reference usage plan (mlgate.access.plans' "reference"), enforced by API Gateway
RATE_PER_S = 10
BURST = 10
QUOTA_PER_MONTH = 1000
#: the built-in alert rules' thresholds (mlgate.monitoring.rules.DEFAULT_RULES)
ERROR_RATE = 0.05
P99_LATENCY_MS = 10_000
HANDLER_CMD = "mlgate.aws_lambda.handler"


@dataclass(frozen=True)
class LambdaFunction:
    """One Lambda function: the services it serves, its size, the seed routes it answers."""

    logical_id: str
    services: tuple[str, ...]
    memory_mb: int
    timeout_s: int
    paths: tuple[str, ...]


FUNCTIONS: tuple[LambdaFunction, ...] = (
    LambdaFunction("Regressor", ("temperatura", "cardiaco"), 1024, 60, ("/prod", "/predict", "/v1/{proxy+}")),
    LambdaFunction("Detector", ("intrusos", "vehiculos"), 2048, 30, ("/prodfaces",)),
)
PROBES = ("/healthz", "/readyz")


def _ref(name: str) -> dict[str, Any]:
    return {"Ref": name}


def _if_set(condition: str, parameter: str) -> dict[str, Any]:
    return {"Fn::If": [condition, _ref(parameter), _ref("AWS::NoValue")]}


def _function(fn: LambdaFunction) -> dict[str, Any]:
    events: dict[str, Any] = {}
    for i, path in enumerate(fn.paths):
        events[f"Route{i}"] = {
            "Type": "Api",
            "Properties": {"RestApiId": _ref("Api"), "Path": path, "Method": "ANY"},
        }
    if fn is FUNCTIONS[0]:
        for i, path in enumerate(PROBES):
            events[f"Probe{i}"] = {
                "Type": "Api",
                "Properties": {
                    "RestApiId": _ref("Api"),
                    "Path": path,
                    "Method": "GET",
                    "Auth": {"ApiKeyRequired": False},  # load balancers and uptime checks
                },
            }
    return {
        "Type": "AWS::Serverless::Function",
        "Properties": {
            "PackageType": "Image",
            "ImageUri": _ref("ImageUri"),
            "ImageConfig": {"Command": [HANDLER_CMD]},
            "MemorySize": fn.memory_mb,
            "Timeout": fn.timeout_s,
            "Environment": {"Variables": {"MLGATE_SERVICES": json.dumps(list(fn.services))}},
            "Policies": [{"S3CrudPolicy": {"BucketName": _ref("ModelBucket")}}],
            "Events": events,
        },
    }


def _alarm(description: str, **properties: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": description,
            "EvaluationPeriods": 1,
            "Period": 300,
            "TreatMissingData": "notBreaching",
            "AlarmActions": [_ref("AlarmTopic")],
            **properties,
        },
    }


def template() -> dict[str, Any]:
    """The SAM template as a mapping (long-form intrinsics: plain YAML)."""
    api_name = {"Fn::Sub": "${AWS::StackName}-mlgate"}
    api_dims = [{"Name": "ApiName", "Value": api_name}, {"Name": "Stage", "Value": _ref("StageName")}]
    resources: dict[str, Any] = {
        "Api": {
            "Type": "AWS::Serverless::Api",
            "Properties": {
                "Name": api_name,
                "StageName": _ref("StageName"),
                "BinaryMediaTypes": ["image~1*", "multipart~1form-data", "application~1octet-stream"],
                "Auth": {
                    "ApiKeyRequired": True,
                    "UsagePlan": {
                        "CreateUsagePlan": "PER_API",
                        "Description": "the reference plan: 10/s, burst 10, 1,000 a month",
                        "Throttle": {"RateLimit": RATE_PER_S, "BurstLimit": BURST},
                        "Quota": {"Limit": QUOTA_PER_MONTH, "Period": "MONTH"},
                    },
                },
            },
        },
        "AlarmTopic": {"Type": "AWS::SNS::Topic", "Properties": {}},
        "Api5xxRate": _alarm(
            "MlgateHighErrorRate: more than 5 % of requests answered 5xx over 5 minutes",
            Namespace="AWS/ApiGateway",
            MetricName="5XXError",
            Dimensions=api_dims,
            Statistic="Average",
            Threshold=ERROR_RATE,
            ComparisonOperator="GreaterThanThreshold",
        ),
        "ApiLatencyP99": _alarm(
            "MlgateHighLatencyP99: p99 latency over 10 s over 5 minutes",
            Namespace="AWS/ApiGateway",
            MetricName="Latency",
            Dimensions=api_dims,
            ExtendedStatistic="p99",
            Threshold=P99_LATENCY_MS,
            ComparisonOperator="GreaterThanThreshold",
        ),
    }
    for fn in FUNCTIONS:
        resources[f"{fn.logical_id}Function"] = _function(fn)
        resources[f"{fn.logical_id}Throttles"] = _alarm(
            f"{fn.logical_id}: Lambda throttled invocations (concurrency limit reached)",
            Namespace="AWS/Lambda",
            MetricName="Throttles",
            Dimensions=[{"Name": "FunctionName", "Value": _ref(f"{fn.logical_id}Function")}],
            Statistic="Sum",
            Threshold=0,
            ComparisonOperator="GreaterThanThreshold",
        )
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Description": "mlgate on AWS Lambda behind API Gateway (generated by `mlgate deploy aws`)",
        "Parameters": {
            "ImageUri": {
                "Type": "String",
                "Description": "the image built from deploy/lambda/Dockerfile, in ECR",
            },
            "ModelBucket": {"Type": "String", "MinLength": 3, "Description": "S3 bucket of the model store"},
            "StageName": {"Type": "String", "Default": "prod"},
            "DatabaseUrl": {
                "Type": "String",
                "Default": "",
                "NoEcho": True,
                "Description": "postgresql://... (empty: SQLite in /tmp, one registry per container)",
            },
            "LimiterUrl": {
                "Type": "String",
                "Default": "",
                "Description": "redis://... for mlgate's own limits (empty: the database)",
            },
            "ModelS3Uri": {
                "Type": "String",
                "Default": "",
                "Description": "the seed's MODEL_S3_URI: one model declared by URI (s3://bucket/key)",
            },
            "KeysMode": {
                "Type": "String",
                "Default": "apigateway",
                "AllowedValues": ["apigateway", "mlgate"],
                "Description": "who checks and meters API keys (docs/deploy.md)",
            },
        },
        "Conditions": {
            "HasDatabase": {"Fn::Not": [{"Fn::Equals": [_ref("DatabaseUrl"), ""]}]},
            "HasLimiter": {"Fn::Not": [{"Fn::Equals": [_ref("LimiterUrl"), ""]}]},
            "HasModelS3Uri": {"Fn::Not": [{"Fn::Equals": [_ref("ModelS3Uri"), ""]}]},
        },
        "Globals": {
            "Function": {
                "Architectures": ["x86_64"],
                "Environment": {
                    "Variables": {
                        "MLGATE_STORE_URL": {"Fn::Sub": "s3://${ModelBucket}/mlgate"},
                        "MLGATE_DATABASE_URL": _if_set("HasDatabase", "DatabaseUrl"),
                        "MLGATE_LIMITER__URL": _if_set("HasLimiter", "LimiterUrl"),
                        "MODEL_S3_URI": _if_set("HasModelS3Uri", "ModelS3Uri"),
                        "MLGATE_LAMBDA_KEYS": _ref("KeysMode"),
                        "MLGATE_DATA_DIR": "/tmp/mlgate",  # noqa: S108
                        "MLGATE_ALERTS__ENABLED": "false",
                        "MLGATE_STATS__ENABLED": "false",
                    }
                },
            }
        },
        "Resources": resources,
        "Outputs": {
            "ApiUrl": {
                "Value": {"Fn::Sub": "https://${Api}.execute-api.${AWS::Region}.amazonaws.com/${StageName}"}
            },
            "ApiKeyId": {
                "Value": _ref("ApiApiKey"),
                "Description": "aws apigateway get-api-key --include-value",
            },
        },
    }


def render_readme() -> str:
    sizes = "\n".join(
        f"- `{fn.logical_id}Function`: {', '.join(fn.services)} — {fn.memory_mb} MB, {fn.timeout_s} s; "
        f"routes {', '.join(f'`{p}`' for p in fn.paths)}"
        for fn in FUNCTIONS
    )
    return f"""# mlgate on AWS Lambda (generated by `mlgate deploy aws`)

`template.yaml` is an AWS SAM template: the image from `deploy/lambda/Dockerfile` as Lambda
functions behind a REST API with API keys required, a usage plan and key (rate {RATE_PER_S}/s,
burst {BURST}, {QUOTA_PER_MONTH:,} requests a month), the model store on S3, CloudWatch alarms
(5xx rate > 5 %, p99 latency > 10 s, Lambda throttles) notifying the `AlarmTopic` SNS topic.

{sizes}
- `/healthz`, `/readyz`: no API key.

## Deploy

```sh
docker build -f deploy/lambda/Dockerfile -t mlgate-lambda .
aws ecr create-repository --repository-name mlgate-lambda
docker tag mlgate-lambda ACCOUNT.dkr.ecr.REGION.amazonaws.com/mlgate-lambda:latest
docker push ACCOUNT.dkr.ecr.REGION.amazonaws.com/mlgate-lambda:latest
sam deploy --template-file template.yaml --stack-name mlgate --capabilities CAPABILITY_IAM \\
  --resolve-image-repos --parameter-overrides \\
  ImageUri=ACCOUNT.dkr.ecr.REGION.amazonaws.com/mlgate-lambda:latest ModelBucket=my-models \\
  DatabaseUrl=postgresql://... ModelS3Uri=s3://my-models/temperatura.skops
aws apigateway get-api-key --api-key "$(aws cloudformation describe-stacks --stack-name mlgate \\
  --query "Stacks[0].Outputs[?OutputKey=='ApiKeyId'].OutputValue" --output text)" --include-value
curl -X POST -H "x-api-key: $KEY" -H 'content-type: application/json' \\
  -d '{{"temperaturas": [...60 numbers...]}}' "$API_URL/prod"
```

Parameters: `DatabaseUrl` (PostgreSQL; empty = SQLite in /tmp, one registry per container),
`LimiterUrl` (Redis, for mlgate's own limits), `ModelS3Uri` (the seed's single-model variable),
`KeysMode` (`apigateway`: API Gateway checks and meters keys — the default; `mlgate`: mlgate's
gateway does, with shared state in Redis/PostgreSQL). See docs/deploy.md, "AWS Lambda".
"""


def write(out: Path) -> list[Path]:
    """Write ``template.yaml`` and ``README.md`` into ``out`` (created); returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    tpl = out / "template.yaml"
    yaml = importlib.import_module("yaml")  # PyYAML has no stubs (as mlgate.monitoring.rules)
    tpl.write_text(yaml.safe_dump(template(), sort_keys=False, width=110))
    readme = out / "README.md"
    readme.write_text(render_readme())
    return [tpl, readme]
