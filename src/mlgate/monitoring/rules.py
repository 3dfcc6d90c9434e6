"""Alert rules: loading and checking rule files, the built-in defaults, annotation templates, export.

Rules are Prometheus alerting rules (``groups: - name, rules: - alert, expr, for,
keep_firing_for, labels, annotations``) in the supported PromQL subset
(:mod:`mlgate.monitoring.promql`): the built-in :data:`DEFAULT_RULES` (unless
``alerts.default_rules`` is off) plus ``alerts.rules_file`` (a rule with a default's name
replaces it). Anything unsupported is refused when the rules load, naming the rule. Labels and
annotations are templated as Prometheus does for ``{{ $labels.x }}``, ``{{ $value }}`` and the
humanize pipes (:func:`render_template`); :func:`export_rules_yaml` writes the rules back as a
Prometheus rule file (``promtool check rules`` accepts it). :mod:`mlgate.monitoring.alerts`
evaluates them.

Example::

    rules = load_rules(settings.alerts)   # RuleError naming the rule and the construct
    print(export_rules_yaml(rules))
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlgate.monitoring import promql
from mlgate.monitoring.promql_ast import is_scalar
from mlgate.settings import AlertSettings

__all__ = [
    "DEFAULT_RULES",
    "Rule",
    "RuleError",
    "check_template",
    "export_rules_yaml",
    "go_float",
    "humanize",
    "humanize_duration",
    "load_rules",
    "parse_rules",
    "render_template",
]

#: The built-in rules (Prometheus' YAML shape), on metric names as Prometheus scrapes them.
DEFAULT_RULES: dict[str, Any] = {
    "groups": [
        {
            "name": "mlgate",
            "rules": [
                {
                    "alert": "MlgateHighErrorRate",
                    "expr": (
                        'sum by (route) (rate(mlgate_http_requests_total{status=~"5.."}[5m]))'
                        " / sum by (route) (rate(mlgate_http_requests_total[5m])) > 0.05"
                        " and sum by (route) (rate(mlgate_http_requests_total[5m])) > 0.1"
                    ),
                    "for": "5m",
                    "labels": {"severity": "warning"},
                    "annotations": {
                        "summary": "{{ $labels.route }}: {{ $value | humanizePercentage }} of requests "
                        "fail (5xx)",
                        "description": "More than 5 % of the requests to {{ $labels.route }} were answered "
                        "with a 5xx over 5 minutes (with at least 0.1 request/s).",
                    },
                },
                {
                    "alert": "MlgateHighLatencyP99",
                    "expr": (
                        "histogram_quantile(0.99, sum by (le, route) "
                        "(rate(mlgate_http_request_duration_seconds_bucket[5m]))) > 10"
                    ),
                    "for": "5m",
                    "labels": {"severity": "warning"},
                    "annotations": {
                        "summary": "{{ $labels.route }}: p99 latency {{ $value | humanizeDuration }}",
                        "description": "The 99th percentile of {{ $labels.route }}'s latency is over 10 s.",
                    },
                },
                {
                    "alert": "MlgateMemoryHigh",
                    "expr": "mlgate_process_resident_memory_bytes / mlgate_process_memory_limit_bytes > 0.9",
                    "for": "5m",
                    "labels": {"severity": "critical"},
                    "annotations": {
                        "summary": "{{ $labels.instance }} uses {{ $value | humanizePercentage }} of its "
                        "memory limit",
                        "description": "A server process's resident memory is over 90 % of its limit "
                        "(alerts.memory_limit_bytes, else its cgroup's, else the machine's RAM).",
                    },
                },
                {
                    "alert": "MlgateQuotaNearlyUsed",
                    "expr": "max by (owner, plan) (mlgate_quota_used_ratio) > 0.8",
                    "labels": {"severity": "info"},
                    "annotations": {
                        "summary": "{{ $labels.owner }} used {{ $value | humanizePercentage }} of the "
                        "{{ $labels.plan }} plan's quota",
                        "description": "A budget has used more than 80 % of its quota this period.",
                    },
                },
                {
                    "alert": "MlgateDriftPsiHigh",
                    "expr": "max by (model, version, feature) (mlgate_drift_psi) > 0.25",
                    "labels": {"severity": "warning"},
                    "annotations": {
                        "summary": "{{ $labels.model }} v{{ $labels.version }}: feature "
                        "{{ $labels.feature }} drifted (PSI {{ $value }})",
                        "description": "The population stability index of a feature against the version's "
                        "baseline is over 0.25 (a significant shift).",
                    },
                },
                {
                    "alert": "MlgateCanaryRolledBack",
                    "expr": "max by (model, alias, version) (mlgate_canary_rolled_back) > 0",
                    "labels": {"severity": "warning"},
                    "annotations": {
                        "summary": "{{ $labels.model }} v{{ $labels.version }}: canary on alias "
                        "{{ $labels.alias }} rolled back",
                        "description": "The rollout guard took the canary's weight to 0: its error rate or "
                        "p95 latency exceeded the stable version's by more than the alias's margin "
                        "(the reason is in mlgate models history).",
                    },
                },
                {
                    "alert": "MlgateCaptureDropping",
                    "expr": "increase(mlgate_capture_dropped_total[5m]) > 0",
                    "labels": {"severity": "warning"},
                    "annotations": {
                        "summary": "{{ $labels.model }}: captured records dropped ({{ $labels.reason }})",
                        "description": "Data capture dropped {{ $value }} records in 5 minutes.",
                    },
                },
            ],
        }
    ]
}


class RuleError(ValueError):
    """A rule file or rule that cannot be loaded (the message names it)."""


# --------------------------------------------------------------------------- templates

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_TEMPLATE_BODY = re.compile(
    r"\s*(?:\$labels\.(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)|\.Labels\.(?P<label2>[a-zA-Z_][a-zA-Z0-9_]*)"
    r"|(?P<value>\$value|\.Value))"
    r"\s*(?:\|\s*(?P<func>humanize|humanizePercentage|humanizeDuration)\s*)?"
)


def check_template(text: str, where: str) -> None:
    """Refuse template actions outside ``{{ $labels.x }}``/``{{ $value }}`` (+ humanize pipes)."""
    for m in _TEMPLATE.finditer(text):
        if _TEMPLATE_BODY.fullmatch(m.group(1)) is None:
            raise RuleError(
                f"{where}: unsupported template {m.group(0)!r} "
                "(supported: {{ $labels.name }}, {{ $value }}, | humanize, | humanizePercentage, "
                "| humanizeDuration)"
            )


def go_float(value: float) -> str:
    """A float as Go's ``%v`` prints it (what Prometheus' ``{{ $value }}`` shows)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        mantissa, exp = text.split("e")
        sign = exp[0] if exp[0] in "+-" else "+"
        digits = exp.lstrip("+-").rjust(2, "0")
        text = f"{mantissa}e{sign}{digits}"
    return text


