"""``mlgate deploy aws --out DIR``: the SAM template, checked by cfn-lint (SAM resources offline)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mlgate.cli.main import app
from mlgate.deploy import aws


def cfn_lint(template: Path) -> subprocess.CompletedProcess[str]:
    # the test venv's (pinned) cfn-lint, not another one on PATH
    exe = str(Path(sys.executable).with_name("cfn-lint"))
    if not Path(exe).exists():
        pytest.fail("cfn-lint is not installed (the dev extra pins it)")
    return subprocess.run(
        [exe, "--format", "parseable", str(template)], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("aws")
    result = CliRunner().invoke(app, ["deploy", "aws", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, yaml.safe_load((out / "template.yaml").read_text())


def test_cfn_lint_finds_nothing_in_the_generated_template(generated: tuple[Path, dict[str, Any]]) -> None:
    out, _ = generated
    assert (out / "README.md").read_text().startswith("# mlgate on AWS Lambda")
    result = cfn_lint(out / "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_does_catch_a_broken_template(tmp_path: Path) -> None:
    broken = aws.template()
    broken["Resources"]["RegressorFunction"]["Properties"]["MemorySize"] = 64  # below Lambda's 128 MB
    (tmp_path / "template.yaml").write_text(yaml.safe_dump(broken))
    assert cfn_lint(tmp_path / "template.yaml").returncode != 0


def test_the_functions_have_the_seeds_sizes_and_run_the_handler(
    generated: tuple[Path, dict[str, Any]],
) -> None:
    _, tpl = generated
    fns = {
        k: v["Properties"] for k, v in tpl["Resources"].items() if v["Type"] == "AWS::Serverless::Function"
    }
    assert {k: (p["MemorySize"], p["Timeout"]) for k, p in fns.items()} == {
        "RegressorFunction": (1024, 60),
        "DetectorFunction": (2048, 30),
    }
    for p in fns.values():
        assert p["PackageType"] == "Image"
        assert p["ImageConfig"]["Command"] == ["mlgate.aws_lambda.handler"]
    assert (
        fns["RegressorFunction"]["Environment"]["Variables"]["MLGATE_SERVICES"]
        == '["temperatura", "cardiaco"]'
    )
    env = tpl["Globals"]["Function"]["Environment"]["Variables"]
    assert {"MLGATE_STORE_URL", "MLGATE_DATABASE_URL", "MODEL_S3_URI", "MLGATE_LIMITER__URL"} <= set(env)


def test_the_rest_api_requires_keys_with_the_reference_usage_plan(
    generated: tuple[Path, dict[str, Any]],
) -> None:
    _, tpl = generated
    api = tpl["Resources"]["Api"]
    assert api["Type"] == "AWS::Serverless::Api"  # REST: HTTP APIs have no usage plans
    auth = api["Properties"]["Auth"]
    assert auth["ApiKeyRequired"] is True
    assert auth["UsagePlan"]["CreateUsagePlan"] == "PER_API"  # the plan, a key, the key in the plan
    assert auth["UsagePlan"]["Throttle"] == {"RateLimit": 10, "BurstLimit": 10}
    assert auth["UsagePlan"]["Quota"] == {"Limit": 1000, "Period": "MONTH"}
    probes = [
        e["Properties"]
        for e in tpl["Resources"]["RegressorFunction"]["Properties"]["Events"].values()
        if e["Properties"]["Path"] in ("/healthz", "/readyz")
    ]
    assert len(probes) == 2
    assert all(p["Auth"] == {"ApiKeyRequired": False} for p in probes)


def test_alarms_cover_the_seeds_recommended_alerts(generated: tuple[Path, dict[str, Any]]) -> None:
    _, tpl = generated
    alarms = {
        v["Properties"]["MetricName"]: v["Properties"]
        for v in tpl["Resources"].values()
        if v["Type"] == "AWS::CloudWatch::Alarm"
    }
    assert set(alarms) == {"5XXError", "Latency", "Throttles"}
    assert alarms["5XXError"]["Threshold"] == 0.05
    assert alarms["Latency"]["ExtendedStatistic"] == "p99"


def test_the_generator_imports_no_web_stack() -> None:
    code = (
        "import sys, mlgate.deploy.aws, mlgate.cli.deploy; "
        "web = ('fastapi', 'starlette', 'uvicorn', 'mangum', 'mlgate.http'); "
        "bad = [m for m in web if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_lambda_image_is_built_on_aws_base_and_runs_the_handler() -> None:
    dockerfile = (Path(__file__).parents[3] / "deploy" / "lambda" / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.11" in dockerfile
    assert 'CMD ["mlgate.aws_lambda.handler"]' in dockerfile
    assert "[aws," in dockerfile  # the aws extra: Mangum, pinned
