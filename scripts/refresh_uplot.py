"""Refresh the dashboard's vendored uPlot from the npm registry, checking its integrity.

The dashboard ships uPlot (MIT) in ``src/mlgate/http/dashboard/vendor/``: ``uPlot.esm.js``,
``uPlot.min.css`` and its ``LICENSE``. This script downloads the pinned version's tarball
from the registry, checks it against the registry's ``dist.integrity`` (an SRI sha512) before
touching anything, and replaces the three files. Nothing from the package is executed.

Usage::

    python scripts/refresh_uplot.py              # the pinned VERSION
    python scripts/refresh_uplot.py --version 1.6.32 --registry https://registry.npmjs.org

Change ``VERSION`` below (and docs/dashboard.md) when moving to another release.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "1.6.32"
PACKAGE = "uplot"
REGISTRY = "https://registry.npmjs.org"
VENDOR = Path(__file__).resolve().parents[1] / "src" / "mlgate" / "http" / "dashboard" / "vendor"
#: tarball member -> vendored file name
FILES = {
    "package/dist/uPlot.esm.js": "uPlot.esm.js",
    "package/dist/uPlot.min.css": "uPlot.min.css",
    "package/LICENSE": "LICENSE",
}
_MAX_BYTES = 20 * 1024 * 1024


def _get(url: str) -> bytes:
    if not url.startswith("https://"):
        raise SystemExit(f"refusing a non-https URL: {url}")
    with urllib.request.urlopen(url, timeout=60) as answer:  # noqa: S310 - https only (checked above)
        data: bytes = answer.read(_MAX_BYTES + 1)
    if len(data) > _MAX_BYTES:
        raise SystemExit(f"{url}: larger than {_MAX_BYTES} bytes")
    return data


def check_integrity(data: bytes, integrity: str) -> None:
    """Exit unless ``data`` matches the SRI string ``sha512-<base64>``."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512" or not expected:
        raise SystemExit(f"unsupported integrity {integrity!r} (want sha512-...)")
    got = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != expected:
        raise SystemExit(
            f"integrity mismatch: the registry says sha512-{expected}, the tarball is sha512-{got}"
        )


def extract(data: bytes) -> dict[str, bytes]:
    """The wanted files out of the tarball (regular files only; nothing is written)."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.name in FILES and member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                out[FILES[member.name]] = handle.read()
    missing = set(FILES.values()) - set(out)
    if missing:
        raise SystemExit(f"the tarball lacks {sorted(missing)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Refresh the dashboard's vendored uPlot from npm.")
    parser.add_argument("--version", default=VERSION)
    parser.add_argument("--registry", default=REGISTRY)
    args = parser.parse_args(argv)
    meta = json.loads(_get(f"{args.registry.rstrip('/')}/{PACKAGE}/{args.version}"))
    dist = meta["dist"]
    tarball = _get(dist["tarball"])
    check_integrity(tarball, dist["integrity"])  # before anything is replaced
    files = extract(tarball)
    VENDOR.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (VENDOR / name).write_bytes(content)
        print(f"{VENDOR / name}: {len(content)} bytes")
    print(f"uPlot {args.version} vendored ({dist['integrity'][:20]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
