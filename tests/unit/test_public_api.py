"""The public API is explicit: a sorted ``__all__`` whose every name exists."""

from __future__ import annotations

import mlgate


def test_all_is_sorted_and_complete() -> None:
    assert mlgate.__all__ == sorted(mlgate.__all__)
    for name in mlgate.__all__:
        assert hasattr(mlgate, name), name


def test_every_public_class_is_documented() -> None:
    for name in mlgate.__all__:
        obj = getattr(mlgate, name)
        if isinstance(obj, type):
            assert obj.__doc__, name
