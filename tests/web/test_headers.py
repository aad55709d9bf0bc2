"""Security headers on every kind of response, and what the open probes say about a failure."""

from __future__ import annotations

import logging

import pytest

from tests.support.servers import free_port

PATHS = ["/", "/trace/" + "ab" * 16, "/trace/not-an-id", "/assets/api.js", "/assets/vendor/plotly.min.js",
         "/api/v1/traces", "/api/v1/traces/" + "ab" * 16, "/api/v1/traces?limit=0", "/healthz", "/metrics", "/nope"]


@pytest.mark.parametrize("path", PATHS)
def test_every_response_carries_the_security_headers(client, path):
    check_headers(client.get(path).headers)


def test_refused_and_rejected_requests_carry_them_too(make_app):
    secured = make_app(API_TOKEN="admin-secret").test_client()
    check_headers(secured.get("/api/v1/traces").headers)  # 401
    check_headers(secured.post("/v1/traces", data=b"{}", content_type="application/json",
                               headers={"Authorization": "Bearer admin-secret"}).headers)


def check_headers(headers):
    policy = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert policy["frame-ancestors"] == "'none'"
    assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'"
    assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
    for directive in ("script-src", "style-src"):
        assert "'unsafe-inline'" not in policy[directive] and "'unsafe-eval'" not in policy[directive]
        assert "*" not in policy[directive].split() and "data:" not in policy[directive]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"


def test_readyz_names_the_failure_without_the_drivers_message(make_app, caplog):
    port = free_port()
    probe = make_app(REDIS_URL=f"redis://127.0.0.1:{port}/0", API_TOKEN="admin-secret").test_client()
    with caplog.at_level(logging.WARNING, logger="contrail.web"):
        response = probe.get("/readyz")
    assert response.status_code == 503
    check = response.get_json()["checks"]["redis"]
    assert check.startswith("unavailable (ConnectionError") and str(port) not in check
    assert any(str(port) in record.getMessage() for record in caplog.records)  # the operator still finds it
