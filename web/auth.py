"""Optional bearer-token access control for the API, the receiver and /metrics.

With no token configured everything is open (and ``contrail web`` binds to
loopback). Loopback alone does not keep a web page in the user's browser out:
a site whose DNS name is re-pointed at 127.0.0.1 ("DNS rebinding") becomes
same-origin with the open API. So an open app bound to loopback answers only
requests whose ``Host`` is a loopback name or address. With tokens: ``api_token`` may do anything, ``read_token`` only
GET the API and /metrics, ``ingest_token`` only POST /v1/traces. Liveness and
readiness probes and the dashboard pages stay open; the dashboard asks for a
token in the browser and sends it on its API calls.
"""

from __future__ import annotations

import hmac
import ipaddress

from flask import Flask, request

from .errors import ApiError

OPEN_PATHS = ("/healthz", "/readyz", "/api/v1/openapi.json")


def _matches(given: str, expected: str | None) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _scope_for(path: str, method: str) -> str | None:
    """"read", "ingest" or None (open) for a request."""
    if path in OPEN_PATHS:
        return None
    if path == "/v1/traces" or path.startswith("/v1/"):
        return "ingest"
    if path.startswith("/api/"):
        return "read" if method in ("GET", "HEAD", "OPTIONS") else "write"
    if path == "/metrics":
        return "read"
    return None


def _local_host(host: str) -> bool:
    """Is a Host header (``name[:port]``, ``[v6]:port``) a loopback name or address?"""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_request(settings) -> None:
    """Raise :class:`ApiError` 401/403 when the request lacks the right token (or, open, comes for another host)."""
    if not (settings.api_token or settings.read_token or settings.ingest_token):
        from .server import is_loopback

        if is_loopback(settings.web_host) and not _local_host(request.host or ""):
            raise ApiError(403, f"this Contrail has no API token and serves loopback only, so it answers requests "
                                f"for localhost, not for Host {request.host!r}; set CONTRAIL_API_TOKEN to serve "
                                "other names", code="forbidden_host")
        return
    scope = _scope_for(request.path, request.method)
    if scope is None:
        return
    header = request.headers.get("Authorization", "")
    challenge = {"WWW-Authenticate": 'Bearer realm="contrail"'}
    if not header.lower().startswith("bearer "):
        raise ApiError(401, "this endpoint needs 'Authorization: Bearer <token>'", headers=challenge)
    token = header[7:].strip()
    if _matches(token, settings.api_token):
        return
    if _matches(token, settings.read_token):
        if scope == "read":
            return
        raise ApiError(403, "the read token cannot do this; use the API or ingest token")
    if _matches(token, settings.ingest_token):
        if scope == "ingest":
            return
        raise ApiError(403, "the ingest token can only send spans to /v1/traces")
    raise ApiError(401, "invalid token", headers={**challenge, "WWW-Authenticate":
                                                  'Bearer realm="contrail", error="invalid_token"'})


def init_app(app: Flask) -> None:
    settings = app.extensions["contrail.settings"]

    @app.before_request
    def _require_token():
        check_request(settings)
