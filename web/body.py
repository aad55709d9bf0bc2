"""Reading a request body with a size limit and a deadline, however the body is framed.

Werkzeug's stream for a chunked body stops quietly at ``MAX_CONTENT_LENGTH``,
so a body read through it is cut, not refused: the receiver reads the WSGI
input itself and answers 413 past ``max_bytes`` (Content-Length, chunked or
unframed alike). A client that sends its body slowly holds a web thread for
as long as it likes; under gunicorn the read side of the socket is shut at
the deadline, which ends a blocked read, and the request is answered 408.
"""

from __future__ import annotations

import socket
import threading
import time

from flask import Flask, request
from werkzeug.wsgi import get_input_stream

from .errors import ApiError

CHUNK = 64 * 1024
READ = "contrail.body_read"  # environ key: the app has read (or given up on) this request's body


class _Deadline:
    """Shuts the read side of the request's socket when the body has not arrived in time."""

    def __init__(self, environ: dict, seconds: float):
        self.expires = time.monotonic() + seconds
        self.expired = False
        self._sock = environ.get("gunicorn.socket")  # the connection, as gunicorn hands it to the app
        self._timer = None
        if isinstance(self._sock, socket.socket):
            self._timer = threading.Timer(seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        self.expired = True
        try:
            self._sock.shutdown(socket.SHUT_RD)  # a blocked recv() returns b"" now; the response still goes out
        except OSError:
            pass

    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.expires

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _timeout_error(seconds: float) -> ApiError:
    return ApiError(408, f"request body not received within {seconds:g} s", code="timeout")


def read_request_body(environ: dict, max_bytes: int, timeout: float) -> bytes:
    """The raw body: 413 when it is over ``max_bytes``, 408 when it takes longer than ``timeout``."""
    length = environ.get("CONTENT_LENGTH")
    try:
        declared = int(length) if length else None
    except ValueError:
        raise ApiError(400, f"invalid Content-Length {length!r}", parameter="Content-Length") from None
    if declared is not None and declared > max_bytes:
        raise ApiError(413, f"request body of {declared} bytes is over the limit of {max_bytes}")
    parts: list[bytes] = []
    size = _read(environ, max_bytes, timeout, parts.append)
    if declared is not None and size < declared:
        raise ApiError(400, f"request body ended after {size} of {declared} bytes", parameter="body")
    return b"".join(parts)


def _read(environ: dict, max_bytes: int, timeout: float, keep) -> int:
    """Pass the body to ``keep`` piece by piece; return its size. 413 past ``max_bytes``, 408 past the
    deadline; when the body is not read to its end, the read side of the socket is shut."""
    stream = get_input_stream(environ, max_content_length=None)  # never cut quietly: the limit is checked here
    deadline = _Deadline(environ, timeout)
    size = 0
    environ[READ] = True
    try:
        while True:
            try:
                part = stream.read(CHUNK)
            except Exception:  # the socket shut at the deadline, or the client went away mid-body
                if deadline.passed():
                    raise _timeout_error(timeout) from None
                raise ApiError(400, "request body ended early", parameter="body") from None
            if deadline.passed():
                raise _timeout_error(timeout)
            if not part:
                return size
            size += len(part)
            if size > max_bytes:
                raise ApiError(413, f"request body is over the limit of {max_bytes} bytes")
            keep(part)
    except ApiError as exc:
        if exc.status == 413:
            environ[READ] = False  # the rest is drained after the answer (drain_body), within a deadline
        raise
    finally:
        deadline.cancel()


def drain_body(environ: dict, max_bytes: int, timeout: float) -> None:
    """Read and drop what is left of a body the app did not read, within ``max_bytes`` and ``timeout``;
    beyond either, shut the socket's read side so the server does not wait for the rest."""
    try:
        _read(environ, max_bytes, timeout, lambda part: None)
    except ApiError:
        sock = environ.get("gunicorn.socket")
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass


def init_app(app: Flask) -> None:
    """Routes that answer without reading a body (probes, the API, refusals) leave it to the server, which
    reads it before the connection's next request with no deadline at all: a client sending a body to
    /healthz a byte at a time would hold a thread. Such a body is read here, with the same limit and
    deadline as the receiver's, and dropped."""
    settings = app.extensions["contrail.settings"]

    @app.after_request
    def _drain_body(response):
        environ = request.environ
        framed = environ.get("CONTENT_LENGTH") not in (None, "", "0") or "chunked" in environ.get(
            "HTTP_TRANSFER_ENCODING", "").lower()
        if framed and not environ.get(READ):
            drain_body(environ, settings.max_body_bytes, settings.body_read_timeout)
        return response
