"""The ``s3://`` object store (boto3), imported only when a store URL names a bucket.

Same role and guarantees as :mod:`mlgate.store` (keys checked by
:func:`~mlgate.store.validate_key`, atomic downloads); boto3 and botocore cost ~0.2 s of
every process start, which a server on a local folder never pays.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from mlgate.errors import ConfigurationError, MlgateError, ObjectNotFound, StoreError
from mlgate.settings import S3Settings
from mlgate.store import _NOT_FOUND_CODES, Progress, _atomic_target, _validate_prefix, validate_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["S3ArtifactStore"]


def _s3_client(s3: S3Settings | None) -> S3Client:
    cfg = s3 or S3Settings()
    if (cfg.access_key_id is None) != (cfg.secret_access_key is None):
        raise ConfigurationError("S3 access_key_id and secret_access_key must be set together")
    session = boto3.session.Session(
        aws_access_key_id=cfg.access_key_id,
        aws_secret_access_key=cfg.secret_access_key,
        region_name=cfg.region,
    )
    # S3-compatible servers (MinIO, moto) rarely resolve virtual-host bucket names.
    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path" if cfg.endpoint_url else "auto"},
    )
    return session.client("s3", endpoint_url=cfg.endpoint_url, config=config)


class S3ArtifactStore:
    """Objects in an S3 (or S3-compatible) bucket under an optional key prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        s3: S3Settings | None = None,
        client: S3Client | None = None,
        _page_size: int = 1000,
    ) -> None:
        self.bucket = bucket
        self.prefix = _validate_prefix(prefix.strip("/"))
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client = client if client is not None else _s3_client(s3)
        self._transfer = TransferConfig()
        self._page_size = _page_size

    def _key(self, key: str) -> str:
        key = validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, op: str, key: str, exc: Exception) -> MlgateError:
        where = f"{self.url}/{key}" if key else self.url
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _NOT_FOUND_CODES:
                return ObjectNotFound(f"no object {key!r} in {self.url}")
            return StoreError(f"S3 {op} of {where} failed: {code} {error.get('Message', '')}".strip())
        return StoreError(f"S3 {op} of {where} failed: {type(exc).__name__}: {exc}")

    def put_bytes(self, key: str, data: bytes) -> None:
        full = self._key(key)
        try:
            self._client.put_object(Bucket=self.bucket, Key=full, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._error("put", key, exc) from exc

    def put_file(self, key: str, path: Path, *, progress: Progress | None = None) -> None:
        full = self._key(key)
        try:
            self._client.upload_file(str(path), self.bucket, full, Callback=progress, Config=self._transfer)
        except (BotoCoreError, ClientError, Boto3Error, OSError) as exc:
            raise self._error("upload", key, exc) from exc

    def get_bytes(self, key: str) -> bytes:
        full = self._key(key)
        try:
            return self._client.get_object(Bucket=self.bucket, Key=full)["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise self._error("get", key, exc) from exc

    def download(self, key: str, dest: Path, *, progress: Progress | None = None) -> None:
        full = self._key(key)
        try:
            with _atomic_target(dest) as tmp:
                self._client.download_file(
                    self.bucket, full, str(tmp), Callback=progress, Config=self._transfer
                )
        except (BotoCoreError, ClientError, Boto3Error, OSError) as exc:
            raise self._error("download", key, exc) from exc

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        full = self._key(key)
        try:
            return self._client.head_object(Bucket=self.bucket, Key=full)["ContentLength"]
        except (BotoCoreError, ClientError) as exc:
            raise self._error("head", key, exc) from exc

    def list(self, prefix: str = "") -> list[str]:
        _validate_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=base + prefix, PaginationConfig={"PageSize": self._page_size}
        )
        keys: list[str] = []
        try:
            for page in pages:
                keys.extend(obj["Key"][len(base) :] for obj in page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise self._error("list", prefix, exc) from exc
        return sorted(k for k in keys if k and not k.endswith("/"))

    def delete(self, key: str) -> None:
        full = self._key(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=full)
        except (BotoCoreError, ClientError) as exc:
            raise self._error("delete", key, exc) from exc
