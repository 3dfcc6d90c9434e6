"""Training run requests: what a caller may ask of a run, checked before anything starts.

Holds :class:`TrainRequest` (what one run does), :func:`parse_request` (a ``POST /v1/train``
body, or a drift alert's, or ``mlgate train --remote``'s, to a request; anything malformed is a
400) and :func:`check_recipe` (which recipes may run). Kept apart from the manager
(:mod:`mlgate.lifecycle.jobs`, which re-exports these names) because the routes and the retrain
policy validate requests without starting anything, and light: nothing here imports a recipe.

**Which recipes**: the built-in ones always; a user's ``module:function`` only when listed in
``train.recipes`` (``module:function`` exactly, or ``module:*``), since importing a module runs
its code in the child with an admin key. ``data_dir`` is not accepted over HTTP (a server
path); the built-in recipes use their own data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlgate.errors import Forbidden, InvalidInput
from mlgate.types import NAME_PATTERN

__all__ = [
    "MAX_PARAMS",
    "MAX_PARAMS_BYTES",
    "TrainRequest",
    "check_recipe",
    "parse_request",
]

#: bounds of what a caller may send (the options are stored with the run)
MAX_PARAMS = 32
MAX_PARAMS_BYTES = 4096


@dataclass(frozen=True)
class TrainRequest:
    """What one run does (validated: :func:`parse_request`)."""

    recipe: str
    model: str
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    #: move this alias when the gate passes (None: compare with ``alias``, move nothing)
    promote: str | None = None
    alias: str = "production"
    min_improvement: float = 0.0
    dry_run: bool = False

    def options(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "params": self.params,
            "promote": self.promote,
            "alias": self.alias,
            "min_improvement": self.min_improvement,
            "dry_run": self.dry_run,
        }


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise InvalidInput(f"{what} must match {NAME_PATTERN.pattern} (lowercase letters, digits, _ and -)")
    return value


def parse_request(body: Any, *, default_model: str | None = None) -> TrainRequest:
    """A JSON body (``{"recipe", "model"?, "seed"?, "params"?, "promote"?, "alias"?,
    "min_improvement"?, "dry_run"?}``) → a request; anything malformed is a 400."""
    if not isinstance(body, Mapping):
        raise InvalidInput("the body is a JSON object: {'recipe': ..., 'model'?, 'seed'?, 'params'?, ...}")
    known = {"recipe", "model", "seed", "params", "promote", "alias", "min_improvement", "dry_run"}
    unknown = set(body) - known
    if unknown:
        raise InvalidInput(
            f"unknown fields: {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})"
        )
    recipe = body.get("recipe")
    if not isinstance(recipe, str) or not recipe or len(recipe) > 255:
        raise InvalidInput("'recipe' is a built-in recipe's name or module:function (≤ 255 characters)")
    if ":" in recipe and body.get("model") is None and default_model is None:
        raise InvalidInput("a module:function recipe needs 'model'")
    model = _name(body.get("model") or default_model or recipe, "'model'")
    seed = body.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise InvalidInput("'seed' is an integer from 0 to 2^31 - 1")
    params = body.get("params")
    if params is None:
        params = {}
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise InvalidInput("'params' is an object of the recipe's parameters")
    if len(params) > MAX_PARAMS or len(json.dumps(params, default=str)) > MAX_PARAMS_BYTES:
        raise InvalidInput(f"'params' holds at most {MAX_PARAMS} entries and {MAX_PARAMS_BYTES} bytes")
    promote = body.get("promote")
    if promote is not None:
        promote = _name(promote, "'promote' (an alias)")
    alias = _name(body.get("alias") or promote or "production", "'alias'")
    if promote is not None and alias != promote:
        raise InvalidInput("'alias' and 'promote' name the same alias when both are given")
    minimum = body.get("min_improvement", 0.0)
    if isinstance(minimum, bool) or not isinstance(minimum, int | float) or not math.isfinite(minimum):
        raise InvalidInput("'min_improvement' is a finite number")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise InvalidInput("'dry_run' is true or false")
    return TrainRequest(
        recipe=recipe,
        model=model,
        seed=seed,
        params=dict(params),
        promote=promote,
        alias=alias,
        min_improvement=float(minimum),
        dry_run=dry_run,
    )


def check_recipe(recipe: str, allowed: list[str]) -> None:
    """Built-in recipes always; ``module:function`` only when ``allowed`` lists it (exactly, or as
    ``module:*``): a 403 otherwise. Nothing is imported here (the child imports it)."""
    from mlgate.lifecycle.recipes import BUILTIN

    if recipe in BUILTIN:
        return
    module, sep, attr = recipe.partition(":")
    if not sep or not module or not attr:
        known = ", ".join(sorted(BUILTIN))
        raise InvalidInput(f"unknown recipe {recipe!r}: a built-in one ({known}) or module:function")
    if recipe in allowed or f"{module}:*" in allowed:
        return
    raise Forbidden(
        f"recipe {recipe!r} is not allowed over HTTP: list it in the server's train.recipes setting "
        "(MLGATE_TRAIN__RECIPES); the built-in recipes are always allowed",
        details={"recipe": recipe},
    )
