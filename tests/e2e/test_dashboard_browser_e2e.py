"""/dashboard in a real browser (issue 17): Debian's headless Chromium driven by Selenium
through chromedriver, against a real ``mlgate serve`` that this test first gives real traffic
(predictions from two keys with errors, captured records and their drift, a workflow's
executions, an alert firing).

Then: sign in through the form, every page renders what the APIs say (numbers, rows, drift
bars, the state graph with the path taken, charts drawn on their canvas), no console error,
no request to any host but the server, sign out (the session's API calls answer 401 after),
and a user who is not an admin sees only their own keys. The session's security model is
checked over plain HTTP as well: the cookie counts only on ``GET /v1/...`` with
``X-Mlgate-Dashboard: 1``, a disabled key ends its session, bad sign-ins are 401 then 429.

``MLGATE_SCREENSHOTS=1`` saves a 1280x800 PNG of each page into docs/dashboard/.
Waits poll with deadlines; nothing asserts timing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.server_process import ADMIN_KEY, ServerProcess, run_server
from tests.services import missing_service

pytestmark = pytest.mark.e2e

ADMIN = {"x-api-key": ADMIN_KEY}
DASH = {"X-Mlgate-Dashboard": "1"}
SEED = [round(22.1 - i * (22.1 - 16.2) / 59, 1) for i in range(60)]
PREDICT = "/v1/models/temperatura/predict"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "dashboard"
RULES = """
groups:
  - name: dashboard-e2e
    rules:
      - alert: E2EPredictionsServed
        expr: sum(increase(mlgate_http_requests_total{route="/v1/models/{name}/predict"}[10m])) > 0
        for: 1s
        labels:
          severity: test
        annotations:
          summary: "{{ $labels.route }} served predictions"