def _g4(value: float) -> str:
    return f"{value:.4g}"


def humanize(value: float) -> str:
    if value == 0 or math.isnan(value) or math.isinf(value):
        return _g4(value)
    prefixes = ["", "k", "M", "G", "T", "P", "E", "Z", "Y"]
    small = ["", "m", "u", "n", "p", "f", "a", "z", "y"]
    if abs(value) >= 1:
        i = 0
        while abs(value) >= 1000 and i < len(prefixes) - 1:
            value /= 1000
            i += 1
        return f"{_g4(value)}{prefixes[i]}"
    i = 0
    while abs(value) < 1 and i < len(small) - 1:
        value *= 1000
        i += 1
    return f"{_g4(value)}{small[i]}"


def humanize_duration(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return _g4(value)
    if value == 0:
        return "0s"
    sign = "-" if value < 0 else ""
    v = abs(value)
    if v < 1:
        for unit, scale in (("ms", 1e3), ("us", 1e6), ("ns", 1e9)):
            if v * scale >= 1 or unit == "ns":
                return f"{sign}{_g4(v * scale)}{unit}"
    seconds = int(v)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, _ = divmod(rest, 60)
    fraction = v - days * 86400 - hours * 3600 - minutes * 60
    if days:
        return f"{sign}{days}d {hours}h {minutes}m {fraction:.0f}s"
    if hours:
        return f"{sign}{hours}h {minutes}m {fraction:.0f}s"
    if minutes:
        return f"{sign}{minutes}m {fraction:.0f}s"
    return f"{sign}{_g4(fraction)}s"


def render_template(text: str, labels: dict[str, str], value: float) -> str:
    """Prometheus' annotation templating for the supported actions."""

    def action(m: re.Match[str]) -> str:
        body = _TEMPLATE_BODY.fullmatch(m.group(1))
        if body is None:
            return m.group(0)
        label = body.group("label") or body.group("label2")
        if label is not None:
            return labels.get(label, "")
        func = body.group("func")
        if func == "humanize":
            return humanize(value)
        if func == "humanizePercentage":
            return f"{_g4(value * 100)}%"
        if func == "humanizeDuration":
            return humanize_duration(value)
        return go_float(value)

    return _TEMPLATE.sub(action, text)


# --------------------------------------------------------------------------- rules

_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


@dataclass(frozen=True)
class Rule:
    group: str
    name: str
    expr: str
    parsed: promql.Expr
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    source: str = "default"

    def document(self) -> dict[str, Any]:
        """The rule as Prometheus' YAML shape."""
        doc: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.for_s:
            doc["for"] = promql.format_duration(self.for_s)
        if self.keep_firing_for_s:
            doc["keep_firing_for"] = promql.format_duration(self.keep_firing_for_s)
        if self.labels:
            doc["labels"] = dict(self.labels)
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return doc


def _duration(value: Any, where: str) -> float:
    if value is None:
        return 0.0
    if not isinstance(value, str):
        raise RuleError(f"{where}: a duration is a string like 5m")
    try:
        return promql.parse_duration(value)
    except promql.PromQLError as exc:
        raise RuleError(f"{where}: {exc}") from None


def _str_map(value: Any, where: str, *, labels: bool) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RuleError(f"{where} must be a mapping")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not _NAME.fullmatch(k) or (labels and k.startswith("__")):
            raise RuleError(f"{where}: invalid name {k!r}")
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise RuleError(f"{where}.{k} must be a string")
        out[k] = str(v)
        check_template(out[k], f"{where}.{k}")
    return out


def parse_rules(document: Any, *, source: str) -> list[Rule]:
    """Rules from a Prometheus rule document (``{"groups": [...]}``)."""
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise RuleError(f"{source}: a rule file is a mapping with a 'groups' list")
    rules: list[Rule] = []
    names: set[str] = set()
    for gi, group in enumerate(document["groups"]):
        if not isinstance(group, dict) or not isinstance(group.get("name"), str) or not group["name"]:
            raise RuleError(f"{source}: group #{gi + 1} needs a name")
        gname = group["name"]
        unknown = set(group) - {"name", "rules", "interval", "labels"}
        if unknown:
            raise RuleError(f"{source}: group {gname!r}: unsupported keys {sorted(unknown)}")
        if "interval" in group:
            raise RuleError(
                f"{source}: group {gname!r}: per-group intervals are unsupported (alerts.interval_s)"
            )
        group_labels = _str_map(group.get("labels"), f"{source}: group {gname!r} labels", labels=True)
        for ri, raw in enumerate(group.get("rules") or []):
            if not isinstance(raw, dict):
                raise RuleError(f"{source}: group {gname!r}: rule #{ri + 1} must be a mapping")
            if "record" in raw:
                raise RuleError(
                    f"{source}: group {gname!r}: recording rule {raw['record']!r} is unsupported "
                    "(alerting rules only)"
                )
            name = raw.get("alert")
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise RuleError(
                    f"{source}: group {gname!r}: rule #{ri + 1} needs an 'alert' name "
                    "([a-zA-Z_][a-zA-Z0-9_]*)"
                )
            where = f"{source}: alert {name!r}"
            unknown = set(raw) - _RULE_KEYS
            if unknown:
                raise RuleError(f"{where}: unsupported keys {sorted(unknown)}")
            if name in names:
                raise RuleError(f"{where}: defined twice")
            names.add(name)
            expr = raw.get("expr")
            if isinstance(expr, int | float) and not isinstance(expr, bool):
                expr = str(expr)
            if not isinstance(expr, str) or not expr.strip():
                raise RuleError(f"{where}: needs an 'expr'")
            try:
                parsed = promql.parse(expr)
            except promql.PromQLError as exc:
                raise RuleError(f"{where}: {exc}") from None
            if is_scalar(parsed):
                raise RuleError(f"{where}: the expression must be a vector, not a number")
            labels = {**group_labels, **_str_map(raw.get("labels"), f"{where} labels", labels=True)}
            rules.append(
                Rule(
                    group=gname,
                    name=name,
                    expr=expr.strip(),
                    parsed=parsed,
                    for_s=_duration(raw.get("for"), f"{where} for"),
                    keep_firing_for_s=_duration(raw.get("keep_firing_for"), f"{where} keep_firing_for"),
                    labels=labels,
                    annotations=_str_map(raw.get("annotations"), f"{where} annotations", labels=False),
                    source=source,
                )
            )
    return rules


def load_rules(settings: AlertSettings) -> list[Rule]:
    """The defaults (unless off) and the rules file; a file rule replaces a default of its name."""
    rules = parse_rules(DEFAULT_RULES, source="default") if settings.default_rules else []
    if settings.rules_file is not None:
        yaml = _yaml()
        path = Path(settings.rules_file)
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RuleError(f"cannot read the alert rules file {path}: {exc}") from None
        except yaml.YAMLError as exc:
            raise RuleError(f"{path}: not YAML: {exc}") from None
        extra = parse_rules(document, source=str(path))
        replaced = {r.name for r in extra}
        rules = [r for r in rules if r.name not in replaced] + extra
    return rules


def _yaml() -> Any:
    """PyYAML, imported when rules are read or exported (no stubs: typed as Any)."""
    import importlib

    return importlib.import_module("yaml")


def export_rules_yaml(rules: Iterable[Rule]) -> str:
    """The rules as a Prometheus rule file (``promtool check rules`` accepts it)."""
    yaml = _yaml()
    groups: dict[str, list[dict[str, Any]]] = {}
    for rule in rules:
        groups.setdefault(rule.group, []).append(rule.document())
    document = {"groups": [{"name": name, "rules": rs} for name, rs in groups.items()]}
    text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=1000)
    return text
