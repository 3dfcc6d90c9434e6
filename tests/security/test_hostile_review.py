"""What a hostile review of issue 14's features found, each now a clean 4xx (never a 5xx, never a
file read or URL fetched for a client): a manifest schema's outside $ref, version numbers past
the database's integers, an OIP request with no rows, a path-escaping s3:// URI."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.security.conftest import ADMIN, SLEEPY_MODEL, admin, start_server


def test_hostile_inputs_on_the_new_features_are_clean_4xx(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"required": ["TOPSECRET"]}))
    with start_server(tmp_path / "data") as s, admin(s) as c:
        for ref in (secret.resolve().as_uri(), "http://example.invalid/schema.json"):
            manifest = {
                "runtime": "python",
                "artifact": "m.py",
                "trusted": True,
                "input_schema": {"$ref": ref},
            }
            pushed = c.post(
                "/v1/models/schemed/versions",
                files={"files": ("m.py", SLEEPY_MODEL.encode())},
                data={"manifest": json.dumps(manifest)},
            )
            assert 400 <= pushed.status_code < 500, pushed.text
            assert "local references" in pushed.text and "TOPSECRET" not in pushed.text
        for path in (
            "/v1/models/sleepy/versions/99999999999999999999/predict",
            "/v1/models/sleepy/predict?version=9223372036854775808",
        ):
            r = c.post(path, json={"sleep": 0})
            assert r.status_code == 400 and "version numbers" in r.text, (path, r.text)
        for path in ("/v2/models/sleepy/versions/99999999999999999999", "/v2/models/sleepy/versions/²"):
            assert 400 <= c.get(path).status_code < 500, path
        empty = {"inputs": [{"name": "x", "shape": [0, 1], "datatype": "FP32", "data": []}]}
        r = c.post("/v2/models/sleepy/infer", json=empty)
        assert r.status_code == 400 and "at least one row" in r.text, r.text
        escaping = c.post(
            "/v1/models/escaped/versions",
            data={"uri": "s3://bucket/../../etc/passwd", "manifest": json.dumps({"runtime": "onnx"})},
            files={"files": ("placeholder", b"")},
        )
        assert escaping.status_code == 400, escaping.text
        with httpx.Client(base_url=s.url, headers=ADMIN) as again:
            assert again.get("/readyz").status_code == 200
