from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mlgate.settings import Settings


def test_paths_derive_from_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.database_url == f"sqlite:///{(tmp_path / 'mlgate.db').resolve()}"
    assert s.store_url == (tmp_path / "store").resolve().as_uri()
    assert s.cache_dir == tmp_path / "cache"
    assert s.log.access_file == tmp_path / "logs" / "access.log"
    assert s.host == "127.0.0.1"


def test_env_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLGATE_PORT", "9123")
    monkeypatch.setenv("MLGATE_S3__ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("MLGATE_MODEL_URIS__ventas", "s3://b/ventas.onnx")
    s = Settings(data_dir=tmp_path)
    assert s.port == 9123
    assert s.s3.endpoint_url == "http://127.0.0.1:9000"
    assert s.declared_uris == {"ventas": "s3://b/ventas.onnx"}


def test_legacy_model_s3_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODEL_S3_URI", "s3://bucket/models/modelo_temperatura.skops")
    assert Settings(data_dir=tmp_path).declared_uris == {
        "modelo_temperatura": "s3://bucket/models/modelo_temperatura.skops"
    }
    monkeypatch.setenv("MODEL_NAME", "temperatura")
    assert Settings(data_dir=tmp_path).declared_uris == {
        "temperatura": "s3://bucket/models/modelo_temperatura.skops"
    }


def test_short_admin_key_refused_outside_dev(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="24 characters"):
        Settings(data_dir=tmp_path, admin_key="secret")
    assert Settings(data_dir=tmp_path, admin_key="secret", dev_mode=True).admin_key == "secret"
