"""Stored application metrics on /metrics in Prometheus text format (CONTRAIL_PROMETHEUS_APP_METRICS)."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector_worker import metrics_store
from collector_worker.storage import open_engine
from web.settings import WebSettings


def point(name, kind, value, time_ns, **attributes):
    return {"name": name, "kind": kind, "unit": "s" if kind == "histogram" else "", "description": f"{name} help",
            "service": "shop", "resource": {}, "attributes": attributes, "time_ns": time_ns, "value": value,
            "exemplars": []}


@pytest.fixture
def stored(tmp_path):
    url = f"sqlite:///{tmp_path / 'contrail.db'}"
    engine = open_engine(url)
    last_minute_ns = (time.time_ns() // 60_000_000_000 - 1) * 60_000_000_000 + 1
    histogram = {"count": 2, "sum": 3.0, "min": 1.0, "max": 2.0, "scale": 0, "zero": 0, "pos": [0, [1, 1]],
                 "neg": [0, []]}
    metrics_store.store_entry(engine, "1-0", [
        point("llm.requests_total", "counter", 120.0, last_minute_ns, model="gpt-4o"),
        point("active_sessions", "gauge", 7.0, last_minute_ns, region="eu"),
        point("llm_request_duration", "histogram", histogram, last_minute_ns),
    ])
    engine.dispose()
    return url


def scrape(url, redis_url, enabled):
    from web import create_app

    settings = WebSettings.load(env={}, database_url=url, redis_url=redis_url, prometheus_app_metrics=enabled)
    app = create_app(settings=settings)
    try:
        response = app.test_client().get("/metrics")
        assert response.status_code == 200
        return {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    finally:
        app.extensions["contrail.resources"].close()


def test_stored_metrics_are_exposed_and_parse(stored, redis_url):
    families = scrape(stored, redis_url, enabled=True)
    (rate,) = families["contrail_app_llm_requests_total_rate"].samples
    assert rate.labels == {"service": "shop", "model": "gpt-4o"} and rate.value == pytest.approx(2.0)
    (gauge,) = families["contrail_app_active_sessions"].samples
    assert gauge.labels == {"service": "shop", "region": "eu"} and gauge.value == 7.0
    quantiles = {s.labels["quantile"]: s.value for s in families["contrail_app_llm_request_duration"].samples}
    assert set(quantiles) == {"0.5", "0.95", "0.99"} and 1.0 <= quantiles["0.5"] <= 2.0
    assert families["contrail_app_llm_request_duration_count"].samples[0].value == 2
    assert families["contrail_app_series_omitted"].samples[0].value == 0


def test_stored_metrics_are_not_exposed_by_default(stored, redis_url):
    assert not [name for name in scrape(stored, redis_url, enabled=False) if name.startswith("contrail_app_")]
