"""Request parameter parsing: every bad value becomes a 400 naming the parameter.

Bounds matter beyond politeness: PostgreSQL rejects NUL characters and
integers past 64 bits, so such values are refused here rather than failing
in the database.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime, timezone
from typing import Iterable

from flask import request

from tracer.codec import is_span_id, is_trace_id
from tracer.units import parse_duration

from .errors import bad_parameter

MAX_NS = 2**63 - 1
MAX_TEXT = 512
_DIGITS = re.compile(r"^\d+$")
_TAG = re.compile(r"^([^=<>]+)([=<>])(.*)$", re.DOTALL)


def text(name: str, value: str | None = None, *, required: bool = False, max_length: int = MAX_TEXT) -> str | None:
    """A plain string parameter: bounded length, no control characters."""
    if value is None:
        value = request.args.get(name)
    if value is None or value == "":
        if required:
            raise bad_parameter(name, f"{name} is required")
        return None
    check_text(name, value, max_length)
    return value


def check_text(name: str, value: str, max_length: int = MAX_TEXT) -> str:
    if len(value) > max_length:
        raise bad_parameter(name, f"{name} is longer than {max_length} characters")
    if any(ord(ch) < 32 for ch in value):
        raise bad_parameter(name, f"{name} must not contain control characters")
    return value


def trace_id(name: str, value: str | None) -> str:
    candidate = (value or "").strip().lower()
    if not is_trace_id(candidate):
        raise bad_parameter(name, f"{name} must be a trace id of 32 hex digits (not all zero)")
    return candidate


def span_id(name: str, value: str | None) -> str:
    candidate = (value or "").strip().lower()
    if not is_span_id(candidate):
        raise bad_parameter(name, f"{name} must be a span id of 16 hex digits (not all zero)")
    return candidate


def integer(name: str, default: int | None = None, *, minimum: int | None = None,
            maximum: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    raw = raw.strip()
    if not re.fullmatch(r"[+-]?\d{1,19}", raw):
        raise bad_parameter(name, f"{name} must be an integer")
    value = int(raw)
    if minimum is not None and value < minimum:
        raise bad_parameter(name, f"{name} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise bad_parameter(name, f"{name} must be at most {maximum}")
    return value


def choice(name: str, options: Iterable[str], default: str | None = None) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    options = tuple(options)
    if raw not in options:
        raise bad_parameter(name, f"{name} must be one of {', '.join(options)}")
    return raw


def duration_ns(name: str, default_unit: str = "ms") -> int | None:
    """A duration such as ``250ms`` or ``1.5s`` (bare numbers in ``default_unit``) in nanoseconds."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        seconds = parse_duration(raw, default_unit=default_unit)
    except ValueError as exc:
        raise bad_parameter(name, f"{name}: {exc}") from None
    value = seconds * 1e9
    if not math.isfinite(value) or value > MAX_NS:
        raise bad_parameter(name, f"{name} is too large")
    return int(value)


def timestamp_ns(name: str) -> int | None:
    """A point in time: unix nanoseconds, or ISO-8601 (``Z`` or an offset; naive means UTC)."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    raw = raw.strip()
    if _DIGITS.match(raw):
        if len(raw) > 19 or int(raw) > MAX_NS:
            raise bad_parameter(name, f"{name} is out of range")
        return int(raw)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise bad_parameter(name, f"{name} must be ISO-8601 (2026-01-31T12:00:00Z) or unix nanoseconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        seconds = moment.timestamp()
    except (OverflowError, OSError, ValueError):
        raise bad_parameter(name, f"{name} is out of range") from None
    if seconds < 0:
        raise bad_parameter(name, f"{name} must not be before 1970")
    value = int(seconds) * 1_000_000_000 + moment.microsecond * 1000
    if value > MAX_NS:
        raise bad_parameter(name, f"{name} is out of range")
    return value


def time_range(default_lookback_s: float | None = None) -> tuple[int | None, int | None]:
    """``start``/``end`` or ``lookback`` (``15m``, ``1h``, ``7d``) as a nanosecond range."""
    start, end = timestamp_ns("start"), timestamp_ns("end")
    raw = request.args.get("lookback")
    if raw:
        if start is not None:
            raise bad_parameter("lookback", "give either start or lookback, not both")
        try:
            seconds = parse_duration(raw, default_unit="s")
        except ValueError as exc:
            raise bad_parameter("lookback", f"lookback: {exc}") from None
        if seconds <= 0 or seconds > 10 * 365 * 86400:
            raise bad_parameter("lookback", "lookback must be positive and at most 10 years")
        end_ns = end if end is not None else time.time_ns()
        start = max(0, end_ns - int(seconds * 1e9))
        end = end_ns if end is not None else None
    elif start is None and end is None and default_lookback_s is not None:
        now = time.time_ns()
        start, end = now - int(default_lookback_s * 1e9), now
    if start is not None and end is not None and end < start:
        raise bad_parameter("end", "end must not be before start")
    return start, end


def tags(name: str = "tag") -> list[tuple[str, str, str]]:
    """Repeatable ``key=value``, ``key>number``, ``key<number`` filters."""
    out = []
    for raw in request.args.getlist(name):
        check_text(name, raw, 1024)
        match = _TAG.match(raw)
        if not match or not match.group(1).strip():
            raise bad_parameter(name, f"{name} must look like key=value, key>number or key<number (got {raw!r})")
        key, op, value = match.group(1).strip(), match.group(2), match.group(3)
        if len(key) > 255 or len(value) > 255:
            raise bad_parameter(name, f"{name}: key and value are limited to 255 characters")
        if op in "<>":
            try:
                number = float(value)
            except ValueError:
                raise bad_parameter(name, f"{name} {key}{op}{value}: a comparison needs a number") from None
            if not math.isfinite(number):
                raise bad_parameter(name, f"{name} {key}{op}{value}: the number must be finite")
        out.append((key, op, value))
    return out


def text_list(name: str) -> list[str]:
    """Repeatable and/or comma-separated names."""
    out: list[str] = []
    for raw in request.args.getlist(name):
        for part in raw.split(","):
            part = part.strip()
            if part:
                out.append(check_text(name, part))
    if len(out) > 20:
        raise bad_parameter(name, f"{name} accepts at most 20 names")
    return out


def closed_range(start: int | None, end: int | None, lookback_s: float) -> tuple[int, int]:
    """Fill an open end with now and an open start with ``end - lookback``."""
    end = time.time_ns() if end is None else end
    start = max(0, end - int(lookback_s * 1e9)) if start is None else start
    if end < start:
        raise bad_parameter("end", "end must not be before start")
    return start, end


def series_window(default_lookback_s: float, max_points: int) -> tuple[int, int, int]:
    """``start``/``end``/``lookback`` and ``step`` of a time-series query: (start_ns, end_ns, step_s).

    Series are stored per minute, so the step is a whole number of minutes, and
    at most ``max_points`` steps fit in the window.
    """
    start_ns, end_ns = closed_range(*time_range(default_lookback_s=default_lookback_s), default_lookback_s)
    step_ns = duration_ns("step", default_unit="s")
    step_s = 60 if step_ns is None else int(step_ns // 1_000_000_000)
    if step_s < 60 or step_s % 60:
        raise bad_parameter("step", "step must be a whole number of minutes (60s, 5m, 1h)")
    if (end_ns - start_ns) / 1e9 / step_s > max_points:
        raise bad_parameter("step", f"step is too small for this range (at most {max_points} points)")
    return start_ns, end_ns, step_s
