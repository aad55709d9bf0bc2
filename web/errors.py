"""JSON errors everywhere: no HTML error page and no traceback ever reaches a client.

Every error body is ``{"error": {"code", "message", "parameter"?}}`` with the
HTTP status that fits (see docs/architecture.md).
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger("contrail.web")

CODES = {
    400: "bad_parameter",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "too_large",
    415: "unsupported_media_type",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answered as JSON with ``status``; raise it from any view."""

    def __init__(self, status: int, message: str, parameter: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.parameter = parameter
        self.code = code or CODES.get(status, "error")
        self.headers = headers or {}


def bad_parameter(parameter: str, message: str) -> ApiError:
    return ApiError(400, message, parameter=parameter)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def error_response(status: int, code: str, message: str, parameter: str | None = None,
                   headers: dict[str, str] | None = None):
    body = {"code": code, "message": message}
    if parameter:
        body["parameter"] = parameter
    response = jsonify({"error": body})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.parameter, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        messages = {
            404: "no such resource",
            405: "method not allowed on this resource",
            413: "request body too large",
        }
        message = messages.get(status) or (exc.description or exc.name)
        headers = {}
        if status == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(exc.valid_methods)
        return error_response(status, CODES.get(status, "error"), message, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal", "internal error; the server log has the details")