"""
WORKFLOW = {
    "Comment": "decides on n",
    "StartAt": "Prepara",
    "States": {
        "Prepara": {"Type": "Pass", "Result": {"ok": True}, "ResultPath": "$.prep", "Next": "Decide"},
        "Decide": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.n", "NumericGreaterThan": 5, "Next": "Falla"}],
            "Default": "Listo",
        },
        "Listo": {"Type": "Succeed"},
        "Falla": {"Type": "Fail", "Error": "Demasiado", "Cause": "n is over 5"},
    },
}
PASSWORD = "correct horse battery staple"


def wait_for(what: Callable[[], Any], *, timeout: float = 60.0, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        assert time.monotonic() < deadline, message or "condition never met"
        time.sleep(0.1)


def _driver_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    if browser is None:
        missing_service("headless Chromium is not installed (apt-get install chromium)")
    if driver is None:
        missing_service("chromedriver is not installed (apt-get install chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing_service("selenium is not installed (pip install 'mlgate[dev]')")
    assert browser is not None and driver is not None
    return browser, driver


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    _driver_paths()
    tmp = tmp_path_factory.mktemp("dashboard")
    rules = tmp / "rules.yml"
    rules.write_text(RULES)
    env = {
        "MLGATE_SERVICES": '["temperatura"]',
        "MLGATE_CAPTURE__FLUSH_S": "0.2",
        "MLGATE_ALERTS__RULES_FILE": str(rules),
        "MLGATE_ALERTS__INTERVAL_S": "0.5",
        "MLGATE_ALERTS__SNAPSHOT_S": "0.2",
        "MLGATE_STATS__FLUSH_S": "0.3",  # the per-minute aggregates (/v1/stats/...) written out soon
    }
    with run_server(tmp / "data", env=env) as s:
        yield s


@pytest.fixture(scope="module")
def traffic(server: ServerProcess) -> dict[str, Any]:
    """Real requests, made before any page is opened; what the pages must show."""
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as admin:
        assert admin.put("/v1/models/temperatura/capture", json={"sample": 1.0}).status_code == 200
        assert (
            admin.post("/auth/create_user", json={"username": "ana", "password": PASSWORD}).status_code == 201
        )
        # ana's plan: a monthly quota of 25, of which her 20 predictions (+1 error) spend > 80 %
        plan = {"name": "small", "rate": 1000, "burst": 1000, "quota_limit": 25, "quota_period": "MONTH"}
        assert admin.post("/v1/plans", json=plan).status_code == 201
        made = admin.post("/v1/keys", json={"name": "ana-key", "owner": "ana", "plan": "small"})
        assert made.status_code == 201, made.text
        ana_key = made.json()
        keys = {"e2e": server.api_key, "ana": ana_key["key"]}
        for i in range(60):  # 50 rows at least: enough for a drift verdict
            who = keys["e2e"] if i % 3 else keys["ana"]
            payload = {"temperaturas": [round(t + (i % 7) / 3, 1) for t in SEED]}
            assert (
                httpx.post(server.url + PREDICT, json=payload, headers={"x-api-key": who}).status_code == 200
            )
        for who in keys.values():  # errors: a bad body (400)
            assert (
                httpx.post(server.url + PREDICT, json={"x": 1}, headers={"x-api-key": who}).status_code == 400
            )
        assert admin.put("/v1/workflows/decide", json={"definition": WORKFLOW}).status_code in (200, 201)
        started = [admin.post("/v1/workflows/decide/executions", json={"n": n}).json() for n in (1, 9, 2)]
        ids = [e["executionId"] for e in started]

        def finished() -> list[dict[str, Any]] | None:
            got = [admin.get(f"/v1/executions/{i}").json() for i in ids]
            return got if all(e["status"] != "RUNNING" for e in got) else None

        executions = wait_for(finished, message="the executions never finished")
        assert sorted(e["status"] for e in executions) == ["FAILED", "SUCCEEDED", "SUCCEEDED"]

        def captured() -> bool:
            page = admin.get("/v1/models/temperatura/capture/records", params={"limit": 100, "since": "1h"})
            return page.status_code == 200 and page.json()["count"] >= 60

        wait_for(captured, message="the predictions were never captured")
        drift = admin.get("/v1/models/temperatura/drift", params={"since": "24h"})
        assert drift.status_code == 200, drift.text

        def firing() -> bool:
            alerts = admin.get("/v1/alerts").json()["alerts"]
            return any(a["alertname"] == "E2EPredictionsServed" and a["state"] == "firing" for a in alerts)

        wait_for(firing, message="the alert never fired")

        def aggregated() -> bool:  # the stats APIs, when this server has them, count it all
            got = admin.get("/v1/stats/models", params={"window": "1h"})
            if got.status_code == 404:
                return True
            rows = [m for m in got.json()["models"] if m["model"] == "temperatura"]
            flows = admin.get("/v1/stats/workflows", params={"window": "1h"}).json()
            done = sum(sum(v) for v in flows["by_status"].values())
            series = admin.get("/v1/stats/models/temperatura", params={"window": "1h"}).json()
            served = sum(sum(v["requests"]) for v in series["versions"].values())
            return bool(rows) and rows[0]["requests"] >= 62 and served >= 62 and done >= 3

        wait_for(aggregated, message="the stats never counted the traffic")
    return {"keys": keys, "ana_key_id": ana_key["id"], "executions": executions}


# -- the browser ------------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _driver_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        f"--user-data-dir={tmp_path / 'profile'}",
        # no way out but loopback: anything fetched from elsewhere would fail (and be seen below)
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _page(driver: Any, hash_: str, server: ServerProcess) -> None:
    """Open a page and wait until it has rendered (its data loaded, charts drawn)."""
    if driver.current_url.startswith(server.url + "/dashboard"):
        driver.execute_script("location.hash = arguments[0]", hash_)
    else:
        driver.get(f"{server.url}/dashboard{hash_}")

    def ready() -> bool:
        return bool(
            driver.execute_script(
                "const p = document.getElementById('page');"
                "return !p.hasAttribute('data-loading') && p.querySelector('h1') !== null"
                " && (location.hash || '#/') === arguments[0]",
                hash_,
            )
        )

    wait_for(ready, timeout=30, message=f"{hash_} never rendered: {_text(driver)[:500]}")
    error = driver.execute_script(
        "const e = document.querySelector('#page .card .error'); return e && e.textContent"
    )
    assert not error or "Could not load" not in _text(driver), _text(driver)[:1000]


def _text(driver: Any, css: str = "#page") -> str:
    return str(
        driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css
        )
    )


def _k(driver: Any, key: str) -> str:
    value = driver.execute_script(
        'const e = document.querySelector(`[data-k="${arguments[0]}"]`);'
        "return e ? (e.querySelector('.v') || e).textContent : null",
        key,
    )
    assert value is not None, f"no [data-k={key}] on the page"
    return str(value)


def _canvas_drawn(driver: Any, title: str) -> bool:
    return bool(
        driver.execute_script(
            'const c = document.querySelector(`[data-chart="${arguments[0]}"] canvas`);'
            "if (!c || !c.width) return false;"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) return true; return false;",
            title,
        )
    )


def _shot(driver: Any, name: str) -> None:
    if os.environ.get("MLGATE_SCREENSHOTS", "") in ("", "0"):
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(SHOTS / f"{name}.png"))


def _sign_in(driver: Any, server: ServerProcess, **fields: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{server.url}/dashboard")
    wait_for(
        lambda: driver.find_element(By.ID, "login").is_displayed(), timeout=30, message="no sign-in form"
    )
    ids = {"api_key": "login-key", "username": "login-user", "password": "login-password"}
    for name, value in fields.items():
        box = driver.find_element(By.ID, ids[name])
        box.clear()
        box.send_keys(value)
    driver.find_element(By.ID, "login-submit").click()
    wait_for(lambda: driver.find_element(By.ID, "nav").is_displayed(), timeout=30, message="sign-in failed")


def _console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _foreign_requests(driver: Any, server: ServerProcess) -> list[str]:
    names = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    origin = urlsplit(server.url)
    return [
        n
        for n in names
        if not n.startswith("data:")
        and (urlsplit(n).hostname, urlsplit(n).port) != (origin.hostname, origin.port)
    ]


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as client:
        yield client


def test_the_dashboard_in_a_browser(
    server: ServerProcess, traffic: dict[str, Any], browser: Any, admin: httpx.Client
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    has_stats = admin.get("/v1/stats/models", params={"window": "1h"}).status_code == 200
    driver.get(f"{server.url}/dashboard")
    wait_for(lambda: driver.find_element(By.ID, "login").is_displayed(), timeout=30)
    _shot(driver, "signin")
    _sign_in(driver, server, api_key=ADMIN_KEY)
    assert "mlg_" not in driver.current_url
    assert driver.execute_script("return localStorage.length + sessionStorage.length") == 0
    cookie = driver.get_cookie("mlgate_session")
    assert (
        cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    )
    assert driver.execute_script("return document.cookie") == ""  # not readable by scripts

    # 1. overview
    if has_stats:
        before = admin.get("/v1/stats/models", params={"window": "1h"}).json()
    _page(driver, "#/", server)
    models = admin.get("/v1/models").json()["models"]
    ready = admin.get("/readyz").json()
    assert _k(driver, "models") == str(len(models))
    assert _k(driver, "loaded") == str(len(ready["loaded"]))
    assert _k(driver, "failed") == str(len(ready["failed"]))
    firing = [a for a in admin.get("/v1/alerts").json()["alerts"] if a["state"] == "firing"]
    assert _k(driver, "firing") == str(len(firing)) and firing
    assert "production → v1" in _text(driver)
    if has_stats:
        after = admin.get("/v1/stats/models", params={"window": "1h"}).json()
        counts = [
            next(m for m in s["models"] if m["model"] == "temperatura")["requests"] for s in (before, after)
        ]
        assert counts[0] <= int(_k(driver, "requests:temperatura").replace(",", "")) <= counts[1]
    _shot(driver, "overview")

    # 2. a model
    if has_stats:
        before = admin.get("/v1/stats/models/temperatura", params={"window": "1h"}).json()
    _page(driver, "#/model/temperatura", server)
    text = _text(driver)
    assert "mae=0.5344" in text and "Manifest of v1" in text
    report = admin.get("/v1/models/temperatura/drift", params={"since": "24h"}).json()
    bars = driver.execute_script(
        "return [...document.querySelectorAll('.bar[data-feature]')].map(b => b.getAttribute('data-feature'))"
    )
    assert bars == [f["name"] for f in report["features"]]
    samples = driver.find_elements(By.CSS_SELECTOR, ".samples figure")
    assert len(samples) == 12
    if has_stats:
        wait_for(lambda: _canvas_drawn(driver, "requests/s"), timeout=15, message="no requests/s chart")
        charts = driver.execute_script("return window.mlgateCharts")
        series = admin.get("/v1/stats/models/temperatura", params={"window": "1h"}).json()
        rps = next(c for c in charts if c["title"] == "requests/s")
        assert rps["data"][0] == series["t"]
        # the page's own calls about the model count too (version 0, or the version they resolve):
        # what it shows lies between what the API said before it loaded and after
        for version, values in series["versions"].items():
            drawn = rps["data"][1 + rps["names"].index("no version" if version == "0" else f"v{version}")]
            low = before["versions"].get(version, {"rps": [0] * len(drawn)})["rps"]
            assert all(a <= b <= c for a, b, c in zip(low, drawn, values["rps"], strict=True))
        assert sum(rps["data"][1 + rps["names"].index("v1")]) * 60 >= 60  # the predictions
        shown = int(_k(driver, "total:requests").replace(",", ""))
        assert before["totals"]["requests"] <= shown <= series["totals"]["requests"]
    _shot(driver, "model")

    # 3. keys and usage
    _page(driver, "#/keys", server)
    listed = {k["id"] for k in admin.get("/v1/keys").json()["keys"]}
    rows = set(
        driver.execute_script("return [...document.querySelectorAll('tr[data-key]')].map(r => r.dataset.key)")
    )
    assert rows == listed and traffic["ana_key_id"] in rows
    if has_stats:
        usage = admin.get("/v1/stats/keys", params={"window": "24h"}).json()
        for k in usage["keys"]:
            if k["key_id"] != "e2eadmin":  # the admin key's count grows with the test's own calls
                assert _k(driver, f"key-requests:{k['key_id']}") == f"{k['totals']['requests']:,}"
        ana = next(k for k in usage["keys"] if k["key_id"] == traffic["ana_key_id"])
        assert ana["quota"]["used_ratio"] > 0.8
        hot = driver.execute_script(
            "return [...document.querySelectorAll('tr.hot[data-key]')].map(r => r.dataset.key)"
        )
        assert hot == [traffic["ana_key_id"]] and "quota > 80 %" in _text(driver)
    _shot(driver, "keys")

    # 4. alerts
    _page(driver, "#/alerts", server)
    assert driver.find_elements(By.CSS_SELECTOR, 'tr[data-alert="E2EPredictionsServed"]')
    assert driver.find_elements(By.CSS_SELECTOR, 'tr[data-rule="E2EPredictionsServed"]')
    _shot(driver, "alerts")

    # 5. workflows: executions by status (a chart), the list, one execution's graph
    _page(driver, "#/workflows", server)
    executions = admin.get("/v1/executions").json()["executions"]
    shown = driver.execute_script(
        "return [...document.querySelectorAll('tr[data-execution]')].map(r => r.dataset.execution)"
    )
    assert shown == [e["executionId"] for e in executions]
    wait_for(lambda: _canvas_drawn(driver, "executions by status"), timeout=15, message="no executions chart")
    chart = next(
        c for c in driver.execute_script("return window.mlgateCharts") if c["title"] == "executions by status"
    )
    counts = {name: sum(chart["data"][i + 1]) for i, name in enumerate(chart["names"])}
    assert {name: n for name, n in counts.items() if n} == {"SUCCEEDED": 2, "FAILED": 1}
    _shot(driver, "workflows")
    # filtered by status through the form
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "f-status")).select_by_value("FAILED")
    driver.find_element(By.CSS_SELECTOR, "#wf-filters button").click()
    wait_for(lambda: driver.execute_script("return location.hash") == "#/workflows?status=FAILED", timeout=10)
    _page(driver, "#/workflows?status=FAILED", server)
    failed = [e for e in traffic["executions"] if e["status"] == "FAILED"]
    shown = driver.execute_script(
        "return [...document.querySelectorAll('tr[data-execution]')].map(r => r.dataset.execution)"
    )
    assert shown == [failed[0]["executionId"]]
    _page(driver, f"#/execution/{failed[0]['executionId']}", server)
    nodes = driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('.graph .node')]"
        ".map(g => [g.dataset.state, g.getAttribute('class')]))"
    )
    assert set(nodes) == set(WORKFLOW["States"])
    assert "taken" in nodes["Prepara"] and "taken" in nodes["Decide"] and "failed" in nodes["Falla"]
    assert "taken" not in nodes["Listo"]
    assert len(driver.find_elements(By.CSS_SELECTOR, ".graph .edge.taken")) == 2
    detail = _text(driver, "#state-detail")
    assert "Falla (Fail)" in detail and "Demasiado" in detail and "n is over 5" in detail
    driver.find_element(By.CSS_SELECTOR, '.graph .node[data-state="Prepara"]').click()
    detail = _text(driver, "#state-detail")
    assert '"n": 9' in detail and '"prep"' in detail  # its input, and its output with the Pass result
    _shot(driver, "execution")

    # nothing but the server, and no console errors, on any page
    assert _foreign_requests(driver, server) == []
    assert _console_errors(driver) == []

    # sign out: the page goes back to the form; the session's calls are 401 from now on
    session = {"mlgate_session": cookie["value"]}
    assert httpx.get(server.url + "/v1/keys", headers=DASH, cookies=session).status_code == 200
    driver.find_element(By.ID, "logout").click()
    wait_for(lambda: driver.find_element(By.ID, "login").is_displayed(), timeout=15, message="not signed out")
    assert driver.get_cookie("mlgate_session") is None
    assert httpx.get(server.url + "/v1/keys", headers=DASH, cookies=session).status_code == 401
    assert httpx.get(server.url + "/v1/models", headers=DASH, cookies=session).status_code == 401

    # a user who is not an admin: only their own keys, no admin pages
    _sign_in(driver, server, username="ana", password=PASSWORD)
    _page(driver, "#/", server)
    rows = set(
        driver.execute_script("return [...document.querySelectorAll('tr[data-key]')].map(r => r.dataset.key)")
    )
    assert rows == {traffic["ana_key_id"]}
    assert "Your keys" in _text(driver)
    assert not driver.find_element(By.CSS_SELECTOR, '#nav a[data-page="alerts"]').is_displayed()
    assert _console_errors(driver) == []
    assert _foreign_requests(driver, server) == []


def test_the_session_is_a_credential_only_where_it_should_be(
    server: ServerProcess, traffic: dict[str, Any]
) -> None:
    """Over plain HTTP: headers, CSRF rules, revocation, bad sign-ins (last: it throttles)."""
    url = server.url
    page = httpx.get(url + "/dashboard")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    for asset in ("/dashboard/app.js", "/dashboard/vendor/uPlot.esm.js", "/dashboard/vendor/LICENSE"):
        got = httpx.get(url + asset)
        assert got.status_code == 200 and "content-security-policy" in got.headers, asset
    assert httpx.get(url + "/dashboard/../server.log").status_code == 404
    assert httpx.get(url + "/dashboard/nosuch.js").status_code == 404

    # a sign-in needs the dashboard header too (no cross-site form can send it)
    assert (
        httpx.post(url + "/dashboard/api/login", json={"api_key": traffic["keys"]["ana"]}).status_code == 403
    )
    signed = httpx.post(url + "/dashboard/api/login", json={"api_key": traffic["keys"]["ana"]}, headers=DASH)
    assert signed.status_code == 200, signed.text
    set_cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Max-Age=28800" in set_cookie
    assert signed.json()["role"] == "user" and signed.json()["signed_in"] is True
    jar = {"mlgate_session": signed.cookies["mlgate_session"]}
    assert (
        httpx.get(url + "/v1/keys", headers=DASH, cookies=jar).json()["keys"][0]["id"]
        == traffic["ana_key_id"]
    )
    me = httpx.get(url + "/dashboard/api/me", headers=DASH, cookies=jar).json()
    assert me["kind"] == "key" and me["id"] == traffic["ana_key_id"]
    # without the header, or on a write, or outside /v1, the cookie is no credential
    assert httpx.get(url + "/v1/keys", cookies=jar).status_code == 401
    assert httpx.post(url + "/v1/keys", json={"name": "x"}, headers=DASH, cookies=jar).status_code == 401
    assert httpx.get(url + "/v1/alerts", headers=DASH, cookies=jar).status_code == 403  # a user is no admin
    # another credential wins over the cookie
    other = httpx.get(url + "/v1/keys", headers={**DASH, **ADMIN}, cookies=jar).json()["keys"]
    assert len(other) > 1
    # disabling the key ends its session at once
    with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as admin:
        assert admin.post(f"/v1/keys/{traffic['ana_key_id']}/disable").status_code == 200
        try:
            assert httpx.get(url + "/v1/keys", headers=DASH, cookies=jar).status_code == 401
            assert httpx.get(url + "/dashboard/api/me", headers=DASH, cookies=jar).json() == {
                "signed_in": False
            }
        finally:
            admin.post(f"/v1/keys/{traffic['ana_key_id']}/enable")
    # an admin user's session reads model metadata, though model routes take keys by default
    with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as admin:
        made = admin.post(
            "/auth/create_user", json={"username": "root", "password": PASSWORD, "role": "admin"}
        )
        assert made.status_code == 201
    signed = httpx.post(
        url + "/dashboard/api/login", json={"username": "root", "password": PASSWORD}, headers=DASH
    )
    assert signed.status_code == 200 and signed.json()["kind"] == "user" and signed.json()["role"] == "admin"
    jar = {"mlgate_session": signed.cookies["mlgate_session"]}
    assert httpx.get(url + "/v1/models", headers=DASH, cookies=jar).status_code == 200
    assert httpx.get(url + "/v1/alerts", headers=DASH, cookies=jar).status_code == 200
    assert httpx.delete(url + "/v1/models/temperatura", headers=DASH, cookies=jar).status_code in (401, 403)

    # bad credentials: 401 with a message, then throttled (429) per client
    bad = httpx.post(url + "/dashboard/api/login", json={"api_key": "mlg_nosuch00_" + "x" * 40}, headers=DASH)
    assert bad.status_code == 401 and "Sign-in failed" in bad.json()["message"]
    wrong = httpx.post(
        url + "/dashboard/api/login", json={"username": "ana", "password": "nope"}, headers=DASH
    )
    assert wrong.status_code == 401
    statuses = [
        httpx.post(
            url + "/dashboard/api/login", json={"api_key": f"mlg_nosuch{i:02d}_" + "x" * 40}, headers=DASH
        ).status_code
        for i in range(12)
    ]
    assert 429 in statuses and set(statuses) <= {401, 429}
    assert json.loads(httpx.post(url + "/dashboard/api/logout", headers=DASH).text) == {"signed_out": False}
