"""Log records made inside a span carry its ids through a real dictConfig, and can become span events."""

from __future__ import annotations

import logging
import logging.config

import pytest

from tests.tracer.tracer_helpers import by_name, stream_spans


@pytest.fixture
def configured_log(tmp_path):
    """A dictConfig as an application would write it: the filter on a JSON-ish file handler, the formatter on
    a second handler."""
    ids_log, formatted_log = tmp_path / "ids.log", tmp_path / "formatted.log"
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"trace": {"()": "tracer.log_context.TraceContextFilter", "service_name": "svc"}},
        "formatters": {
            "ids": {"format": "%(otelTraceID)s %(otelSpanID)s %(trace_id)s %(span_id)s %(otelServiceName)s "
                              "%(message)s"},
            "traced": {"()": "tracer.log_context.TraceContextFormatter"},
        },
        "handlers": {
            "ids": {"class": "logging.FileHandler", "filename": str(ids_log), "filters": ["trace"],
                    "formatter": "ids"},
            "formatted": {"class": "logging.FileHandler", "filename": str(formatted_log), "formatter": "traced"},
        },
        "loggers": {"shop": {"handlers": ["ids", "formatted"], "level": "INFO", "propagate": True}},
    })
    yield ids_log, formatted_log
    logger = logging.getLogger("shop")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def test_records_carry_the_current_span_ids(configured_log, make_manager, redis_url):
    ids_log, formatted_log = configured_log
    tracing = make_manager()
    log = logging.getLogger("shop")
    log.info("before any span")
    with tracing.span("checkout"):
        log.info("inside checkout")
        with tracing.span("charge"):
            log.info("inside charge")
    assert tracing.flush(5)
    spans = by_name(stream_spans(redis_url))
    lines = ids_log.read_text().splitlines()
    assert lines[0] == f"{'0' * 32} {'0' * 16} {'0' * 32} {'0' * 16} svc before any span"
    for line, name in zip(lines[1:], ("checkout", "charge")):
        trace_id, span_id, trace_id_again, span_id_again, _service, *_ = line.split()
        assert (trace_id, span_id) == (spans[name]["trace_id"], spans[name]["span_id"])
        assert (trace_id_again, span_id_again) == (trace_id, span_id)
    formatted = formatted_log.read_text().splitlines()
    assert f"[trace_id={spans['charge']['trace_id']} span_id={spans['charge']['span_id']}] inside charge" \
        in formatted[2]


def test_records_at_the_level_become_events_on_the_current_span(make_manager, redis_url):
    tracing = make_manager(log_events_level="warning")
    log = logging.getLogger("shop.events")
    with tracing.span("checkout"):
        log.info("below the level")
        log.warning("stock low for %s", "sku-1")
        try:
            raise KeyError("sku-2")
        except KeyError:
            log.exception("lookup failed")
    log.error("outside any span")
    assert tracing.flush(5)
    tracing.shutdown()
    [span] = stream_spans(redis_url)
    events = [(e["name"], e["attributes"]) for e in span["events"]]
    assert events == [
        ("log", {"log.severity": "WARNING", "log.logger": "shop.events", "log.message": "stock low for sku-1"}),
        ("log", {"log.severity": "ERROR", "log.logger": "shop.events", "log.message": "lookup failed",
                 "exception.type": "KeyError"}),
    ]
    assert not any(type(h).__name__ == "SpanEventsHandler" for h in logging.getLogger().handlers)


def test_bad_log_events_level_names_the_setting():
    from tracer import TracingManager

    with pytest.raises(ValueError, match="log_events_level: invalid log level 'loud'"):
        TracingManager(log_events_level="loud", enabled=False)
