"""The exported alert rules are a rule file real Prometheus accepts (``promtool check rules``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mlgate.monitoring.alerts import export_rules_yaml, load_rules
from mlgate.settings import AlertSettings
from tests.services import missing_service

pytestmark = pytest.mark.integration

EXTRA = """
groups:
  - name: extra
    rules:
      - alert: SlowModel
        expr: >-
          histogram_quantile(0.9, sum without (instance)
          (rate(mlgate_model_latency_seconds_bucket{model=~"temp.*"}[10m]))) > 2
          unless on(model) max by (model) (mlgate_model_queue_depth) == 0
        for: 1m30s
        keep_firing_for: 5m
        labels:
          team: ml
        annotations:
          summary: "{{ $labels.model }}: {{ $value | humanizeDuration }}"
      - alert: ManyGatewayRejections
        expr: sum(increase(mlgate_gateway_rejections_total{reason!="quota"}[5m])) / 300 >= 1 or count(up) != 1
"""


def _promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if path is None:
        missing_service("promtool is not installed (Debian: apt-get install prometheus)")
        raise AssertionError("unreachable")
    return path


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )


def test_promtool_accepts_the_default_rules(tmp_path: Path) -> None:
    out = tmp_path / "mlgate-rules.yml"
    out.write_text(export_rules_yaml(load_rules(AlertSettings())))
    result = _check(out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules(AlertSettings()))} rules found" in result.stdout  # every default


def test_promtool_accepts_rules_using_the_whole_subset(tmp_path: Path) -> None:
    rules = tmp_path / "extra.yml"
    rules.write_text(EXTRA)
    out = tmp_path / "exported.yml"
    loaded = load_rules(AlertSettings(rules_file=rules))
    out.write_text(export_rules_yaml(loaded))
    result = _check(out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(loaded) == len(load_rules(AlertSettings())) + 2  # the defaults and EXTRA's two
    assert f"SUCCESS: {len(loaded)} rules found" in result.stdout


def test_the_cli_exports_a_file_promtool_accepts(tmp_path: Path) -> None:
    import os
    import sys

    out = tmp_path / "cli.yml"
    env = {**os.environ, "MLGATE_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-m", "mlgate", "alerts", "export-rules", "--local", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = _check(out)
    assert result.returncode == 0, result.stdout + result.stderr
