"""The redaction fast path (a body whose bytes cannot spell a secret or rule name is not walked)
must capture exactly what the full walk would."""

from __future__ import annotations

import orjson
import pytest

from mlgate.monitoring import capture_format
from mlgate.monitoring.capture_format import REDACTED, build_record

BODIES = [
    b'{"temperaturas": [1.5, 2.5, 3]}',
    b'{"password": "hunter2", "x": 1}',
    b'{"nested": [{"accessToken": "t0k"}, {"ok": true}]}',
    b'{"User-Password": "p", "API_KEY": "k", "Authorization": "Bearer z"}',
    b'{"pass\\u0077ord": "escaped-name"}',  # a name spelled with an escape
    '{"TO\u212aEN": "kelvin-sign k"}'.encode(),  # lower-cases to "token" in Python, not in bytes
    b'{"patient_id": 7, "card": {"number": "4111"}}',
    b'{"patientId": 7}',
    b'[{"a": {"b": {"secret_value": "s"}}}]',
]
RULES = [(), ("patient_id",), ("card.number",), ("PATIENT-ID",)]


@pytest.mark.parametrize("rules", RULES)
@pytest.mark.parametrize("body", BODIES)
def test_the_fast_path_captures_what_the_full_walk_captures(
    body: bytes, rules: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    def record() -> dict[str, object]:
        return build_record(
            request_body=body,
            request_type="application/json",
            response_body=body,
            response_type="application/json",
            when=1_764_750_906.5,
            attributes={},
            rules=rules,
        )["captureData"]  # type: ignore[return-value]

    fast = record()
    monkeypatch.setattr(capture_format, "_may_redact", lambda body, rules: True)
    assert fast == record()


def test_secrets_are_still_redacted_on_the_fast_path() -> None:
    body = b'{"password": "hunter2", "temperaturas": [1, 2]}'
    data = build_record(
        request_body=body,
        request_type="application/json",
        response_body=b"{}",
        response_type="application/json",
        when=0.0,
        attributes={},
    )["captureData"]["endpointInput"]["data"]
    assert orjson.loads(data) == {"password": REDACTED, "temperaturas": [1, 2]}
