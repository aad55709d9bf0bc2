"""JSON responses that are always valid JSON.

Spans may carry NaN and ±Infinity attribute values (a float is a float to an
SDK); Python's ``json`` writes them as bare ``NaN``/``Infinity``, which no
browser parses, so one such value broke the trace page and the AI page. Every
response goes through this provider: non-finite floats are served as the
strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (the value stays
readable; a number field that reads as a string says it was not a number).
The common case, no such value, costs one ``json.dumps`` as before.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flask.json.provider import DefaultJSONProvider

NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (in dicts, lists and tuples, at any depth) as its string."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps_finite(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes NaN or Infinity."""
    kwargs["allow_nan"] = False
    try:
        return json.dumps(obj, **kwargs)
    except ValueError:  # "Out of range float values are not JSON compliant"
        return json.dumps(finite(obj), **kwargs)


class FiniteJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, writing non-finite floats as strings."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        return dumps_finite(obj, **kwargs)
