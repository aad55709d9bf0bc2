"""The period report (the dashboard's "Download report"): one self-contained HTML file."""

from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, Response, request

from collector_worker.period_report import gather_report
from collector_worker.report_html import render_report

from .. import params
from ..errors import bad_parameter
from ..resources import current_resources
from .ai_common import price_table

bp = Blueprint("report", __name__)

DEFAULT_LOOKBACK_S = 86400.0
MAX_WINDOW_NS = 366 * 86400 * 10**9


@bp.get("/report")
def report():
    start_ns, end_ns = params.closed_range(*params.time_range(default_lookback_s=DEFAULT_LOOKBACK_S),
                                           DEFAULT_LOOKBACK_S)
    if end_ns - start_ns < 60 * 10**9:
        raise bad_parameter("lookback", "the report covers at least one minute")
    if end_ns - start_ns > MAX_WINDOW_NS:
        raise bad_parameter("lookback", "the report covers at most 366 days")
    prices = price_table()
    with current_resources().engine().connect() as conn:
        data = gather_report(conn, start_ns, end_ns, prices)
    page = render_report(data, link_base=request.host_url)
    stamp = datetime.fromtimestamp(end_ns / 1e9, tz=timezone.utc).strftime("%Y%m%d-%H%M")
    response = Response(page, content_type="text/html; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="contrail-report-{stamp}.html"'
    return response
