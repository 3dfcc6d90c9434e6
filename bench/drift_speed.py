"""Time one drift comparison of 60 numeric features x 10,000 captured rows (PSI + KS per feature).

The baseline has 60 features of 20,000 reference rows (2,000-value reservoirs); half of the
captured features are shifted. Prints the best and median of ``--repeat`` runs (SciPy's import,
paid once per process, is excluded and printed apart)::

    .venv/bin/python bench/drift_speed.py [--features 60] [--rows 10000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import orjson

from mlgate.monitoring.baseline import build_baseline
from mlgate.monitoring.drift import Thresholds, compare
from mlgate.monitoring.features import FeatureFrame, extract


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--features", type=int, default=60)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(args.features)]
    started = time.perf_counter()
    baseline = build_baseline({n: rng.normal(0, 1, 20_000) for n in names}, feature_names=names)
    built = time.perf_counter() - started
    frame = FeatureFrame(
        {n: rng.normal(1.0 if i % 2 else 0.0, 1, args.rows) for i, n in enumerate(names)},
        args.rows,
        0,
        args.rows,
    )
    started = time.perf_counter()
    import scipy.stats  # noqa: F401  (imported by the first evaluation of a process)

    scipy_import = time.perf_counter() - started
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        report = compare(baseline, frame, Thresholds())
        times.append(time.perf_counter() - started)
    drifted = len(report["drifted"])
    # The whole path from captured JSON lines: features of 10,000 window requests, then drift.
    records = [
        {
            "captureData": {
                "endpointInput": {"data": orjson.dumps({"values": row.tolist()}).decode(), "encoding": "JSON"}
            }
        }
        for row in np.column_stack([frame.columns[n] for n in names])
    ]
    windowed = {**baseline, "input": {"type": "window", "key": "values"}}
    started = time.perf_counter()
    extracted = extract(records, windowed, max_rows=args.rows)
    compare(windowed, extracted, Thresholds())
    full = time.perf_counter() - started
    print(
        f"drift of {args.features} features x {args.rows:,} rows: best {min(times) * 1000:.1f} ms, "
        f"median {statistics.median(times) * 1000:.1f} ms over {args.repeat} runs "
        f"({drifted} features drifted); scipy.stats import {scipy_import * 1000:.0f} ms; "
        f"baseline of 20,000 rows built in {built * 1000:.0f} ms"
    )
    print(f"from {len(records):,} captured JSON records (features + drift): {full * 1000:.0f} ms")


if __name__ == "__main__":
    main()
