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
