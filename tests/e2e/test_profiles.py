"""Profiles end to end: a traced process profiles a request, a real collector stores the profile with its
trace, the API shows the flame graph and names the function that burned the time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.servers import wait_until
from tests.web.test_openapi import check_conforms

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
HOT = "hash_passwords (e2e/profile_app.py:"


def run_app(env: dict) -> dict:
    result = subprocess.run([sys.executable, str(HERE / "profile_app.py")], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_profiled_spans_flame_graph_names_the_function_that_burned_its_time(stack_env, collector):
    env = {**stack_env, "CONTRAIL_PROFILE_SLOW_THRESHOLD": "100ms"}
    ran = run_app(env)
    assert ran["info"]["profiles_exported"] == 3 and ran["info"]["profiles_dropped"] == 0

    from web.settings import WebSettings
    from web import create_app

    client = create_app(settings=WebSettings.load(env=stack_env)).test_client()
    trace_id, span_id = ran["profiled"]["trace_id"], ran["profiled"]["span_id"]

    def stored():
        return client.get(f"/api/v1/traces/{trace_id}/profiles").get_json()["profiles"] or None

    try:
        profiles = wait_until(stored, timeout=60, message="the profile")
    except AssertionError:
        collector.terminate()
        raise AssertionError(collector.communicate(timeout=20)[0][-3000:]) from None
    by_mode = {p["mode"]: p for p in profiles}
    explicit = by_mode["explicit"]
    assert (explicit["span_id"], explicit["name"], explicit["operation"]) == (span_id, "login", "POST /login")
    top = explicit["functions"][0]
    assert top["function"].startswith(HOT), explicit["functions"][:3]
    assert top["self_pct"] > 50
    hot_stacks = [s for s in explicit["stacks"] if s["stack"].split(";")[-1].startswith(HOT)]
    assert sum(s["samples"] for s in hot_stacks) > explicit["samples"] / 2
    assert all(s["stack"].split(";")[1].startswith("handle_login") for s in hot_stacks), hot_stacks[:2]

    slow_trace = ran["slow"]["trace_id"]
    slow = wait_until(lambda: client.get(f"/api/v1/traces/{slow_trace}/profiles").get_json()["profiles"] or None,
                      timeout=60, message="the slow span's profile")
    (slow_profile,) = slow
    assert (slow_profile["mode"], slow_profile["span_id"]) == ("slow", ran["slow"]["span_id"])
    assert slow_profile["functions"][0]["function"].startswith(HOT)

    merged = client.get("/api/v1/profiles?operation=POST%20/login&lookback=1h").get_json()
    assert merged["profiles"] == 2 and trace_id in merged["traces"]
    assert merged["functions"][0]["function"].startswith(HOT)
    assert sum(s["samples"] for s in merged["stacks"]) + merged["dropped"] == merged["samples"]

    report_shows_the_hot_function(stack_env["CONTRAIL_DATABASE_URL"])

    for path in (f"/api/v1/traces/{trace_id}/profiles", f"/api/v1/traces/{trace_id}/profiles?span_id={span_id}",
                 "/api/v1/profiles?operation=POST%20/login", "/api/v1/profiles?lookback=nonsense",
                 "/api/v1/traces/xyz/profiles"):
        check_conforms(path, client.get(path))


def report_shows_the_hot_function(database_url: str) -> None:
    """``contrail profile report`` merges the same profiles: table, JSON and folded stacks."""
    from click.testing import CliRunner

    from contrail_cli.main import cli

    runner = CliRunner()
    base = ["profile", "report", "--last", "1h", "--operation", "POST /login", "--database-url", database_url]
    text = runner.invoke(cli, base, catch_exceptions=False)
    assert text.exit_code == 0, text.output
    assert text.output.startswith("2 profiles, ")
    rows = [line for line in text.output.splitlines() if "(e2e/profile_app.py:" in line]
    assert rows[0].split()[0] == "hash_passwords", text.output
    merged = json.loads(runner.invoke(cli, [*base, "--json"], catch_exceptions=False).output)
    assert merged["profiles"] == 2 and merged["functions"][0]["function"].startswith(HOT)
    folded = runner.invoke(cli, [*base, "--folded"], catch_exceptions=False).output.splitlines()
    assert [line.rsplit(" ", 1)[0] for line in folded] == [s["stack"] for s in merged["stacks"]]
    assert sum(int(line.rsplit(" ", 1)[1]) for line in folded) == sum(s["samples"] for s in merged["stacks"])
    nothing = runner.invoke(cli, ["profile", "report", "--operation", "GET /nothing", "--database-url", database_url])
    assert nothing.exit_code == 1 and "no profiles of operation 'GET /nothing'" in nothing.output
