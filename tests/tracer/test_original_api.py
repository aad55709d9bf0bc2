"""The original notes' TracingManager calls, pasted as a user would, produce the spans they describe."""

from __future__ import annotations

import warnings
from urllib.parse import urlsplit

import pytest

from tests.support.servers import wait_until
from tests.tracer.conftest import RECEIVED_STREAM
from tests.tracer.tracer_helpers import by_name, stream_spans
from tracer import compat
from tracer.settings import TracerSettings


def test_finish_span_logs_dict_is_one_event_with_the_dict_as_attributes(make_manager, redis_url):
    tracing = make_manager()
    span = tracing.start_span("get_user", tags={"user_id": 1})
    tracing.finish_span(span, logs={"event": "cache_miss", "key": "user:1"})
    assert tracing.flush(5)
    [stored] = stream_spans(redis_url)
    assert [(e["name"], e["attributes"]) for e in stored["events"]] == [("cache_miss", {"key": "user:1"})]


def test_finish_span_logs_list_is_one_event_per_dict(make_manager, redis_url):
    tracing = make_manager()
    span = tracing.start_span("load")
    tracing.finish_span(span, logs=[{"event": "cache_miss", "key": "user:1"}, {"event": "db_read", "rows": 3},
                                    {"message": "no event key"}])
    assert tracing.flush(5)
    [stored] = stream_spans(redis_url)
    assert [(e["name"], e["attributes"]) for e in stored["events"]] == [
        ("cache_miss", {"key": "user:1"}), ("db_read", {"rows": 3}), ("log", {"message": "no event key"})]


def test_get_tracer_info_reports_tracer_initialized(make_manager):
    info = make_manager().get_tracer_info()
    assert info["tracer_initialized"] is True
    assert info["enabled"] is True and "spans_exported" in info and info["exporters"] == {}
    assert make_manager(enable_tracing=False).get_tracer_info()["tracer_initialized"] is False


def test_enable_tracing_is_enabled_and_warns_once(make_manager):
    compat._warned.discard("enable_tracing")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        off = make_manager(enable_tracing=False)
        make_manager(enable_tracing=True)
    assert off.enabled is False
    notices = [str(w.message) for w in caught if "enable_tracing" in str(w.message)]
    assert len(notices) == 1 and "enabled=" in notices[0]


def test_with_tracing_records_success_and_optionally_the_return_value(make_manager, redis_url):
    tracing = make_manager()

    @tracing.with_tracing("plain")
    def plain():
        return {"user": "ada", "token": "s3cret"}

    @tracing.with_tracing("with_result", record_result=True)
    def with_result():
        return {"user": "ada", "token": "s3cret", "blob": "x" * 5000}

    @tracing.with_tracing("fails")
    def fails():
        raise ValueError("nope")

    plain()
    with_result()
    with pytest.raises(ValueError):
        fails()
    assert tracing.flush(5)
    spans = by_name(stream_spans(redis_url))
    assert spans["plain"]["attributes"]["success"] is True and spans["plain"]["status_code"] == "ok"
    assert "function.return_value" not in spans["plain"]["attributes"]
    returned = spans["with_result"]["attributes"]["function.return_value"]
    assert "'user': 'ada'" in returned and "s3cret" not in returned and "[REDACTED]" in returned
    assert len(returned) <= tracing.settings.max_attribute_length
    assert spans["fails"]["attributes"]["success"] is False and spans["fails"]["status_code"] == "error"


def test_record_return_value_setting_turns_it_on_for_every_decorator(make_manager, redis_url):
    tracing = make_manager(record_return_value=True)

    @tracing.with_tracing
    def answer():
        return 42

    answer()
    assert tracing.flush(5)
    [stored] = stream_spans(redis_url)
    assert stored["attributes"]["function.return_value"] == "42"


def test_original_environment_names_configure_the_tracer():
    settings = TracerSettings.load(env={"SERVICE_NAME": "user-service", "JAEGER_ENABLE_TRACING": "false",
                                        "JAEGER_AGENT_HOST": "jaeger.local", "JAEGER_AGENT_PORT": "6831"})
    assert (settings.service_name, settings.enabled, settings.jaeger_host) == ("user-service", False, "jaeger.local")
    assert compat.jaeger_endpoint(settings) == "http://jaeger.local:4318/v1/traces"  # the agent's UDP port is not OTLP
    modern = TracerSettings.load(env={"SERVICE_NAME": "old", "CONTRAIL_SERVICE_NAME": "new",
                                      "JAEGER_AGENT_PORT": "14318", "JAEGER_AGENT_HOST": "j"})
    assert modern.service_name == "new" and compat.jaeger_endpoint(modern) == "http://j:14318/v1/traces"


def test_original_constructor_exports_the_same_spans_to_jaeger_over_otlp(make_manager, redis_url, otlp_receiver):
    """The notes' constructor with Jaeger arguments; Contrail's own OTLP receiver stands in for Jaeger."""
    receiver = urlsplit(otlp_receiver)
    compat._warned.discard("jaeger")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracing = make_manager(service_name="user-service", jaeger_host=receiver.hostname,
                               jaeger_port=receiver.port, enable_tracing=True)
    assert any("otlp_endpoint" in str(w.message) for w in caught)

    @tracing.with_tracing("get_user", tags={"component": "users"})
    def get_user(user_id):
        with tracing.trace_database_operation("SELECT", "users", "SELECT * FROM users WHERE id = 7"):
            span = tracing.start_span("cache_lookup")
            tracing.finish_span(span, logs={"event": "cache_miss", "key": f"user:{user_id}"})
        return {"id": user_id}

    get_user(7)
    assert tracing.flush(10)
    info = tracing.get_tracer_info()
    assert info["tracer_initialized"] and info["exporters"]["jaeger"]["exported"] == 3
    local = by_name(stream_spans(redis_url))
    received = wait_until(lambda: by_name(stream_spans(redis_url, RECEIVED_STREAM)) or None, timeout=10,
                          message="spans at the OTLP receiver")
    assert set(local) == set(received) == {"get_user", "SELECT users", "cache_lookup"}
    for name, span in local.items():
        assert (received[name]["trace_id"], received[name]["span_id"], received[name]["parent_span_id"]) == \
            (span["trace_id"], span["span_id"], span["parent_span_id"])
    assert received["get_user"]["attributes"]["success"] is True
    assert received["get_user"]["service"] == "user-service"
    [event] = received["cache_lookup"]["events"]
    assert (event["name"], event["attributes"]) == ("cache_miss", {"key": "user:7"})
