"""`contrail traces list|show`, `services`, `stats`, `deps` on traces stored by the real collector."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import db_args

UNREACHABLE_PG = "postgresql+psycopg://contrail@127.0.0.1:1/contrail"


def test_traces_list_table_and_json(run_cli, stored_trace, collector):
    result = run_cli("traces", "list", *db_args(collector))
    assert result.exit_code == 0, result.stderr
    assert stored_trace in result.stdout
    assert "checkout: POST /orders" in result.stdout
    assert "1 of 1 traces" in result.stdout
    assert "\x1b[" not in result.stdout  # no colour codes when not a terminal

    data = json.loads(run_cli("traces", "list", "--json", *db_args(collector)).stdout)
    assert data["total"] == 1
    summary = data["traces"][0]
    assert summary["trace_id"] == stored_trace
    assert summary["services"] == ["checkout", "payments"]
    assert summary["error_count"] == 1


@pytest.mark.parametrize("filters, expected", [
    (["--service", "payments"], 1),
    (["--service", "nobody"], 0),
    (["--service", "payments", "--operation", "charge card"], 1),
    (["--status", "error"], 1),
    (["--status", "ok"], 0),
    (["--min-duration", "1h"], 0),
    (["--max-duration", "1h", "--lookback", "1h"], 1),
    (["--tag", "order.id=42"], 1),
    (["--tag", "order.id>100"], 0),
    (["--kind", "client"], 1),
    (["--kind", "producer"], 0),
    (["--start", "2000-01-01T00:00:00Z", "--sort", "duration_desc", "--limit", "1"], 1),
])
def test_traces_list_filters(run_cli, stored_trace, collector, filters, expected):
    result = run_cli("traces", "list", "--json", *filters, *db_args(collector))
    assert result.exit_code == 0, result.stderr
    found = [t["trace_id"] for t in json.loads(result.stdout)["traces"]]
    assert found == ([stored_trace] if expected else [])


def test_traces_list_says_once_when_nothing_matches(run_cli, stored_trace, collector):
    result = run_cli("traces", "list", "--service", "no-such-service", *db_args(collector))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "no traces match"


@pytest.mark.parametrize("args, mentions", [
    (["--min-duration", "fast"], "--min-duration"),
    (["--lookback", "-5m"], "--lookback"),
    (["--tag", "no-operator"], "--tag"),
    (["--tag", "order.id>abc"], "--tag"),
    (["--limit", "0"], "--limit"),
    (["--kind", "sideways"], "--kind"),
    (["--start", "yesterday"], "--start"),
    (["--lookback", "1h", "--start", "2026-01-01"], "--start"),
])
def test_traces_list_bad_usage_exits_2(run_cli, tmp_path, args, mentions):
    result = run_cli("traces", "list", *args, "--database-url", f"sqlite:///{tmp_path / 'none.db'}")
    assert result.exit_code == 2
    assert mentions in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_traces_show_tree_marks_critical_path_and_collects_errors(run_cli, stored_trace, collector):
    result = run_cli("traces", "show", stored_trace, *db_args(collector))
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for name in ("POST /orders", "validate cart", "call payments", "charge card"):
        assert name in out
    assert out.index("POST /orders") < out.index("call payments") < out.index("charge card")
    assert "◆ POST /orders" in out  # the root is always on the critical path
    assert "self " in out
    assert "Errors (1):" in out
    assert "payments / charge card" in out and "card declined" in out


@pytest.mark.parametrize("fmt, check", [
    ("json", lambda body, tid: json.loads(body)["trace_id"] == tid),
    ("otlp", lambda body, tid: "resourceSpans" in json.loads(body)),
    ("mermaid", lambda body, tid: body.startswith("sequenceDiagram") and "payments" in body),
    ("text", lambda body, tid: "charge card" in body and "card declined" in body),
])
def test_traces_show_formats(run_cli, stored_trace, collector, fmt, check):
    result = run_cli("traces", "show", stored_trace, "--format", fmt, *db_args(collector))
    assert result.exit_code == 0, result.stderr
    assert check(result.stdout, stored_trace), result.stdout[:500]


def test_traces_show_json_flag_equals_json_format(run_cli, stored_trace, collector):
    a = run_cli("traces", "show", stored_trace, "--json", *db_args(collector)).stdout
    b = run_cli("traces", "show", stored_trace, "--format", "json", *db_args(collector)).stdout
    assert json.loads(a) == json.loads(b)


def test_traces_show_unknown_id_exits_1_with_one_line(run_cli, stored_trace, collector):
    unknown = "0" * 31 + "1"
    result = run_cli("traces", "show", unknown, *db_args(collector))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"Error: trace {unknown} not found in {collector.database_url}"]


def test_traces_show_malformed_id_is_bad_usage(run_cli, tmp_path):
    result = run_cli("traces", "show", "not-a-trace", "--database-url", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.exit_code == 2
    assert "not a trace id" in result.stderr


def test_services_and_operations(run_cli, stored_trace, collector):
    data = json.loads(run_cli("services", "--json", *db_args(collector)).stdout)
    assert [s["name"] for s in data["services"]] == ["checkout", "payments"]
    text = run_cli("services", *db_args(collector)).stdout
    assert "checkout" in text and "payments" in text
    ops = json.loads(run_cli("services", "--service", "payments", "--json", *db_args(collector)).stdout)
    assert ops["operations"] == [{"name": "charge card", "count": 1, "error_count": 1}]
    unknown = run_cli("services", "--service", "nobody", *db_args(collector))
    assert unknown.exit_code == 1 and "no service named 'nobody'" in unknown.stderr


def test_stats_per_operation(run_cli, stored_trace, collector):
    data = json.loads(run_cli("stats", "--json", *db_args(collector)).stdout)
    rows = {(op["service"], op["operation"]): op for op in data["operations"]}
    assert rows[("payments", "charge card")]["error_count"] == 1
    assert rows[("checkout", "POST /orders")]["count"] == 1
    text = run_cli("stats", "--service", "payments", *db_args(collector)).stdout
    assert "charge card" in text and "100.0%" in text and "POST /orders" not in text
    bad = run_cli("stats", "--lookback", "soon", *db_args(collector))
    assert bad.exit_code == 2 and "--lookback" in bad.stderr
    # the series step is whole minutes, as in the API, rather than silently rounded
    assert json.loads(run_cli("stats", "--json", "--step", "5m", *db_args(collector)).stdout)["step_s"] == 300
    for step in ("30s", "90s"):
        bad = run_cli("stats", "--step", step, *db_args(collector))
        assert bad.exit_code == 2 and "whole number of minutes" in bad.stderr, bad.stderr
    bad = run_cli("stats", "--lookback", "30d", "--step", "1m", *db_args(collector))
    assert bad.exit_code == 2 and "at most 10000 points" in bad.stderr


def test_budget_is_refused_outside_the_text_format(run_cli, stored_trace, collector):
    for extra in (["--budget", "500"], ["--budget", "500", "--format", "mermaid"],
                  ["--budget", "500", "--format", "text", "--json"]):
        bad = run_cli("traces", "show", stored_trace, *extra, *db_args(collector))
        assert bad.exit_code == 2 and "only applies to --format text" in bad.stderr, extra
    ok = run_cli("traces", "show", stored_trace, "--format", "text", "--budget", "300", *db_args(collector))
    assert ok.exit_code == 0 and len(ok.stdout) <= 301 and ok.stdout.startswith(f"trace {stored_trace}")


def test_diagram_picks_the_mermaid_flowchart_and_is_refused_elsewhere(run_cli, stored_trace, collector):
    ok = run_cli("traces", "show", stored_trace, "--format", "mermaid", "--diagram", "flowchart",
                 *db_args(collector))
    assert ok.exit_code == 0, ok.stderr
    assert ok.stdout.startswith("flowchart TD") and "validate cart - checkout" in ok.stdout
    assert "charge card - payments" in ok.stdout and "error RuntimeError card declined" in ok.stdout
    bad = run_cli("traces", "show", stored_trace, "--format", "text", "--diagram", "flowchart", *db_args(collector))
    assert bad.exit_code == 2 and "only applies to --format mermaid" in bad.stderr


def test_deps_shows_the_cross_service_edge(run_cli, stored_trace, collector):
    data = json.loads(run_cli("deps", "--json", *db_args(collector)).stdout)
    edges = {(e["caller"], e["callee"]): e for e in data["dependencies"]}
    assert edges[("checkout", "payments")]["calls"] == 1
    assert edges[("checkout", "payments")]["errors"] == 1
    text = run_cli("deps", *db_args(collector)).stdout
    assert "checkout" in text and "→" in text and "payments" in text
    assert run_cli("deps", "--lookback", "1x", *db_args(collector)).exit_code == 2


@pytest.mark.parametrize("command", [["traces", "list"], ["services"], ["stats"], ["deps"],
                                     ["traces", "show", "a" * 32]])
def test_unreachable_database_exits_1_with_a_clear_message(run_cli, command):
    result = run_cli(*command, "--database-url", UNREACHABLE_PG)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot reach database postgresql+psycopg://")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["foo://", "mysql+nodriver://u@h/db", "not a url"])
def test_a_bad_database_url_is_called_invalid_not_unreachable(run_cli, url):
    result = run_cli("services", "--database-url", url)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: invalid database URL "), lines


def test_missing_sqlite_database_is_reported_not_created(run_cli, tmp_path):
    path = tmp_path / "absent.db"
    result = run_cli("traces", "list", "--database-url", f"sqlite:///{path}")
    assert result.exit_code == 1
    assert "no database at" in result.stderr
    assert not path.exists()


def test_database_url_defaults_from_settings(run_cli, stored_trace, collector):
    result = run_cli("traces", "list", "--json", env={"CONTRAIL_DATABASE_URL": collector.database_url})
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["traces"][0]["trace_id"] == stored_trace
