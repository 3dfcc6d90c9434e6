"""Resource mappings: how a definition written for AWS runs here unchanged.

A mapping file names, for each Task resource of the original definition (a Lambda ARN, a
``lambda:invoke`` FunctionName, a state machine ARN), the mlgate action that plays it and
how the "Lambda" sees its event and builds its return value::

    {"resources": {
      "arn:aws:lambda:us-east-1:123456789012:function:retrieve-image": {
        "action": "store.get",
        "result": {"image_data.$": "$.result.body", "s3_bucket.$": "$.event.s3_bucket",
                   "s3_key.$": "$.event.s3_key"}},
      "arn:aws:lambda:us-east-1:123456789012:function:inference": {
        "action": "model.invoke", "model": "vehiculos", "input_from": "$", "merge": ["inferences"]}}}

- ``action``: ``store.get``, ``model.invoke``, ``python``, ``workflow.start`` (or the native
  resource: ``mlgate:model:invoke``, ``mlgate:python:<name>``, …);
- fixed parameters: ``model`` and ``version`` (model.invoke), ``function`` (python),
  ``workflow`` (workflow.start), ``bucket`` (store.get);
- ``input_from``: a reference path into the event: what the action gets (default ``$``);
- the return value: by default the action's result; ``merge: true`` returns the event with
  the result's keys added (``merge: ["inferences"]``: only those keys); ``result`` is a
  Parameters-style template over ``{"event": <the event>, "result": <the action's result>}``.

Buckets: a top-level ``"buckets": ["fotos", "datos-*"]`` lists the only buckets the
workflow's ``store.get`` tasks may read (exact names, or a prefix ending in ``*``), whatever
bucket an execution's input names; an entry's fixed ``bucket`` is allowed too. Without it,
any bucket of the store is readable (model files never are).

Keys are matched exactly, then without a version/alias qualifier (``…:function:f:$LATEST``
→ ``…:function:f``), then by bare function name (``f``), so one entry serves every form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from mlgate.errors import InvalidInput

__all__ = [
    "ACTIONS",
    "MappedResource",
    "PathError",
    "ResourceMapping",
    "apply_template",
    "bucket_allowed",
    "function_name",
    "get_path",
    "parse_mapping",
    "parse_path",
]

#: Action names a mapping entry may use.
ACTIONS = ("store.get", "model.invoke", "python", "workflow.start")
_NATIVE = {
    "mlgate:store:get": "store.get",
    "mlgate:model:invoke": "model.invoke",
    "mlgate:workflow:start": "workflow.start",
}
_ENTRY_KEYS = frozenset(
    {
        "action",
        "model",
        "version",
        "function",
        "workflow",
        "bucket",
        "input_from",
        "merge",
        "result",
        "comment",
    }
)
_LAMBDA_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:lambda:[^:]*:[^:]*:function:([^:]+)(?::[^:]+)?$")
_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


class PathError(LookupError):
    """A reference path is malformed, or names nothing in the document."""


def parse_path(path: str) -> tuple[str | int, ...]:
    """Split a reference path (``$``, ``$.a.b``, ``$.a[0]``, ``$['a b']``) into its steps."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise PathError(f"{path!r} is not a reference path (it must start with '$')")
    steps: list[str | int] = []
    pos = 1
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None:
            raise PathError(f"{path!r} is not a reference path (at {path[pos:]!r})")
        name, index, quoted1, quoted2 = m.groups()
        if index is not None:
            steps.append(int(index))
        else:
            steps.append(next(s for s in (name, quoted1, quoted2) if s is not None))
        pos = m.end()
    return tuple(steps)


def get_path(doc: Any, path: str | tuple[str | int, ...]) -> Any:
    """The value at a reference path; :class:`PathError` when it is missing."""
    steps = parse_path(path) if isinstance(path, str) else path
    value = doc
    for step in steps:
        in_list = isinstance(step, int) and isinstance(value, list) and step < len(value)
        if in_list or (isinstance(step, str) and isinstance(value, dict) and step in value):
            value = value[step]
        else:
            raise PathError(f"the path {_render(steps)} names nothing in the input")
    return value


