"""A real OTLP/HTTP traces endpoint for tests: parses each POST as a binary ``ExportTraceServiceRequest``
with the official protobuf classes and keeps every span and the request headers."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class OtlpSink:
    """Serves ``url`` (…/v1/traces) until :meth:`close`; ``spans`` are dicts of what arrived, in order.

    ``require`` maps header names to the values a request must carry, else it is answered 401 (counted in
    ``refused``), like a backend that wants an API key.
    """

    def __init__(self, require: dict[str, str] | None = None) -> None:
        self.spans: list[dict] = []
        self.requests: list[dict[str, str]] = []
        self.refused = 0
        self.require = {k.lower(): v for k, v in (require or {}).items()}
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if any(headers.get(k) != v for k, v in sink.require.items()):
                    with sink._lock:
                        sink.refused += 1
                    return self._answer(401, b"")
                if headers.get("content-type") != "application/x-protobuf":
                    return self._answer(415, b"")
                message = ExportTraceServiceRequest()
                message.ParseFromString(body)
                with sink._lock:
                    sink.requests.append(headers)
                    sink.spans.extend(_spans(message))
                self._answer(200, ExportTraceServiceResponse().SerializeToString())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self) -> list[dict]:
        with self._lock:
            return list(self.spans)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _spans(message: ExportTraceServiceRequest) -> list[dict]:
    out = []
    for resource_spans in message.resource_spans:
        resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append({
                    "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex() or None, "name": span.name,
                    "service": resource.get("service.name"), "status": span.status.code,
                    "status_message": span.status.message, "start_ns": span.start_time_unix_nano,
                    "end_ns": span.end_time_unix_nano,
                    "attributes": {kv.key: kv.value for kv in span.attributes},
                    "events": [(e.name, {kv.key: kv.value for kv in e.attributes}) for e in span.events],
                })
    return out
