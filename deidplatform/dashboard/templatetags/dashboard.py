"""Formatting for the dashboard pages."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import template

register = template.Library()


@register.filter
def duration(value: timedelta | float | None) -> str:
    """A timedelta or seconds as "2 h 05 min", "4 min 10 s" or "12.3 s"; "–" for none."""
    if value is None or value == "":
        return "–"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24} h"


@register.filter
def num(value: Any, digits: int = 3) -> str:
    """A float to ``digits`` decimals; "–" for none or not a number."""
    if value is None or isinstance(value, bool):
        return "–" if value is None else str(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if f != f:  # NaN
        return "–"
    return f"{f:.{int(digits)}f}"


@register.filter
def pct(value: Any) -> str:
    if value is None:
        return "–"
    try:
        return f"{100 * float(value):.0f} %"
    except (TypeError, ValueError):
        return "–"


@register.filter
def get(mapping: Any, key: Any) -> Any:
    """``mapping[key]`` in a template (None when absent)."""
    try:
        return mapping.get(key)
    except AttributeError:
        return None