def _render(steps: tuple[str | int, ...]) -> str:
    return "$" + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps)


def apply_template(template: Any, context: Any) -> Any:
    """Evaluate a Parameters-style template: ``"key.$": "<path>"`` takes the value at ``path``."""
    if isinstance(template, dict):
        out: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(".$"):
                out[key[:-2]] = get_path(context, value)
            else:
                out[key] = apply_template(value, context)
        return out
    if isinstance(template, list):
        return [apply_template(v, context) for v in template]
    return template


def bucket_allowed(bucket: str, allowed: tuple[str, ...] | None) -> bool:
    """True when ``allowed`` is None (no list) or names ``bucket`` (exactly or by ``prefix*``)."""
    if allowed is None:
        return True
    return any(bucket == a or (a.endswith("*") and bucket.startswith(a[:-1])) for a in allowed)


def function_name(resource: str) -> str | None:
    """The function name of a Lambda ARN (qualifier dropped), else None."""
    m = _LAMBDA_ARN.match(resource)
    return m.group(1) if m else None


def _unqualified(resource: str) -> str:
    """A Lambda ARN without its ``:version``/``:alias`` qualifier."""
    parts = resource.split(":")
    return ":".join(parts[:7]) if len(parts) == 8 and parts[5] == "function" else resource


@dataclass(frozen=True, slots=True)
class MappedResource:
    """What one resource of the original definition does here."""

    key: str
    action: str
    #: fixed action parameters: model, version, function, workflow, bucket
    params: Mapping[str, Any] = field(default_factory=dict)
    input_from: tuple[str | int, ...] = ()
    merge: bool | tuple[str, ...] = False
    result: Mapping[str, Any] | None = None

    def lambda_output(self, event: Any, result: Any) -> Any:
        """The "Lambda"'s return value built from its event and the action's result."""
        if self.result is not None:
            return apply_template(dict(self.result), {"event": event, "result": result})
        if self.merge is not False:
            if not isinstance(event, dict) or not isinstance(result, dict):
                raise PathError("merge needs a JSON object as the event and as the action's result")
            keys = result.keys() if self.merge is True else self.merge
            missing = [k for k in keys if k not in result]
            if missing:
                raise PathError(f"the action's result has no {', '.join(missing)}")
            return {**event, **{k: result[k] for k in keys}}
        return result


@dataclass(frozen=True, slots=True)
class ResourceMapping:
    """A parsed mapping file: resource string → :class:`MappedResource`."""

    entries: Mapping[str, MappedResource] = field(default_factory=dict)
    #: the buckets ``store.get`` may read (None: any); see the module's docstring
    buckets: tuple[str, ...] | None = None

    def lookup(self, resource: str) -> MappedResource | None:
        """Exact key, then the unqualified Lambda ARN, then the bare function name."""
        entries = self.entries
        hit = entries.get(resource) or entries.get(_unqualified(resource))
        if hit is None:
            name = function_name(resource)
            if name is not None:
                hit = entries.get(name)
        return hit

    def __bool__(self) -> bool:
        return bool(self.entries)


EMPTY = ResourceMapping()


