"""The stored application metrics on /metrics, for an existing Prometheus to scrape (off by default).

With ``CONTRAIL_PROMETHEUS_APP_METRICS=true`` every scrape reads the last
complete minute of every series (``collector_worker.metrics_store.last_minute``)
and exposes it as gauges named ``contrail_app_<metric>``: counters as their
per-second rate over that minute (``_rate``), gauges as their last value,
histograms as ``_count``, ``_sum`` and p50/p95/p99 (label ``quantile``). The
series' service and attributes become labels. At most
``MAX_SERIES`` series are read per scrape; ``contrail_app_series_omitted`` is 1
when some were left out.
"""

from __future__ import annotations

import re
import time
from typing import Any, Iterator

from flask import Flask
from prometheus_client.core import GaugeMetricFamily

MAX_SERIES = 10_000
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def _name(text: str) -> str:
    name = _INVALID.sub("_", text)
    return name if name[:1].isalpha() or name[:1] == "_" else "_" + name


class AppMetricsCollector:
    """A prometheus_client collector over the metrics store of the app's database."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self) -> Iterator[Any]:
        omitted = GaugeMetricFamily("contrail_app_series_omitted",
                                    f"1 when more than {MAX_SERIES} application series were stored in the last "
                                    "minute and the rest were left out of this scrape.")
        try:
            from collector_worker.metrics_store import last_minute

            with self.app.extensions["contrail.resources"].engine().connect() as conn:
                series, cut = last_minute(conn, time.time_ns(), MAX_SERIES)
        except Exception:  # database unreachable: the rest of /metrics still answers
            return
        families: dict[str, GaugeMetricFamily] = {}
        for item in series:
            base = "contrail_app_" + _name(item["name"])
            attributes = {_name(k): str(v) for k, v in item["attributes"].items() if _name(k) not in
                          ("service", "quantile")}
            keys = ["service", *sorted(attributes)]
            values = [item["service"], *(attributes[k] for k in sorted(attributes))]
            point, kind = item["point"], item["kind"]
            if kind == "counter":
                samples = [("_rate", {}, point["rate"])]
            elif kind == "gauge":
                samples = [("", {}, point["last"])]
            else:
                samples = [("_count", {}, point["count"]), ("_sum", {}, point["sum"])]
                samples += [("", {"quantile": q}, point[label]) for label, q in (("p50", "0.5"), ("p95", "0.95"),
                                                                                ("p99", "0.99"))]
            for suffix, extra, value in samples:
                if value is None:
                    continue
                labels = keys + sorted(extra)
                family_key = base + suffix + "|" + ",".join(labels)
                family = families.get(family_key)
                if family is None:
                    if any(f.name == base + suffix for f in families.values()):
                        continue  # the same name with other label names: Prometheus would refuse the scrape
                    family = families[family_key] = GaugeMetricFamily(
                        base + suffix, (item["description"] or f"Application metric {item['name']}") +
                        f" ({kind}{', ' + item['unit'] if item['unit'] else ''}; last complete minute)", labels=labels)
                family.add_metric(values + [extra[k] for k in sorted(extra)], float(value))
        yield from families.values()
        omitted.add_metric([], 1.0 if cut else 0.0)
        yield omitted
