"""Services and their operations."""

from __future__ import annotations

from flask import Blueprint, jsonify

from collector_worker.storage import queries

from .. import params
from ..errors import not_found
from ..resources import current_resources

bp = Blueprint("services", __name__)


@bp.get("/services")
def services():
    with current_resources().engine().connect() as conn:
        return jsonify({"services": queries.list_services(conn)})


@bp.get("/services/<path:service>/operations")
def operations(service: str):
    params.check_text("service", service)
    with current_resources().engine().connect() as conn:
        found = queries.list_operations(conn, service)
    if not found:
        raise not_found(f"unknown service {service!r}")
    return jsonify({"service": service, "operations": found})
