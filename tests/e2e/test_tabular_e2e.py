"""End to end: a scikit-learn pipeline fitted on a DataFrame (the cars table: a string column,
missing values) pushed over HTTP and served from JSON records on a real server (issue 14)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mlgate.runtimes.tabular import table_input_schema, table_params
from tests.server_process import ADMIN_KEY, ServerProcess, run_server
from tests.unit.runtimes.tabular_cars import COLUMNS, dump_cars_pipeline, record

pytestmark = pytest.mark.e2e
pytest.importorskip("pandas")
pytest.importorskip("vega_datasets")
ADMIN = {"x-api-key": ADMIN_KEY}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server(tmp_path_factory.mktemp("e2e-tabular")) as s:
        yield s


@pytest.fixture(scope="module")
def cars(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """The cars pipeline pushed as ``cars`` v1 (manifest with the column dtypes and a sample,
    aliased production) and v2 (no manifest: the kinds come from the pipeline)."""
    path, pipeline, x, _ = dump_cars_pipeline(tmp_path_factory.mktemp("cars"))
    params = table_params(x)
    manifest = {
        "runtime": "sklearn",
        "artifact": path.name,
        "params": params,
        "input_schema": table_input_schema(params),
    }
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60.0) as c:
        for form in ({"manifest": json.dumps(manifest), "aliases": "production"}, {}):
            with path.open("rb") as f:
                r = c.post("/v1/models/cars/versions", files={"files": (path.name, f)}, data=form)
            assert r.status_code == 201, r.text
    return pipeline, x


def _expected(pipeline: Any, x: Any, rows: list[int]) -> list[float]:
    return [float(v) for v in pipeline.predict(x.iloc[rows])]


def test_one_record_a_list_of_records_and_columns(server: ServerProcess, cars: tuple[Any, Any]) -> None:
    pipeline, x = cars
    rows = [0, 150, 300]
    records = [record(x, i) for i in rows]
    with server.client() as c:
        for path in ("/v1/models/cars/predict", "/v1/models/cars/versions/2/predict"):
            one = c.post(path, json={"inputs": records[0]})
            assert one.status_code == 200, one.text
            assert one.json()["outputs"] == pytest.approx(_expected(pipeline, x, rows[:1])[0])
            many = c.post(path, json={"inputs": records})
            assert many.status_code == 200, many.text
            assert many.json()["outputs"] == pytest.approx(_expected(pipeline, x, rows))
            columns = c.post(path, json={"inputs": {k: [r[k] for r in records] for k in COLUMNS}})
            assert columns.json()["outputs"] == many.json()["outputs"]
        batch = c.post("/v1/models/cars/batch", json={"inputs": records})
        assert batch.status_code == 200, batch.text
        assert [r["output"] for r in batch.json()["results"]] == pytest.approx(many.json()["outputs"])


def test_missing_values_are_imputed(server: ServerProcess, cars: tuple[Any, Any]) -> None:
    pipeline, x = cars
    missing = [int(i) for i in x.index[x["Horsepower"].isna()]]
    with server.client() as c:
        r = c.post("/v1/models/cars/predict", json={"inputs": [record(x, i) for i in missing]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == pytest.approx(_expected(pipeline, x, missing))


def test_a_bad_column_is_a_400_naming_it(server: ServerProcess, cars: tuple[Any, Any]) -> None:
    _, x = cars
    good = record(x, 0)
    without = {k: v for k, v in good.items() if k != "Origin"}
    with server.client() as c:
        unknown = c.post("/v1/models/cars/predict", json={"inputs": {**good, "Colour": "red"}})
        missing = c.post("/v1/models/cars/predict", json={"inputs": [good, without]})
        wrong = c.post("/v1/models/cars/predict", json={"inputs": {**good, "Horsepower": "fast"}})
        batch = c.post("/v1/models/cars/batch", json={"inputs": [good, without]})
    assert unknown.status_code == 400, unknown.text
    assert "unknown column 'Colour'" in unknown.json()["error"]["message"]
    assert unknown.json()["error"]["details"] == {"unknown": ["Colour"], "missing": []}
    assert missing.status_code == 400
    assert "missing column 'Origin'" in missing.json()["error"]["message"]
    assert wrong.status_code == 400
    assert "column 'Horsepower' takes a number" in wrong.json()["error"]["message"]
    first, second = batch.json()["results"]
    assert "output" in first and second["error"]["status"] == 400


def test_oip_metadata_lists_the_columns(server: ServerProcess, cars: tuple[Any, Any]) -> None:
    with server.client() as c:
        meta = c.get("/v2/models/cars")
    assert meta.status_code == 200, meta.text
    inputs = {i["name"]: i["datatype"] for i in meta.json()["inputs"]}
    assert list(inputs) == COLUMNS
    assert inputs["Origin"] == "BYTES" and inputs["Horsepower"] == "FP64" and inputs["Cylinders"] == "INT64"


def test_rows_are_metered_not_requests(server: ServerProcess, cars: tuple[Any, Any]) -> None:
    """A list of records (or columns) is charged its rows, before anything is decoded."""
    _, x = cars
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30.0) as admin:
        plan = admin.post("/v1/plans", json={"name": "rows10", "quota_limit": 10, "quota_period": "DAY"})
        assert plan.status_code == 201, plan.text
        key = admin.post("/v1/keys", json={"name": "rows", "plan": "rows10"}).json()["key"]
    records = [record(x, i) for i in range(4)]
    with httpx.Client(base_url=server.url, headers={"x-api-key": key}, timeout=30.0) as c:
        four = c.post("/v1/models/cars/predict", json={"inputs": records})
        assert four.status_code == 200 and four.headers["X-Quota-Remaining"] == "6"
        columns = {k: [r[k] for r in records[:3]] for k in COLUMNS}
        three = c.post("/v1/models/cars/predict", json={"inputs": columns})
        assert three.status_code == 200 and three.headers["X-Quota-Remaining"] == "3"
        batch = c.post("/v1/models/cars/batch", json={"inputs": [records[:2], records[:2]]})
        assert batch.status_code == 429, batch.text  # 2 items of 2 rows: 4 > the 3 left
        one = c.post("/v1/models/cars/predict", json={"inputs": records[0]})
        assert one.status_code == 200 and one.headers["X-Quota-Remaining"] == "2"
