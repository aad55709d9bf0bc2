"""Optional bearer-token access control for the API, the receiver and /metrics.

With no token configured everything is open (and ``contrail web`` binds to
loopback). Loopback alone does not keep a web page in the user's browser out:
a site whose DNS name is re-pointed at 127.0.0.1 ("DNS rebinding") becomes
same-origin with the open API, and so does one whose name is re-pointed at a
host's LAN address when the app is bound to all interfaces. So an open app,
wherever it is bound, answers only requests whose ``Host`` is a loopback name,
an IP address, or a name listed in ``web_allowed_hosts``. With tokens: ``api_token`` may do anything, ``read_token`` only
GET the API (and /jaeger) and /metrics, ``ingest_token`` only send spans (/v1/traces,
OTLP/gRPC, /api/v2/spans). Liveness and
readiness probes and the dashboard pages stay open; the dashboard asks for a
token in the browser and sends it on its API calls.
"""

from __future__ import annotations

import hmac
import ipaddress

from flask import Flask, request

from .errors import ApiError

OPEN_PATHS = ("/healthz", "/readyz", "/api/v1/openapi.json")
ZIPKIN_PATH = "/api/v2/spans"


def _matches(given: str, expected: str | None) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _scope_for(path: str, method: str) -> str | None:
    """"read", "ingest" or None (open) for a request."""
    if path in OPEN_PATHS:
        return None
    if path == "/v1/traces" or path.startswith("/v1/") or path == ZIPKIN_PATH:
        return "ingest"
    if path.startswith("/jaeger/"):
        return "read" if method in ("GET", "HEAD", "OPTIONS") else "write"
    if path.startswith("/api/"):
        return "read" if method in ("GET", "HEAD", "OPTIONS") else "write"
    if path == "/metrics":
        return "read"
    return None


def _host_name(host: str) -> str:
    """The name or address of a Host header (``name[:port]``, ``[v6]:port``), lower case, no trailing dot."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    return name.strip("[]").rstrip(".").lower()


def allowed_host(host: str, settings) -> bool:
    """May an open (token-less) app answer a request for ``host``?

    Loopback names, any IP address (a rebound page always sends its own DNS name, never an address),
    the address the app is bound to and the names in ``web_allowed_hosts``.
    """
    name = _host_name(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    extra = {item.strip().rstrip(".").lower() for item in (settings.web_allowed_hosts or "").split(",")}
    return bool(name) and (name == _host_name(settings.web_host) or name in extra)


def check_request(settings) -> None:
    """Raise :class:`ApiError` 401/403 when the request lacks the right token (or, open, comes for another host)."""
    if not (settings.api_token or settings.read_token or settings.ingest_token):
        if not allowed_host(request.host or "", settings):
            raise ApiError(403, f"this Contrail has no API token, so it answers requests for localhost, IP "
                                f"addresses and CONTRAIL_WEB_ALLOWED_HOSTS only, not for Host {request.host!r} "
                                "(a guard against DNS rebinding); set CONTRAIL_API_TOKEN or add the name to "
                                "CONTRAIL_WEB_ALLOWED_HOSTS", code="forbidden_host")
        return
    scope = _scope_for(request.path, request.method)
    if scope is None:
        return
    check_token(request.headers.get("Authorization", ""), scope, settings)


def check_token(header: str, scope: str, settings) -> None:
    """Raise :class:`ApiError` 401/403 unless the ``Authorization`` value carries a token allowed ``scope``
    ("read", "write" or "ingest"); any receiver (HTTP or gRPC metadata) checks tokens here."""
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
        raise ApiError(403, "the ingest token can only send spans (OTLP /v1/traces and gRPC, Zipkin /api/v2/spans)")
    raise ApiError(401, "invalid token", headers={**challenge, "WWW-Authenticate":
                                                  'Bearer realm="contrail", error="invalid_token"'})


def init_app(app: Flask) -> None:
    settings = app.extensions["contrail.settings"]

    @app.before_request
    def _require_token():
        check_request(settings)
