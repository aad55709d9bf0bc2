"""What a test waiting on a collector reads of the span stream."""

from __future__ import annotations

from typing import Any


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def consumed(client: Any, stream: str, group: str, last_id: str | None = None) -> bool:
    """Whether ``group`` has been delivered ``stream`` up to ``last_id`` (any entry, when None) and has
    acknowledged all it was delivered.

    Both from one ``XINFO GROUPS`` reply: the pending count read apart from the last-delivered id passes
    when the last entry is delivered between the two reads and not yet stored and acknowledged.
    """
    for info in client.xinfo_groups(stream):
        if _text(info["name"]) == group:
            last = _text(info["last-delivered-id"])
            return info["pending"] == 0 and (last != "0-0" if last_id is None else last == last_id)
    return False
