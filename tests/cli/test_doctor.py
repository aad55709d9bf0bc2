"""`contrail doctor` against a real Redis, a real collector and SQLite: OK, WARN and FAIL paths."""

from __future__ import annotations

import json

from collector_worker.doctor import FAIL, OK, WARN, measure_clock_skew_ms


def checks_of(result) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_healthy_stack_passes(run_cli, stored_trace, collector):
    env = {"CONTRAIL_STREAM": collector.stream}
    result = run_cli("doctor", "--redis-url", collector.redis_url, "--database-url", collector.database_url, env=env)
    assert result.exit_code == 0, result.stdout + result.stderr
    for name in ("redis", "clock skew", "stream", "pending", "consumer lag", "consumers", "dead letters",
                 "tracers", "database", "schema", "storage"):
        assert f"OK    {name}" in result.stdout, name
    assert "0 failure(s)" in result.stdout

    data = checks_of(run_cli("doctor", "--json", "--redis-url", collector.redis_url,
                             "--database-url", collector.database_url, env=env))
    assert data["redis persistence"]["status"] == OK  # the test Redis runs with appendonly yes
    assert data["schema"]["detail"].startswith("revision ")
    storage = data["storage"]["detail"].splitlines()
    assert data["storage"]["status"] == OK and storage[0].startswith("1 traces, ")
    [traces_line] = [line for line in storage if line.startswith("traces: ")]
    assert traces_line.startswith("traces: 1 rows") and traces_line.count("Z") == 2  # oldest .. newest
    assert any(line.startswith("trace_blocks: 1 rows") for line in storage)
    assert not any(line.startswith("llm_usage:") for line in storage)  # empty tables are left out


def test_unreachable_redis_fails_with_what_to_do(run_cli, collector):
    result = run_cli("doctor", "--redis-url", "redis://127.0.0.1:1/0", "--database-url", collector.database_url)
    assert result.exit_code == 1
    assert "FAIL  redis" in result.stdout
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in result.stdout
    assert "→ start Redis" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_unreachable_database_fails(run_cli, redis_url):
    result = run_cli("doctor", "--json", "--redis-url", redis_url,
                     "--database-url", "postgresql+psycopg://contrail@127.0.0.1:1/contrail")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert checks_of(result)["database"]["status"] == FAIL


def test_missing_sqlite_file_fails_without_creating_it(run_cli, redis_url, tmp_path):
    path = tmp_path / "nothing-here.db"
    result = run_cli("doctor", "--json", "--redis-url", redis_url, "--database-url", f"sqlite:///{path}")
    assert result.exit_code == 1
    assert "no database file" in checks_of(result)["database"]["detail"]
    assert not path.exists()


def test_backlog_without_collector_and_dead_letters_warn(run_cli, redis_url, sqlite_url):
    import redis

    from collector_worker.storage import open_engine

    open_engine(sqlite_url).dispose()
    client = redis.Redis.from_url(redis_url)
    client.xadd("contrail:spans", {"v": "1", "enc": "x", "n": "0", "data": b""})
    client.xadd("contrail:spans:dead", {"reason": "undecodable", "source_id": "1-0"})
    result = run_cli("doctor", "--json", "--redis-url", redis_url, "--database-url", sqlite_url)
    checks = checks_of(result)
    assert result.exit_code == 0  # warnings are not failures
    assert checks["consumer group"]["status"] == WARN and "contrail collector" in checks["consumer group"]["hint"]
    assert checks["dead letters"]["status"] == WARN and "XRANGE contrail:spans:dead" in checks["dead letters"]["hint"]

    client.xgroup_create("contrail:spans", "contrail-collectors", id="0")
    client.xreadgroup("contrail-collectors", "gone-collector", {"contrail:spans": ">"}, count=1)
    checks = checks_of(run_cli("doctor", "--json", "--redis-url", redis_url, "--database-url", sqlite_url))
    assert checks["pending"]["detail"].startswith("1 entries")
    client.close()


