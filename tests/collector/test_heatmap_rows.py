"""Heat-map rows: exact integer bounds that agree with the histogram bins, and the automatic step."""

from __future__ import annotations

import random

import pytest

from collector_worker import heatmap, stats


def row_of(duration_ns: int) -> int:
    """The row the database puts a duration in: bins 1..20 in row 0 (with bin 0), 21..40 in row 1, ..."""
    b = stats.bin_for(duration_ns)
    return 0 if b < 1 else (b - 1) // heatmap.ROW_BINS


def test_row_bounds_hold_exactly_the_durations_of_their_bins():
    rng = random.Random(5)
    durations = [0, 1, 2, 3, 999, 1000, 1001, 10**6, 10**9, 2**62] + [int(10 ** rng.uniform(0, 12)) for _ in range(3000)]
    for d in durations:
        r = row_of(d)
        assert heatmap.row_min_ns(r) <= d <= heatmap.row_max_ns(r), (d, r)
    for r in range(0, 110):
        low, high = heatmap.row_min_ns(r), heatmap.row_max_ns(r)
        assert row_of(low) == r and row_of(high) == r
        assert row_of(high + 1) == r + 1 and (r == 0 or row_of(low - 1) == r - 1)
        assert heatmap.row_min_ns(r + 1) == high + 1  # contiguous: nothing falls between rows


@pytest.mark.parametrize("window_s, step_s", [
    (900, 60), (3600, 60), (6 * 3600, 300), (12 * 3600, 3600), (24 * 3600, 3600), (86400.4, 3600),
    (7 * 86400, 7200), (30 * 86400, 43200), (365 * 86400, 7 * 86400), (10 * 365 * 86400, 86400 * 39),
])
def test_automatic_step(window_s, step_s):
    assert heatmap.auto_step(window_s) == step_s
    assert window_s / step_s <= heatmap.AUTO_COLUMNS + 0.01
