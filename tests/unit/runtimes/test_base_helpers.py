from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlgate.errors import InvalidInput
from mlgate.runtimes.base import numeric_array, oip_datatype


def test_numeric_array_accepts_numbers() -> None:
    assert numeric_array([1, 2.5]).tolist() == [1.0, 2.5]
    assert numeric_array(3).shape == ()
    assert numeric_array([[1, 2], [3, 4]], dtype=np.int32).dtype == np.int32
    assert numeric_array(np.array([1, 2], np.uint8), dtype=np.float32).dtype == np.float32
    assert numeric_array([True, False], dtype=np.bool_).tolist() == [True, False]


@pytest.mark.parametrize(
    ("payload", "dtype", "message"),
    [
        ([1, True], np.float64, "booleans"),
        ([[1, 2], [3, False]], np.float64, "booleans"),
        (np.array([True]), np.float64, "only numbers"),
        ([1, "2"], np.float64, "only numbers"),
        ([1, None], np.float64, "only numbers"),
        ([[1, 2], [3]], np.float64, "ragged"),
        ([1, float("nan")], np.float64, "NaN"),
        ([1e300], np.float32, "too large"),
        ([1.5], np.int64, "whole numbers"),
        ([300], np.uint8, "range"),
        ([-1], np.uint8, "range"),
        ([1 + 2j], np.float64, "only numbers"),
        ("12", np.float64, "not str"),
        ({"a": 1}, np.float64, "not dict"),
        ([1], np.bool_, "booleans"),
    ],
)
def test_numeric_array_refuses(payload: Any, dtype: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        numeric_array(payload, dtype=dtype)


def test_oip_datatypes() -> None:
    assert oip_datatype(np.float32) == "FP32"
    assert oip_datatype(np.dtype("int64")) == "INT64"
    assert oip_datatype(np.bool_) == "BOOL"
    assert oip_datatype(np.dtype("<U3")) == "BYTES"
    assert oip_datatype(object) == "BYTES"
