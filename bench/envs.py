"""Peers' virtual environments under bench/.envs/<peer>: created on first use, never the project's.

Each peer has ``bench/peers/<peer>/requirements.txt`` (pinned). Before installing, a
``pip install --dry-run --report`` must show no CUDA wheel and no torch other than the pinned
CPU build (``bench/peers/constraints.txt`` pins ``torch==2.13.0`` for anything that pulls it).
A stamp (sha256 of the requirement files) skips the install on later runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ENVS = BENCH / ".envs"
PEERS = BENCH / "peers"
CONSTRAINTS = PEERS / "constraints.txt"
PIP_FLAGS = ["--disable-pip-version-check", "-q"]


def _python() -> str:
    for name in (os.environ.get("BENCH_PEER_PYTHON"), "python3.11", "python3"):
        if name and shutil.which(name):
            return name
    return sys.executable


def _requirements(name: str) -> Path:
    helper = BENCH / name / "requirements.txt"  # a helper env (bench/images), else a peer's
    return helper if helper.is_file() else PEERS / name / "requirements.txt"


def _stamp(peer: str) -> str:
    h = hashlib.sha256()
    for f in (_requirements(peer), CONSTRAINTS):
        h.update(f.read_bytes())
    return h.hexdigest()


def _forbidden(report: dict[str, object]) -> list[str]:
    bad = []
    for item in report.get("install", []):  # type: ignore[union-attr]
        meta = item["metadata"]  # type: ignore[index]
        name, version = meta["name"].lower(), meta["version"]
        if name == "torch" and not version.startswith("2.13.0"):
            bad.append(f"torch {version}")
        elif name.startswith("nvidia-") and name != "nvidia-ml-py":
            bad.append(f"{name} {version}")
    return bad


def ensure(peer: str, log: Path) -> tuple[Path | None, str | None]:
    """(the env's python, None) when ready, else (None, why it could not be created)."""
    env = ENVS / peer
    python = env / "bin" / "python"
    stamp = env / ".installed"
    want = _stamp(peer)
    if stamp.is_file() and stamp.read_text() == want and python.exists():
        return python, None
    ENVS.mkdir(parents=True, exist_ok=True)
    if env.exists():
        shutil.rmtree(env)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        print(f"bench: creating {env} (first run for {peer})", file=sys.stderr, flush=True)
        subprocess.run([_python(), "-m", "venv", str(env)], check=True, stdout=out, stderr=out)
        req = ["-c", str(CONSTRAINTS), "-r", str(_requirements(peer))]
        report_file = env / "dry-run.json"
        dry = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                *PIP_FLAGS,
                "--dry-run",
                "--report",
                str(report_file),
                *req,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=900,
        )
        if dry.returncode != 0:
            return None, f"pip could not resolve {peer}'s requirements here: {_tail(log)}"
        bad = _forbidden(json.loads(report_file.read_text()))
        if bad:
            return None, f"would pull {', '.join(bad)} (refused: CUDA/unpinned torch)"
        done = subprocess.run(
            [str(python), "-m", "pip", "install", *PIP_FLAGS, *req],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=1800,
        )
        if done.returncode != 0:
            return None, f"pip install failed: {_tail(log)}"
    stamp.write_text(want)
    return python, None


def version(python: Path, dist: str) -> str:
    out = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "?"


def _tail(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return " / ".join(lines[-3:])[-400:]
