"""The components are built without HTTP: ``mlgate.server`` is what an AWS Lambda handler or a
Ray Serve replica builds, with no web framework imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_the_components_are_built_and_serve_with_no_web_stack_imported(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        from mlgate.server import Server
        from mlgate.settings import Settings

        async def main():
            server = Server.create(Settings(data_dir={str(tmp_path)!r}, services=["temperatura"]))
            await server.start()
            try:
                seed = [20.0 + (i % 24) / 4 for i in range(60)]
                prediction = await server.dataplane.predict("temperatura", {{"temperaturas": seed}})
                print(prediction.output)
            finally:
                await server.stop()

        asyncio.run(main())
        web = sorted(
            m for m in sys.modules
            if m.split(".")[0] in ("fastapi", "starlette", "uvicorn", "httptools")
            or m.startswith("mlgate.http")
        )
        print(web)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    prediction, web = out.stdout.strip().splitlines()[-2:]
    assert "prediccion" in prediction
    assert web == "[]"


def _bootstrap(tmp_path: Path, **settings: object) -> tuple[list[str], str]:
    """(the roles of the keys a first bootstrap leaves, what it printed to stderr)."""
    import contextlib
    import io

    from mlgate.server import Server
    from mlgate.settings import Settings

    server = Server.create(Settings(data_dir=tmp_path, services=[], **settings))  # type: ignore[arg-type]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            server.bootstrap()
        return [k.role for k in server.keys.list()], err.getvalue()
    finally:
        server.repository.close()


def test_the_first_start_prints_a_generated_admin_key_once(tmp_path: Path) -> None:
    roles, printed = _bootstrap(tmp_path)
    assert roles == ["admin"]
    assert "bootstrap admin key created" in printed
    assert _bootstrap(tmp_path) == (["admin"], "")  # the second start: nothing new, nothing printed


def test_no_generated_admin_key_when_generation_is_off(tmp_path: Path) -> None:
    """AWS Lambda's default (LAMBDA_DEFAULTS): stderr is CloudWatch Logs, so no credential is
    generated and printed there; a configured key is still installed."""
    assert _bootstrap(tmp_path / "a", generate_admin_key=False) == ([], "")
    roles, printed = _bootstrap(tmp_path / "b", generate_admin_key=False, admin_key="k" * 24)
    assert (roles, printed) == (["admin"], "")
