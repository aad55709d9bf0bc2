"""Live tail: poll for the traces finalized since the last answer, with the trace search filters.

Polling with a cursor (not a held-open stream) so it works behind gunicorn's
sync workers: each poll is one short request.
"""

from __future__ import annotations

import time

from flask import Blueprint, jsonify

from collector_worker.storage import tail
from collector_worker.storage.queries import QueryError

from .. import params
from ..errors import bad_parameter
from ..resources import current_resources
from .traces import trace_query_from_request

bp = Blueprint("tail", __name__)

DEFAULT_WINDOW_S = 300.0
MAX_WINDOW_S = 86400.0
DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@bp.get("/traces/tail")
def tail_traces():
    query = trace_query_from_request()  # the search filters, validated the same way
    window_ns = params.duration_ns("window", default_unit="s")
    window_s = DEFAULT_WINDOW_S if window_ns is None else window_ns / 1e9
    if not 0 < window_s <= MAX_WINDOW_S:
        raise bad_parameter("window", f"window must be positive and at most {int(MAX_WINDOW_S)}s (24h)")
    limit = params.integer("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    cursor = params.text("cursor", max_length=200)
    since = max(time.time_ns() - int(window_s * 1e9), query.start_ns or 0)
    query.start_ns = query.end_ns = query.cursor = None
    try:
        with current_resources().engine().connect() as conn:
            result = tail.finalized_since(conn, query, since_start_ns=since, cursor=cursor, limit=limit)
    except QueryError as exc:
        raise bad_parameter(exc.parameter, str(exc)) from None
    return jsonify(result)
