"""/docs renders in a real browser with nothing but the server: headless Chromium, loopback only.

The page's scripts and styles come from mlgate itself (no CDN); Chromium runs them and the
rendered DOM holds Swagger UI's operations, the per-model route included.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LinearRegression

from tests.server_process import ADMIN_KEY, run_server
from tests.services import missing_service

pytestmark = pytest.mark.e2e


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    missing_service("headless Chromium is not installed (apt-get install chromium)")
    raise AssertionError("unreachable")


def _render(browser: str, url: str, profile: Path) -> str:
    out = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            # no way out but loopback: a CDN URL would fail to load
            "--proxy-server=http://127.0.0.1:9",
            "--proxy-bypass-list=127.0.0.1",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_swagger_ui_and_redoc_render_offline(tmp_path: Path) -> None:
    browser = _chromium()
    x = np.arange(10.0).reshape(5, 2)
    sio.dump(LinearRegression().fit(x, x.sum(axis=1)), tmp_path / "m.skops")
    with run_server(tmp_path / "data", env={"MLGATE_SERVICES": "[]"}) as s:
        with httpx.Client(base_url=s.url, headers={"x-api-key": ADMIN_KEY}, timeout=60) as c:
            pushed = c.post(
                "/v1/models/suma/versions",
                files={"files": ("m.skops", (tmp_path / "m.skops").read_bytes())},
                data={
                    "manifest": json.dumps({"runtime": "sklearn", "artifact": "m.skops"}),
                    "aliases": "production",
                },
            )
            assert pushed.status_code == 201, pushed.text
        swagger = _render(browser, f"{s.url}/docs", tmp_path / "profile-docs")
        redoc = _render(browser, f"{s.url}/redoc", tmp_path / "profile-redoc")
    assert "swagger-ui" in swagger and "opblock" in swagger, swagger[:2000]
    assert "/v1/models/suma/predict" in swagger
    assert "/v1/models/suma/predict" in redoc, redoc[:2000]
