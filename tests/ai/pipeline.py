"""Drive real helper spans through the wire codec, the span writer and the finalizer."""

from __future__ import annotations

import time

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector_worker.finalizer import finalize_ready, on_spans_stored
from collector_worker.settings import CollectorSettings
from collector_worker.storage.writer import store_spans
from tracer import codec
from tracer.export import encode_sdk_spans
from tracer.manager import TracingManager


class CapturingManager:
    """A TracingManager whose finished spans are also kept in memory (no Redis involved)."""

    def __init__(self, service: str, redis_url: str, data_dir, **settings):
        self.manager = TracingManager(service_name=service, redis_url=redis_url, data_dir=str(data_dir), **settings)
        self.memory = InMemorySpanExporter()
        self.manager.tracer_provider.add_span_processor(SimpleSpanProcessor(self.memory))

    def take_codec_spans(self) -> list[dict]:
        """Finished spans encoded as a stream entry and decoded again, as the collector sees them."""
        finished = list(self.memory.get_finished_spans())
        self.memory.clear()
        decoded = codec.decode_entry(encode_sdk_spans(finished))
        assert not decoded.rejected
        return decoded.spans

    def close(self):
        shutdown = getattr(self.manager, "shutdown", None)
        if shutdown:
            shutdown()


def ingest(engine, spans: list[dict]) -> list[dict]:
    with engine.begin() as conn:
        new = store_spans(conn, spans, time.time_ns())
        on_spans_stored(conn, new)
    return new


def finalize(engine) -> int:
    settings = CollectorSettings.load(env={}, quiet_period="0s")
    return finalize_ready(engine, settings, "ai-tests", now_ns=time.time_ns() + 5_000_000_000)
