"""OTLP/gRPC trace receiver: the standard ``TraceService/Export`` on ``otlp_grpc_port`` (4317).

It runs inside every web worker (started after gunicorn forks, so no gRPC state crosses a fork), the
workers sharing the port through ``SO_REUSEPORT``. Requests go through the same token check, span
limits, conversion (:func:`web.otlp.convert_request`) and stream publishing (:mod:`web.ingest`) as
``POST /v1/traces``; gzip-compressed messages are decompressed by gRPC itself. A message over
``max_body_bytes`` (compressed or not) is refused by gRPC with ``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from flask import Flask
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from tracer.limits import SpanLimits

from .auth import check_token
from .errors import ApiError
from .ingest import StreamUnavailable, accept
from .metrics import current_metrics
from .otlp import convert_request, export_response

log = logging.getLogger("contrail.web")

PENDING_PER_THREAD = 8  # calls queued per handler thread before new ones get RESOURCE_EXHAUSTED
GRPC_STATUS = {401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED}


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """``Export`` for one Flask app: its settings, Redis client and metrics."""

    def __init__(self, app: Flask):
        self.app = app

    def Export(self, request, context):  # noqa: N802 - the generated service's method name
        settings = self.app.extensions["contrail.settings"]
        with self.app.app_context():
            if settings.api_token or settings.read_token or settings.ingest_token:
                header = dict(context.invocation_metadata()).get("authorization", "")
                try:
                    check_token(header, "ingest", settings)
                except ApiError as exc:
                    current_metrics().otlp_requests.labels("unauthorized").inc()
                    context.abort(GRPC_STATUS.get(exc.status, grpc.StatusCode.PERMISSION_DENIED), exc.message)
            spans, reasons, cut = convert_request(request, SpanLimits.from_settings(settings))
            try:
                message = accept(spans, reasons, cut)
            except StreamUnavailable as exc:  # UNAVAILABLE is retried by OTLP exporters
                context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            return export_response(len(reasons), message)


def grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def start_grpc_server(app: Flask) -> grpc.Server | None:
    """Serve ``TraceService`` for ``app`` on its settings' host and ``otlp_grpc_port``; None when the port is 0.

    Raises ``RuntimeError`` when the port cannot be bound.
    """
    settings = app.extensions["contrail.settings"]
    if not settings.otlp_grpc_port:
        return None
    threads = settings.web_threads
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="otlp-grpc"),
        maximum_concurrent_rpcs=threads * PENDING_PER_THREAD,
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.so_reuseport", 1),  # every web worker serves the port
        ],
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(app), server)
    address = grpc_address(settings.web_host, settings.otlp_grpc_port)
    server.add_insecure_port(address)
    server.start()
    log.info("OTLP/gRPC receiver listening on %s", address)
    return server
