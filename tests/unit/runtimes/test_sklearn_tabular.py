"""scikit-learn pipelines fitted on DataFrames, served from JSON records (issue 14, part 2).

Real data: the cars table ``vega_datasets`` ships (406 cars, a string ``Origin`` column, missing
``Horsepower`` values), through a ``ColumnTransformer(OneHotEncoder, SimpleImputer +
StandardScaler)`` + ``Ridge`` pipeline fitted here and saved with skops.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio

from mlgate.errors import ConfigurationError, InvalidInput
from mlgate.runtimes.base import LoadContext
from mlgate.runtimes.sklearn import SklearnRuntime
from mlgate.runtimes.tabular import table_input_schema, table_params
from mlgate.types import Manifest
from tests.unit.runtimes.tabular_cars import COLUMNS, NUMERIC, cars_pipeline, dump_cars_pipeline, record

pd = pytest.importorskip("pandas")
pytest.importorskip("vega_datasets")


@pytest.fixture(scope="module")
def cars(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """(folder holding cars.skops, the fitted pipeline, X)."""
    folder = tmp_path_factory.mktemp("cars")
    _, pipeline, x, _ = dump_cars_pipeline(folder)
    return folder, pipeline, x


def _load(folder: Path, artifact: str = "cars.skops", **manifest: Any) -> SklearnRuntime:
    runtime = SklearnRuntime()
    runtime.load(LoadContext(folder, Manifest(runtime="sklearn", artifact=artifact, **manifest)))
    warm = runtime.warmup_input()
    assert warm is not None
    runtime.predict([warm])  # as the dataplane does before a version serves
    return runtime


def _expected(pipeline: Any, x: Any, rows: list[int]) -> list[float]:
    return [float(v) for v in pipeline.predict(x.iloc[rows])]


def test_the_data_is_real_tabular_data(cars: tuple[Path, Any, Any]) -> None:
    _, pipeline, x = cars
    assert len(x) == 398 and list(x.columns) == COLUMNS
    assert set(x["Origin"]) == {"USA", "Europe", "Japan"}
    assert int(x["Horsepower"].isna().sum()) == 6
    assert list(pipeline.feature_names_in_) == COLUMNS


def test_one_record_predicts_like_the_pipeline(cars: tuple[Path, Any, Any]) -> None:
    folder, pipeline, x = cars
    runtime = _load(folder)  # no params: the kinds come from the pipeline
    [out] = runtime.predict([runtime.decode({"inputs": record(x, 0)})])
    assert type(out) is float and out == pytest.approx(_expected(pipeline, x, [0])[0])
    # a bare record (a /batch item) and a positional row in column order are one record too
    [bare] = runtime.predict([runtime.decode(record(x, 0))])
    [positional] = runtime.predict([runtime.decode([record(x, 0)[c] for c in COLUMNS])])
    assert bare == positional == out


def test_records_and_columns_answer_a_list_in_order(cars: tuple[Path, Any, Any]) -> None:
    folder, pipeline, x = cars
    runtime = _load(folder)
    rows = [5, 200, 390]  # USA, Europe, Japan and others
    records = [record(x, i) for i in rows]
    columns = {c: [r[c] for r in records] for c in reversed(COLUMNS)}  # key order does not matter
    by_records, by_columns, single = runtime.predict(
        [
            runtime.decode({"inputs": records}),
            runtime.decode({"inputs": columns}),
            runtime.decode({"inputs": records[1]}),
        ]
    )
    assert by_records == pytest.approx(_expected(pipeline, x, rows))
    assert by_columns == pytest.approx(by_records, rel=1e-12)  # two frame layouts: equal to an ulp
    assert single == pytest.approx(by_records[1])
    assert runtime.encode(by_records) == by_records


def test_missing_values_are_imputed(cars: tuple[Path, Any, Any]) -> None:
    folder, pipeline, x = cars
    runtime = _load(folder)
    missing = [int(i) for i in np.flatnonzero(x["Horsepower"].isna())]
    assert missing and record(x, missing[0])["Horsepower"] is None
    out = runtime.predict([runtime.decode({"inputs": [record(x, i) for i in missing]})])[0]
    assert out == pytest.approx(_expected(pipeline, x, missing))

    # None and NaN (from a processor) are the same missing value: the training mean, imputed
    def hp(value: Any) -> float:
        [y] = runtime.predict([runtime.decode({**record(x, 0), "Horsepower": value})])
        return float(y)

    assert hp(None) == hp(float("nan")) == pytest.approx(hp(float(x["Horsepower"].mean())))
    # a missing Origin is no known category: the one-hot encoder ignores it
    [y] = runtime.predict([runtime.decode({**record(x, 0), "Origin": None})])
    assert isinstance(y, float)


def test_unknown_and_missing_columns_are_named(cars: tuple[Path, Any, Any]) -> None:
    folder, _, x = cars
    runtime = _load(folder)
    good = record(x, 0)
    with pytest.raises(InvalidInput, match="unknown column 'Colour'") as unknown:
        runtime.decode({"inputs": {**good, "Colour": "red"}})
    assert unknown.value.details == {"unknown": ["Colour"], "missing": []}
    without = {k: v for k, v in good.items() if k != "Horsepower"}
    with pytest.raises(InvalidInput, match="missing column 'Horsepower'"):
        runtime.decode({"inputs": without})
    with pytest.raises(InvalidInput, match="missing column 'Horsepower'"):
        runtime.decode({"inputs": [good, without]})
    with pytest.raises(InvalidInput, match="missing column 'Origin'"):
        runtime.decode({"inputs": {c: [good[c]] for c in NUMERIC}})


def test_values_are_checked_against_their_column(cars: tuple[Path, Any, Any]) -> None:
    folder, _, x = cars
    runtime = _load(folder, params={"max_rows": 3})
    good = record(x, 0)
    cases: dict[str, Any] = {
        r"column 'Horsepower' takes a number, not 'fast'": {**good, "Horsepower": "fast"},
        r"column 'Horsepower' takes a number, not True": {**good, "Horsepower": True},
        r"column 'Origin' takes a string, not 3": {**good, "Origin": 3},
        r"column 'Origin' \(row 1\) takes a string, not a list": [good, {**good, "Origin": ["USA"]}],
        "same number of values": {c: [good[c]] * (2 if c == "Origin" else 1) for c in COLUMNS},
        "at most 3 rows": [good] * 4,
        "at least one row": {c: [] for c in COLUMNS},
        "expected 6 values": [1.0, 2.0],
        "the columns are Cylinders": "USA",
    }
    for message, payload in cases.items():
        with pytest.raises(InvalidInput, match=message):
            runtime.decode({"inputs": payload})


def test_metadata_lists_the_columns(cars: tuple[Path, Any, Any]) -> None:
    folder, _, _ = cars
    meta = _load(folder).metadata()
    assert [i["name"] for i in meta["inputs"]] == COLUMNS
    kinds = {i["name"]: (i["datatype"], i["shape"], i["parameters"]["kind"]) for i in meta["inputs"]}
    assert kinds["Origin"] == ("BYTES", [-1], "str")
    assert kinds["Horsepower"] == ("FP64", [-1], "float")
    assert meta["outputs"] == [{"name": "output_0", "datatype": "FP64", "shape": [-1]}]


def test_manifest_params_from_the_training_frame(cars: tuple[Path, Any, Any]) -> None:
    folder, pipeline, x = cars
    params = table_params(x)
    assert params["columns"] == {
        "Cylinders": "int64",
        "Displacement": "float64",
        "Horsepower": "float64",
        "Weight_in_lbs": "int64",
        "Acceleration": "float64",
        "Origin": "str",
    }
    assert params["example"] == record(x, 0)
    runtime = _load(folder, params=params)
    [out] = runtime.predict([runtime.warmup_input()])  # the warm-up is the stored sample
    assert out == pytest.approx(_expected(pipeline, x, [0])[0])
    with pytest.raises(InvalidInput, match="column 'Cylinders' takes a number"):
        runtime.decode({**record(x, 0), "Cylinders": "four"})
    # an int column stays int64; a fraction is kept, not truncated; null is NaN, for the imputer
    assert runtime.decode(record(x, 0)).columns["Cylinders"].dtype == np.int64
    assert runtime.decode({**record(x, 0), "Cylinders": 4.5}).columns["Cylinders"].tolist() == [4.5]
    runtime.predict([runtime.decode({"inputs": [{**record(x, 0), "Cylinders": None}, record(x, 1)]})])
    assert runtime.metadata()["inputs"][0]["datatype"] == "INT64"


def test_the_request_json_schema(cars: tuple[Path, Any, Any]) -> None:
    """The manifest's input_schema documents the three forms (under $defs) and lets every form
    through, a bare /batch record too: the runtime's 400s name the column, the schema's would not."""
    jsonschema = pytest.importorskip("jsonschema")
    _, _, x = cars
    schema = table_input_schema(table_params(x))
    good = record(x, int(np.flatnonzero(x["Horsepower"].isna())[0]))
    assert good["Horsepower"] is None  # a missing value
    forms = {"record": good, "records": [good, good], "columns": {k: [v] for k, v in good.items()}}
    for form, inputs in forms.items():
        jsonschema.validate({"inputs": inputs}, schema)
        jsonschema.validate(inputs, {**schema, "$ref": f"#/$defs/{form}"})
    jsonschema.validate(good, schema)
    jsonschema.validate({"inputs": {**good, "Colour": 1}}, schema)
    without_origin = {k: v for k, v in good.items() if k != "Origin"}
    for bad in ({**good, "Colour": 1}, {**good, "Origin": 3}, without_origin):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, {**schema, "$ref": "#/$defs/record"})
    assert schema["examples"] == [{"inputs": record(x, 0)}]


def test_params_that_do_not_fit_are_refused_at_load(cars: tuple[Path, Any, Any]) -> None:
    folder, _, x = cars
    params = table_params(x)
    with pytest.raises(ConfigurationError, match=r"missing \['Origin'\]"):
        _load(folder, params={"columns": {c: "float64" for c in NUMERIC}})
    with pytest.raises(ConfigurationError, match="unknown dtype 'text'"):
        _load(folder, params={"columns": {**params["columns"], "Origin": "text"}})
    with pytest.raises(ConfigurationError, match="'example' does not fit"):
        _load(folder, params={"example": {**params["example"], "Colour": "red"}})
    with pytest.raises(ConfigurationError, match="max_rows"):
        _load(folder, params={"max_rows": 0})


def test_a_string_sample_makes_a_string_column(tmp_path: Path) -> None:
    """A pipeline that does not reveal a string column (an imputer with a constant) learns it
    from the sample stored at push time."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "note": ["x", "y", None, "x"]})
    cols = ColumnTransformer([("a", "passthrough", ["a"]), ("note", "drop", ["note"])])
    model = make_pipeline(cols, SimpleImputer(), LinearRegression()).fit(frame, [1.0, 2.0, 3.0, 4.0])
    sio.dump(model, tmp_path / "m.skops")
    numeric = _load(tmp_path, "m.skops")
    with pytest.raises(InvalidInput, match="column 'note' takes a number"):
        numeric.decode({"a": 1.0, "note": "x"})
    runtime = _load(tmp_path, "m.skops", params={"example": {"a": 1.0, "note": "x"}})
    [out] = runtime.predict([runtime.decode({"a": 2.0, "note": None})])
    assert out == pytest.approx(2.0)


