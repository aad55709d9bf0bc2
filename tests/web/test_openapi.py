"""Responses conform to the OpenAPI document; a hypothesis fuzz over the parameters finds no 500."""

from __future__ import annotations

import re
import urllib.parse

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from web.openapi import spec

SPEC = spec()


def route_of(path: str) -> str:
    """The spec path template matching a concrete path (a literal path before a template: /traces/tail)."""
    if path in SPEC["paths"]:
        return path
    for template in SPEC["paths"]:
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and not (template.endswith("{trace_id}") and path.endswith("/compare")):
            return template
    raise AssertionError(f"{path} is not described by the OpenAPI document")


def check_conforms(path: str, response) -> None:
    template = route_of(urllib.parse.urlsplit(path).path)
    responses = SPEC["paths"][template]["get"]["responses"]
    status = str(response.status_code)
    assert status in responses, f"{path}: status {status} not in the spec ({response.get_data(as_text=True)[:200]})"
    content = responses[status]["content"]
    if response.mimetype == "application/json":
        schema = content["application/json"]["schema"]
        jsonschema.validate(response.get_json(), {**schema, "components": SPEC["components"]},
                            cls=jsonschema.Draft202012Validator)
    else:
        assert response.mimetype in content


def test_the_document_is_valid_and_served(client):
    body = client.get("/api/v1/openapi.json").get_json()
    assert body["openapi"].startswith("3.1") and body == SPEC
    for name, schema in SPEC["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
    for rule in client.application.url_map.iter_rules():
        if rule.endpoint.split(".")[0] in ("traces", "services", "dependencies", "stats", "health", "otlp", "zipkin",
                                             "ai", "metrics", "heatmap", "tail", "report"):
            template = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            assert template in SPEC["paths"], f"route {rule.rule} is missing from the OpenAPI document"


def test_every_route_conforms(client, dataset):
    t = dataset.ids
    paths = [
        "/api/v1/traces", "/api/v1/traces?service=gateway&tag=user.id=u1&limit=1",
        f"/api/v1/traces/{t['ask_slow']}", f"/api/v1/traces/{t['orphan']}",
        f"/api/v1/traces/{t['ask_slow']}/timeline", f"/api/v1/traces/{t['ask_slow']}/backlinks",
        f"/api/v1/traces/{t['ask_slow']}/export?format=text", f"/api/v1/traces/{t['ask_slow']}/export?format=otlp",
        f"/api/v1/traces/{t['ask_slow']}/export?format=mermaid&diagram=flowchart",
        f"/api/v1/traces/compare?a={t['ask_slow']}&b={t['ask_fast']}",
        "/api/v1/services", "/api/v1/services/gateway/operations", "/api/v1/services/none/operations",
        "/api/v1/dependencies?lookback=1h", "/api/v1/stats?lookback=1h", "/api/v1/status",
        "/api/v1/tracers", "/api/v1/ai/traces?lookback=7d", "/api/v1/ai/usage?group_by=agent",
        "/api/v1/ai/bottlenecks", "/api/v1/ai/usage?step=30s", "/api/v1/ai/bottlenecks?recent=10s",
        "/api/v1/metrics", "/api/v1/metrics/llm_requests_total?lookback=1h&step=5m&model=gpt",
        "/api/v1/metrics/x?step=7s",
        "/healthz", "/readyz", "/metrics",
        "/api/v1/stats/heatmap?lookback=7d", "/api/v1/stats/heatmap?scope=span&service=retrieval&step=1m",
        f"/api/v1/stats/heatmap/traces?start={dataset.base_ns}&end={dataset.base_ns + 10**10}",
        "/api/v1/traces/tail?lookback=1h", "/api/v1/traces/tail?cursor=x", "/api/v1/stats/heatmap?step=1s",
        "/api/v1/report?lookback=1h", "/api/v1/report?lookback=1s",
        "/api/v1/traces?limit=0", "/api/v1/traces/nope", f"/api/v1/traces/{'1' * 32}",
    ]
    for path in paths:
        check_conforms(path, client.get(path))


TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
VALUES = st.one_of(
    TEXT,
    st.integers(min_value=-10**25, max_value=10**25).map(str),
    st.sampled_from(["250ms", "1.5s", "15m", "7d", "-1s", "1e9", "nan", "inf", "2026-01-01T00:00:00Z",
                     "2026-01-01", "9999-12-31T23:59:59Z", "0", "1000", "start_desc", "duration_asc", "error",
                     "ok", "tokens>5", "user.id=u1", "k<x", "==", "json", "text", "mermaid", "otlp", "flowchart",
                     "\x00"]),
)
PARAMS = {
    "/api/v1/traces": ["service", "operation", "tag", "status", "min_duration", "max_duration", "services",
                       "start", "end", "lookback", "sort", "limit", "cursor"],
    "/api/v1/stats": ["service", "operation", "scope", "step", "start", "end", "lookback"],
    "/api/v1/dependencies": ["start", "end", "lookback"],
    "/api/v1/traces/compare": ["a", "b"],
    "/api/v1/traces/{trace_id}/export": ["format", "budget", "budget_unit", "diagram"],
    "/api/v1/ai/traces": ["user_id", "session_id", "agent", "limit", "start", "end", "lookback"],
    "/api/v1/ai/usage": ["group_by", "step", "start", "end", "lookback"],
    "/api/v1/ai/bottlenecks": ["recent", "baseline", "limit", "at"],
    "/api/v1/metrics": ["start", "end", "lookback"],
    "/api/v1/stats/heatmap": ["scope", "service", "operation", "step", "start", "end", "lookback"],
    "/api/v1/stats/heatmap/traces": ["start", "end", "min_duration", "max_duration", "service", "status", "sort",
                                     "limit", "cursor"],
    "/api/v1/traces/tail": ["service", "status", "min_duration", "tag", "lookback", "window", "limit", "cursor"],
    "/api/v1/metrics/llm_requests_total": ["service", "step", "start", "end", "lookback", "model", "model"],
}


@pytest.fixture(params=["sqlite"])  # the fuzz is about parsing, one backend is enough
def fuzz_client(request, tmp_path, redis_url):
    from tests.web.seed import standard_dataset, store
    from web import create_app

    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    data = standard_dataset()
    store(url, data.all_spans)
    app = create_app({"DATABASE_URL": url, "REDIS_URL": redis_url, "TESTING": True})
    yield app.test_client(), data
    app.extensions["contrail.resources"].close()


def test_fuzzed_parameters_never_500_and_always_conform(fuzz_client):
    client, data = fuzz_client

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(route=st.sampled_from(sorted(PARAMS)), picks=st.data(),
           trace_id=st.one_of(st.just(data.ids["ask_slow"]), TEXT.filter(lambda s: "/" not in s and s not in (
               "", ".", ".."))))
    def run(route, picks, trace_id):
        names = picks.draw(st.lists(st.sampled_from(PARAMS[route]), max_size=5))
        query = [(name, picks.draw(VALUES)) for name in names]
        path = route.replace("{trace_id}", urllib.parse.quote(trace_id, safe=""))
        url = path + ("?" + urllib.parse.urlencode(query) if query else "")
        response = client.get(url)
        assert response.status_code < 500, (url, response.get_data(as_text=True)[:300])
        check_conforms(url, response)

    run()