def parse_mapping(doc: Mapping[str, Any] | str | None) -> ResourceMapping:
    """Validate a mapping document; :class:`InvalidInput` with ``details["errors"]`` listing every problem."""
    if doc is None:
        return EMPTY
    if isinstance(doc, str):
        try:
            doc = orjson.loads(doc)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"the mapping is not valid JSON: {exc}") from None
    if not isinstance(doc, Mapping):
        raise InvalidInput('a mapping is a JSON object {"resources": {...}}')
    errors: list[str] = []
    extra = set(doc) - {"resources", "buckets", "comment", "Comment"}
    if extra:
        errors.append(f"unknown top-level keys {sorted(extra)} (expected 'resources', 'buckets')")
    buckets: tuple[str, ...] | None = None
    if "buckets" in doc:
        raw_buckets = doc["buckets"]
        if not isinstance(raw_buckets, list) or not all(isinstance(b, str) and b for b in raw_buckets):
            errors.append("'buckets' must be a list of bucket names (or 'prefix*')")
        else:
            buckets = tuple(raw_buckets)
    resources = doc.get("resources", {})
    entries: dict[str, MappedResource] = {}
    if not isinstance(resources, Mapping):
        errors.append("'resources' must be an object: resource string -> entry")
        resources = {}
    for key, raw in resources.items():
        entry = _entry(str(key), raw, errors)
        if entry is not None:
            entries[str(key)] = entry
    if errors:
        raise InvalidInput("the mapping is invalid", details={"errors": errors})
    if buckets is not None:
        # each store.get entry carries the list (its fixed bucket included) to where it reads
        fixed = tuple(e.params["bucket"] for e in entries.values() if "bucket" in e.params)
        buckets = (*buckets, *fixed)
        entries = {
            k: replace(e, params={**e.params, "buckets": buckets}) if e.action == "store.get" else e
            for k, e in entries.items()
        }
    return ResourceMapping(entries, buckets)


def _entry(key: str, raw: Any, errors: list[str]) -> MappedResource | None:
    where = f"resources[{key!r}]"
    if not isinstance(raw, Mapping):
        errors.append(f"{where} must be an object with an 'action'")
        return None
    count = len(errors)
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        errors.append(f"{where}: unknown keys {sorted(unknown)}")
    action = raw.get("action")
    params: dict[str, Any] = {}
    if isinstance(action, str) and action.startswith("mlgate:python:"):
        params["function"] = action.removeprefix("mlgate:python:")
        action = "python"
    elif isinstance(action, str):
        action = _NATIVE.get(action, action)
    if action not in ACTIONS:
        errors.append(f"{where}: action must be one of {', '.join(ACTIONS)} (got {action!r})")
    for name, kind in (("model", str), ("function", str), ("workflow", str), ("bucket", str)):
        if name in raw:
            if not isinstance(raw[name], kind) or not raw[name]:
                errors.append(f"{where}: {name} must be a non-empty string")
            else:
                params[name] = raw[name]
    if "version" in raw:
        version = raw["version"]
        if isinstance(version, bool) or not isinstance(version, int | str) or version in ("", 0):
            errors.append(f"{where}: version must be a version number or an alias")
        else:
            params["version"] = version
    required = {"model.invoke": "model", "python": "function", "workflow.start": "workflow"}.get(str(action))
    if required is not None and required not in params:
        errors.append(f"{where}: action {action} needs '{required}'")
    input_from: tuple[str | int, ...] = ()
    try:
        input_from = parse_path(raw.get("input_from", "$"))
    except PathError as exc:
        errors.append(f"{where}: input_from: {exc}")
    merge = raw.get("merge", False)
    if isinstance(merge, list) and all(isinstance(k, str) for k in merge) and merge:
        merge = tuple(merge)
    elif not isinstance(merge, bool):
        errors.append(f"{where}: merge must be true, false or a non-empty list of keys")
        merge = False
    result = raw.get("result")
    if result is not None:
        if not isinstance(result, Mapping):
            errors.append(f"{where}: result must be an object template")
            result = None
        else:
            _check_template(result, f"{where}.result", errors)
        if merge:
            errors.append(f"{where}: give either 'merge' or 'result', not both")
    if len(errors) > count:
        return None
    return MappedResource(
        key=key, action=str(action), params=params, input_from=input_from, merge=merge, result=result
    )


def _check_template(template: Any, where: str, errors: list[str]) -> None:
    if isinstance(template, Mapping):
        for key, value in template.items():
            if isinstance(key, str) and key.endswith(".$"):
                try:
                    steps = parse_path(value)
                except PathError as exc:
                    errors.append(f"{where}.{key}: {exc}")
                    continue
                if steps and steps[0] not in ("event", "result"):
                    errors.append(f"{where}.{key}: paths start at $.event or $.result")
            else:
                _check_template(value, f"{where}.{key}", errors)
    elif isinstance(template, list):
        for i, value in enumerate(template):
            _check_template(value, f"{where}[{i}]", errors)