def test_spans_dropped_in_an_application_warn_with_the_service_named(run_cli, redis_url, sqlite_url, tmp_path):
    from collector_worker.storage import open_engine
    from tracer import TracingManager

    open_engine(sqlite_url).dispose()
    tracing = TracingManager(service_name="overloaded", redis_url=redis_url, data_dir=str(tmp_path),
                             max_queue_size=1, schedule_delay=30)
    for _ in range(4):
        tracing.finish_span(tracing.start_span("work"))
    tracing.shutdown()
    result = run_cli("doctor", "--json", "--redis-url", redis_url, "--database-url", sqlite_url)
    check = checks_of(result)["tracers"]
    assert result.exit_code == 0 and check["status"] == WARN
    assert "3 spans dropped by overloaded (3)" in check["detail"]
    assert "CONTRAIL_MAX_QUEUE_SIZE" in check["hint"]


def test_clock_skew_is_measured_against_redis_time(redis_server):
    client = redis_server.client()
    skew, round_trip = measure_clock_skew_ms(client)
    client.close()
    assert round_trip >= 0
    assert abs(skew) < 1000 + round_trip  # same host, same clock


def test_schema_newer_than_this_version_fails(run_cli, redis_url, sqlite_url):
    from sqlalchemy import text

    from collector_worker.storage import open_engine
    from collector_worker.storage.migrations import VERSION_TABLE

    engine = open_engine(sqlite_url)
    with engine.begin() as conn:  # as a later release's migration leaves it: a revision this code lacks
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    result = run_cli("doctor", "--json", "--redis-url", redis_url, "--database-url", sqlite_url)
    assert result.exit_code == 1
    assert checks_of(result)["schema"]["status"] == FAIL
    listed = run_cli("traces", "list", "--database-url", sqlite_url)
    assert listed.exit_code == 1 and "newer than this Contrail" in listed.stderr


def test_without_a_redis_url_doctor_checks_the_redis_of_contrail_up(run_cli, redis_url, sqlite_url, tmp_path):
    """`contrail up` keeps its Redis on a port of its own (never 6379) and remembers it where doctor looks:
    both go through contrail_cli.embedded_redis, the one place that knows the file."""
    from urllib.parse import urlsplit

    from contrail_cli.embedded_redis import REDIS_PORT_FILE, remember_redis_port, remembered_redis_port
    from contrail_cli.up import redis_port

    data = tmp_path / "data"
    data.mkdir()
    remember_redis_port(data, urlsplit(redis_url).port)
    env = {"CONTRAIL_DATA_DIR": str(data), "CONTRAIL_REDIS_URL": None}
    result = run_cli("doctor", "--json", "--database-url", sqlite_url, env=env)
    detail = checks_of(result)["redis"]["detail"]
    assert detail.startswith(f"reachable at redis://127.0.0.1:{urlsplit(redis_url).port}/0")
    assert f"the Redis of contrail up (from {data / REDIS_PORT_FILE})" in detail

    # That Redis not running (a stale port file): the configured default is checked, as before.
    remember_redis_port(data, 1)
    result = run_cli("doctor", "--json", "--database-url", sqlite_url,
                     env={**env, "CONTRAIL_REDIS_URL": None})
    assert "127.0.0.1:1/" not in checks_of(result)["redis"]["detail"]
    # An explicit URL always wins.
    remember_redis_port(data, urlsplit(redis_url).port)
    result = run_cli("doctor", "--json", "--redis-url", "redis://127.0.0.1:1/0", "--database-url", sqlite_url, env=env)
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in checks_of(result)["redis"]["detail"]
    # So does one from the config file: only an unconfigured URL means the Redis of contrail up.
    config = tmp_path / "contrail.toml"
    config.write_text('[collector]\nredis_url = "redis://127.0.0.1:1/0"\n')
    result = run_cli("doctor", "--json", "--database-url", sqlite_url, env={**env, "CONTRAIL_CONFIG": str(config)})
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in checks_of(result)["redis"]["detail"]
    # The port `contrail up` picks for a fresh data directory is the one read back.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    port, _ = redis_port(fresh)
    assert port != 6379 and remembered_redis_port(fresh) == port
