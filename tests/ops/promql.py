"""Just enough PromQL reading for the checks of tests/ops: which metrics and labels an expression
names. Syntax itself is checked by promtool."""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
_KEYWORDS |= {"inf", "nan", "Inf", "NaN", "atan2", "start", "end"}
_SELECTOR = re.compile(r"(?<![\w.:])([a-zA-Z_:][\w:]*)\s*(\{[^{}]*\})")
_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")

# Grafana's interval variables, replaced by a valid range for promtool.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def for_promtool(expr: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords and label names excluded)."""
    text = _VARIABLE.sub("", _STRING.sub('""', expr))
    text = _RANGE.sub("", _MATCHERS.sub("", text))
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name in _KEYWORDS:
            continue
        names.add(name)
    return names


def selector_labels(expr: str) -> dict[str, set[str]]:
    """Label names each metric is matched on inside ``metric{...}``."""
    found: dict[str, set[str]] = {}
    for name, block in _SELECTOR.findall(_VARIABLE.sub("", expr)):
        labels = {label for label in _LABEL.findall(_STRING.sub('""', block))}
        found.setdefault(name, set()).update(labels)
    return found


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
}


def exposed_series(text: str) -> dict[str, set[str]]:
    """Series names one ``/metrics`` page can produce, with the label names seen on each.

    A labelled metric that has not been observed yet has no sample, only its ``# TYPE``; its
    series names follow from the type (``x_total`` for a counter, ``x_bucket`` for a histogram).
    """
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        suffixes = _SUFFIXES.get(family.type, ("",))
        for suffix in suffixes:
            series.setdefault(family.name + suffix, set())
        if family.type in ("gauge", "unknown"):
            series.setdefault(family.name, set())
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def all_names(exprs: Iterable[str]) -> set[str]:
    return set().union(*(metric_names(e) for e in exprs))
