"""JSON export: the trace exactly as the API returns it, for archiving or sharing."""

from __future__ import annotations

import json


def render(trace: dict) -> str:
    return json.dumps(trace, ensure_ascii=False, indent=2, default=str) + "\n"
