"""LLM prices: turn token usage into money.

Prices are per 1,000 tokens, by model, for input, output and cached input
tokens. They come from the JSON file named by the ``price_table`` setting
(``CONTRAIL_PRICE_TABLE``)::

    {"gpt-4o": {"input": 0.0025, "output": 0.01, "cached_input": 0.00125},
     "my-local-model": {"input": 0, "output": 0}}

Without a file, :data:`EXAMPLE_PRICES` is used. Those figures are EXAMPLE list
prices in USD, written down once so a fresh install shows plausible numbers;
they go stale and are not your negotiated rates — configure your own table.

A model missing from the table costs 0 and is reported as unpriced so that a
zero is never mistaken for "free".
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

# EXAMPLE list prices (USD per 1k tokens). Override with the price_table setting (CONTRAIL_PRICE_TABLE).
EXAMPLE_PRICES: dict[str, dict[str, float]] = {
    "gpt-4o": {"input": 0.0025, "output": 0.01, "cached_input": 0.00125},
    "gpt-4o-mini": {"input": 0.00015, "output": 0.0006, "cached_input": 0.000075},
    "gpt-4.1": {"input": 0.002, "output": 0.008, "cached_input": 0.0005},
    "gpt-4.1-mini": {"input": 0.0004, "output": 0.0016, "cached_input": 0.0001},
    "o3-mini": {"input": 0.0011, "output": 0.0044, "cached_input": 0.00055},
    "claude-3-5-sonnet": {"input": 0.003, "output": 0.015, "cached_input": 0.0003},
    "claude-3-5-haiku": {"input": 0.0008, "output": 0.004, "cached_input": 0.00008},
    "text-embedding-3-small": {"input": 0.00002, "output": 0.0, "cached_input": 0.00002},
    # EXAMPLE price of the demo's stand-in model (contrail_demo/model.py, ``contrail demo``), so the demo's AI page
    # shows cost out of the box. No provider sells this model; the figure is made up.
    "contrail-standin-1": {"input": 0.0002, "output": 0.0008, "cached_input": 0.0001},
}
# What to do about a model without a price; shown next to unpriced models by the API and the dashboard.
UNPRICED_HINT = ("add the model to a price table (a JSON file of model -> {\"input\", \"output\", \"cached_input\"} "
                 "prices per 1,000 tokens) and point CONTRAIL_PRICE_TABLE at it; see docs/ai.md, Price table")

_FIELDS = ("input", "output", "cached_input")


class PriceTableError(ValueError):
    """The configured price table file is missing or malformed."""


@dataclass
class PriceTable:
    """Prices per 1k tokens by model, plus the models seen without a price."""

    prices: dict[str, dict[str, float]]
    source: str = "example"
    unpriced: set[str] = field(default_factory=set)

    def lookup(self, model: str) -> dict[str, float] | None:
        """Exact model name first, then the longest table key the name starts with
        (``gpt-4o-2024-08-06`` is priced as ``gpt-4o``)."""
        if not model:
            return None
        key = model.strip().lower()
        if key in self.prices:
            return self.prices[key]
        best = None
        for name in self.prices:
            if key.startswith(name) and (best is None or len(name) > len(best)):
                best = name
        return self.prices[best] if best else None

    def cost(self, model: str, input_tokens: int = 0, output_tokens: int = 0, cached_tokens: int = 0) -> float:
        """Cost of one call. ``input_tokens`` includes cached tokens (as providers report
        it); cached tokens are charged at the cached price when one is given."""
        price = self.lookup(model)
        if price is None:
            if model:
                self.unpriced.add(model)
            return 0.0
        cached = max(0, min(int(cached_tokens or 0), int(input_tokens or 0)))
        fresh = max(0, int(input_tokens or 0) - cached)
        cached_price = price.get("cached_input", price.get("input", 0.0))
        total = (fresh * price.get("input", 0.0) + cached * cached_price
                 + max(0, int(output_tokens or 0)) * price.get("output", 0.0)) / 1000.0
        return round(total, 10)

    def is_priced(self, model: str) -> bool:
        return self.lookup(model) is not None


def parse_price_table(data: Any, source: str = "<data>") -> PriceTable:
    """Validate a decoded price table; raise PriceTableError naming the bad entry."""
    if not isinstance(data, Mapping):
        raise PriceTableError(f"{source}: price table must be a JSON object of model -> prices")
    prices: dict[str, dict[str, float]] = {}
    for model, entry in data.items():
        if not isinstance(entry, Mapping):
            raise PriceTableError(f"{source}: prices of {model!r} must be an object")
        row: dict[str, float] = {}
        for name, value in entry.items():
            if name not in _FIELDS:
                raise PriceTableError(f"{source}: unknown price field {name!r} for {model!r} (use {', '.join(_FIELDS)})")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise PriceTableError(f"{source}: price {name} of {model!r} must be a number >= 0")
            row[name] = float(value)
        prices[str(model).strip().lower()] = row
    return PriceTable(prices=prices, source=source)


def load_price_table(path: str | None) -> PriceTable:
    """The table in ``path``, or the example table when no path is configured."""
    if not path:
        return PriceTable(prices={k: dict(v) for k, v in EXAMPLE_PRICES.items()}, source="example")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise PriceTableError(f"price table {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise PriceTableError(f"price table {path}: invalid JSON ({exc})") from None
    return parse_price_table(data, source=path)


_lock = threading.Lock()
_current: PriceTable | None = None


def current_table() -> PriceTable:
    """The process-wide table: the one :func:`configure` loaded from the ``price_table`` setting, else the
    example table. Nothing here reads the environment: the settings object is the only source."""
    global _current
    with _lock:
        if _current is None:
            _current = load_price_table(None)
        return _current


def set_price_table(table: PriceTable | str | None) -> PriceTable:
    """Install a table (object, or path to load; None = example table) for this process."""
    global _current
    loaded = table if isinstance(table, PriceTable) else load_price_table(table)
    with _lock:
        _current = loaded
    return loaded


def cost(model: str, input: int = 0, output: int = 0, cached: int = 0) -> float:
    """Cost in the table's currency of one call; unknown model -> 0 (and listed in ``unpriced_models()``)."""
    return current_table().cost(model, input, output, cached)


def unpriced_models() -> list[str]:
    return sorted(current_table().unpriced)


def configure(path: str | None) -> PriceTable:
    """Use the table at ``path`` (the ``price_table`` setting) unless it is already loaded.

    Every process built from a CollectorSettings object calls this before it prices
    anything (the collector at start, the web app and ``contrail report``
    before a query), so a table given as a keyword, in the environment or in
    the config file is honoured alike.
    """
    wanted = path or "example"
    with _lock:
        if _current is not None and _current.source == wanted:
            return _current
    return set_price_table(path)