def test_an_encoder_that_refuses_unknown_categories_is_enforced_at_decode(tmp_path: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder, StandardScaler

    _, x, _ = cars_pipeline()
    columns = ColumnTransformer(
        [("origin", OrdinalEncoder(), ["Origin"]), ("num", StandardScaler(), ["Weight_in_lbs"])]
    )
    clf = make_pipeline(columns, LogisticRegression()).fit(x[["Origin", "Weight_in_lbs"]], x["Cylinders"] > 4)
    sio.dump(clf, tmp_path / "clf.skops")
    runtime = _load(tmp_path, "clf.skops", params={"output": "proba"})  # warm-up: a known category
    known = r"column 'Origin': 'Mars' is not one of the known values \(Europe, Japan, USA\)"
    with pytest.raises(InvalidInput, match=known):
        runtime.decode({"inputs": {"Origin": "Mars", "Weight_in_lbs": 3000}})
    [p] = runtime.predict([runtime.decode({"inputs": {"Origin": "Japan", "Weight_in_lbs": 2000}})])
    assert len(p) == 2 and sum(p) == pytest.approx(1.0)
    assert runtime.metadata()["outputs"][0]["shape"] == [-1, 2]


def test_declared_categories(tmp_path: Path) -> None:
    from sklearn.linear_model import Ridge

    frame = pd.DataFrame({"size": [1.0, 2.0, 3.0]})
    sio.dump(Ridge().fit(frame, [1.0, 2.0, 3.0]), tmp_path / "r.skops")
    declared = {"size": {"dtype": "float64", "categories": [1]}}
    with pytest.raises(ConfigurationError, match="categories need dtype 'category'"):
        _load(tmp_path, "r.skops", params={"columns": declared})
    frame = pd.DataFrame({"size": pd.Categorical(["S", "M", "L"]), "n": [1, 2, 3]})
    assert table_params(frame)["columns"]["size"] == {"dtype": "category", "categories": ["L", "M", "S"]}


def test_nan_without_an_imputer_is_the_requests_400(tmp_path: Path) -> None:
    from sklearn.linear_model import Ridge

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.0, 1.0, 0.0]})
    sio.dump(Ridge().fit(frame, [1.0, 2.0, 3.0]), tmp_path / "r.skops")
    runtime = _load(tmp_path, "r.skops")
    with pytest.raises(InvalidInput, match=r"cannot take this input.*NaN"):
        runtime.predict([runtime.decode({"a": None, "b": 1.0})])


