"""Parsing of the human units Contrail accepts everywhere: durations and sizes.

One parser serves settings, the CLI and the API so that ``250ms``, ``1.5s``
and ``7d`` mean the same thing wherever a user types them.
"""

from __future__ import annotations

import re

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zµ]*)\s*$", re.IGNORECASE)

_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_duration(text: str | float | int, default_unit: str = "s") -> float:
    """Return seconds for ``text`` such as ``250ms``, ``1.5s``, ``15m``, ``7d``.

    A bare number is read in ``default_unit``. Raises ``ValueError`` with a
    message fit for a user on anything else, including negative values.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}")
    if isinstance(text, (int, float)):
        value, unit = float(text), default_unit
    else:
        match = _DURATION_RE.match(str(text))
        if not match:
            raise ValueError(
                f"invalid duration {text!r}: use a number with a unit such as 250ms, 1.5s, 15m, 1h or 7d"
            )
        value, unit = float(match.group(1)), (match.group(2).lower() or default_unit)
    if unit not in _DURATION_UNITS:
        raise ValueError(f"invalid duration {text!r}: unknown unit {unit!r} (use ns, us, ms, s, m, h, d or w)")
    if value < 0:
        raise ValueError(f"invalid duration {text!r}: must not be negative")
    return value * _DURATION_UNITS[unit]


def parse_size(text: str | int) -> int:
    """Return bytes for ``text`` such as ``512``, ``64kb``, ``10MiB``."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"invalid size {text!r}: must not be negative")
        return text
    match = _SIZE_RE.match(str(text))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"invalid size {text!r}: use a number of bytes or a unit such as 64kb or 10mb")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def format_duration_ms(ms: float) -> str:
    """Render milliseconds for people: ``840µs``, ``12.3ms``, ``2.10s``, ``3m05s``."""
    if ms < 1:
        return f"{ms * 1000:.0f}µs"
    if ms < 1000:
        return f"{ms:.1f}ms" if ms < 100 else f"{ms:.0f}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"
