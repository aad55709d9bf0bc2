"""`contrail report` and GET /api/v1/report: one self-contained HTML file of a period."""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser

import pytest

from tests.web.seed import new_trace_id, span, standard_dataset, store


class Page(HTMLParser):
    """Tags, their attributes and the text of a report, for checking it without a browser."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def seed_day(database_url: str) -> tuple[dict, list[str]]:
    """The standard five traces 20 minutes ago, ten slow-and-failing invoice traces, and one LLM call."""
    data = standard_dataset(time.time_ns() - 1200 * 10**9)
    spans = list(data.all_spans)
    invoices = []
    for i in range(10):
        trace_id = new_trace_id()
        invoices.append(trace_id)
        spans.append(span(trace_id, "invoice", "billing", start_ns=time.time_ns() - (600 - i) * 10**9,
                          duration_ms=2000 + 100 * i, kind="consumer", status="error" if i % 2 else "ok"))
    spans.append(span(new_trace_id(), "chat", "assistant", start_ns=time.time_ns() - 300 * 10**9, duration_ms=900,
                      kind="client", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                                 "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 500}))
    store(database_url, spans)
    return data.ids, invoices


def test_report_command_writes_a_self_contained_page(run_cli, sqlite_url, tmp_path):
    ids, invoices = seed_day(sqlite_url)
    out = tmp_path / "report.html"
    result = run_cli("report", "--last", "24h", "-o", str(out), "--database-url", sqlite_url)
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    page = Page(html)
    tags = [tag for tag, _ in page.tags]
    # self-contained: no script, no stylesheet or image to fetch, no URL anywhere in an attribute
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(tags)
    assert not any(re.match(r"^(https?:)?//", value or "") for _, attrs in page.tags for value in attrs.values())
    charts = {attrs.get("data-chart") for tag, attrs in page.tags if tag == "svg"}
    assert {"throughput", "latency", "heatmap", "dependencies", "cost", "tokens"} <= charts
    text = " ".join(page.text)
    assert "16" in re.findall(r"Traces\s+(\d+)", text)  # 5 + 10 + 1 traces
    # the slowest operation is billing's invoice, with its slowest traces as examples
    slowest = html[html.index('id="slowest"'):html.index('id="failing"')]
    first_row = slowest[slowest.index("<tbody>"):]
    assert first_row.index("invoice") < first_row.index("POST /ask")
    assert invoices[9] in first_row[:first_row.index("</tr>")] and invoices[8] in first_row[:first_row.index("</tr>")]
    failing = html[html.index('id="failing"'):html.index('id="dependencies"')]
    assert any(invoices[i] in failing for i in (1, 3, 5, 7, 9)) and invoices[0] not in failing
    dependencies = html[html.index('id="dependencies"'):html.index('id="bottlenecks"')]
    assert "gateway" in dependencies and "retrieval" in dependencies
    ai = html[html.index('id="ai"'):]
    assert "gpt-4o" in ai and "1,000" in ai and "500" in ai and "$0.0075" in ai  # 1k in x 0.0025 + 0.5k out x 0.01


def test_report_command_refuses_a_bad_period(run_cli, sqlite_url, tmp_path):
    store(sqlite_url, standard_dataset().all_spans)
    for value in ("soon", "10s", "400d"):
        result = run_cli("report", "--last", value, "-o", str(tmp_path / "r.html"), "--database-url", sqlite_url)
        assert result.exit_code == 2 and "--last" in result.output
    assert not (tmp_path / "r.html").exists()


@pytest.fixture
def web_client(sqlite_url, redis_url):
    from web import create_app

    app = create_app({"DATABASE_URL": sqlite_url, "REDIS_URL": redis_url, "TESTING": True})
    yield app.test_client()
    app.extensions["contrail.resources"].close()


def test_report_download_from_the_api(web_client, sqlite_url):
    ids, _ = seed_day(sqlite_url)
    response = web_client.get("/api/v1/report?lookback=6h")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert re.match(r'attachment; filename="contrail-report-\d{8}-\d{4}\.html"', response.headers["Content-Disposition"])
    html = response.get_data(as_text=True)
    assert f'/trace/{ids["ask_slow"]}"' in html  # example traces link back to the dashboard
    for query, parameter in (("lookback=10s", "lookback"), ("lookback=400d", "lookback"), ("start=x", "start")):
        bad = web_client.get(f"/api/v1/report?{query}")
        assert bad.status_code == 400 and bad.get_json()["error"]["parameter"] == parameter


def test_report_prices_with_the_configured_table(run_cli, sqlite_url, tmp_path, monkeypatch):
    """The price table comes from the settings (here the config file), not from a look at the environment:
    the report lists gpt-4o as unpriced against a table that has only another model, and names that table."""
    seed_day(sqlite_url)
    table = tmp_path / "prices.json"
    table.write_text('{"house-model": {"input": 0.001, "output": 0.002}}')
    monkeypatch.chdir(tmp_path)
    (tmp_path / "contrail.toml").write_text(f'[collector]\nprice_table = "{table}"\n')
    out = tmp_path / "report.html"
    result = run_cli("report", "--last", "24h", "-o", str(out), "--database-url", sqlite_url,
                     env={"CONTRAIL_PRICE_TABLE": None})
    assert result.exit_code == 0, result.output
    text = " ".join(Page(out.read_text(encoding="utf-8")).text)
    assert "Without a price: gpt-4o" in text and str(table) in text

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = run_cli("report", "--last", "24h", "-o", str(out), "--database-url", sqlite_url,
                     env={"CONTRAIL_PRICE_TABLE": str(broken)})
    assert result.exit_code == 1 and str(broken) in result.stderr and "invalid JSON" in result.stderr