def test_open_inference_protocol_columns(tmp_path: Path) -> None:
    from sklearn.linear_model import Ridge

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.0, 1.0, 0.0]})
    model = Ridge().fit(frame, [1.0, 2.0, 3.0])
    sio.dump(model, tmp_path / "r.skops")
    runtime = _load(tmp_path, "r.skops")
    items = runtime.decode_tensors({"b": np.array([[1.0], [0.0]]), "a": np.array([[2.0], [3.0]])})
    outputs = runtime.predict(items)
    assert outputs == pytest.approx(model.predict(pd.DataFrame({"a": [2.0, 3.0], "b": [1.0, 0.0]})).tolist())
    assert runtime.encode_tensors(outputs)["output_0"].shape == (2,)
    with pytest.raises(InvalidInput, match="missing column 'b'"):
        runtime.decode_tensors({"a": np.array([1.0])})


def test_pandas_missing_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.linear_model import Ridge

    sio.dump(Ridge().fit(pd.DataFrame({"a": [1.0, 2.0]}), [1.0, 2.0]), tmp_path / "r.skops")
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(ConfigurationError, match=r"pip install 'mlgate\[tabular\]'"):
        SklearnRuntime().load(LoadContext(tmp_path, Manifest(runtime="sklearn", artifact="r.skops")))
