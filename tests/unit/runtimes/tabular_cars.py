"""The cars pipeline: a scikit-learn ``ColumnTransformer`` pipeline fitted on real tabular data.

``vega_datasets.local_data.cars()`` ships in the package (no download): 406 cars, ``Origin`` a
string column (USA, Europe, Japan), 6 missing ``Horsepower`` values. The pipeline predicts
``Miles_per_Gallon`` (rows where it is missing dropped: 398) from one-hot ``Origin`` and the
imputed, scaled numeric columns; fitting is deterministic and takes milliseconds.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

NUMERIC = ["Cylinders", "Displacement", "Horsepower", "Weight_in_lbs", "Acceleration"]
COLUMNS = [*NUMERIC, "Origin"]


def cars() -> Any:
    """The cars DataFrame (vega_datasets still passes a keyword pandas 3 deprecates)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from vega_datasets import local_data

        return local_data.cars()


def cars_pipeline() -> tuple[Any, Any, Any]:
    """(fitted pipeline, X, y)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = cars().dropna(subset=["Miles_per_Gallon"]).reset_index(drop=True)
    x, y = frame[COLUMNS], frame["Miles_per_Gallon"]
    columns = ColumnTransformer(
        [
            ("origin", OneHotEncoder(handle_unknown="ignore"), ["Origin"]),
            ("numeric", make_pipeline(SimpleImputer(), StandardScaler()), NUMERIC),
        ]
    )
    return make_pipeline(columns, Ridge()).fit(x, y), x, y


def dump_cars_pipeline(folder: Path, name: str = "cars.skops") -> tuple[Path, Any, Any, Any]:
    """The fitted pipeline saved with skops: (path, pipeline, X, y)."""
    import skops.io as sio

    pipeline, x, y = cars_pipeline()
    path = folder / name
    sio.dump(pipeline, path)
    return path, pipeline, x, y


def record(x: Any, i: int) -> dict[str, Any]:
    """Row ``i`` of ``x`` as a JSON record (missing values as None)."""
    import math

    out: dict[str, Any] = {}
    for k, v in x.iloc[i].items():
        value = v.item() if hasattr(v, "item") else v
        out[str(k)] = None if isinstance(value, float) and math.isnan(value) else value
    return out
