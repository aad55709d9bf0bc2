"""The browser dashboard: server-rendered page shells plus project-written ES modules.

Pages only render a skeleton; every number on them comes from the JSON API
(``/api/v1``) through ``static/api.js``, so the dashboard never sees data the API
would not give the same user. Plotly's JavaScript is served from the installed
``plotly`` wheel: nothing third-party lives in this tree and nothing is loaded
from a CDN, because dashboards run on networks without internet.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from pathlib import Path

from flask import Blueprint, abort, render_template, request, send_file

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",
)

API_BASE = "/api/v1"
_TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")

PAGES = (  # (endpoint, title) in navigation order
    ("dashboard.search", "Search"),
    ("dashboard.services", "Services"),
    ("dashboard.metrics", "Metrics"),
    ("dashboard.compare", "Compare"),
    ("dashboard.ai", "AI"),
)


@lru_cache(maxsize=1)
def plotly_js_path() -> Path | None:
    """Where the installed ``plotly`` package keeps its bundled ``plotly.min.js``, or None."""
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


_INJECTED_STYLE = re.compile(r"""createElement\("style"\)[^;]{0,200};[^']{0,200}\.textContent='([^'\\]*)'""")


@lru_cache(maxsize=1)
def plotly_style_hashes() -> tuple[str, ...]:
    """CSP hash sources of the stylesheets the Plotly bundle writes into <style> elements as it loads.

    Its map module injects its CSS that way; allowing exactly that text by its hash keeps
    ``'unsafe-inline'`` out of the dashboard's Content-Security-Policy. Empty when plotly is absent.
    """
    path = plotly_js_path()
    if path is None:
        return ()
    texts = _INJECTED_STYLE.findall(path.read_text(encoding="utf-8"))
    return tuple(sorted({"'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"
                         for text in texts}))


def _page(template: str, title: str, **context):
    return render_template(template, title=title, api_base=API_BASE, pages=PAGES, **context)


@bp.get("/")
def search():
    return _page("search.html", "Search")


@bp.get("/search")
def search_alias():
    return search()


@bp.get("/trace/<trace_id>")
def trace(trace_id: str):
    if not _TRACE_ID.match(trace_id):
        return _page("message.html", "Bad trace id",
                     message="A trace id is 32 hexadecimal characters.", value=trace_id), 400
    return _page("trace.html", f"Trace {trace_id[:8]}", trace_id=trace_id.lower())


@bp.get("/compare")
def compare():
    return _page("compare.html", "Compare", a=request.args.get("a", ""), b=request.args.get("b", ""))


@bp.get("/services")
def services():
    return _page("services.html", "Services")


@bp.get("/app-metrics")
def metrics():
    return _page("metrics.html", "Metrics")


@bp.get("/ai")
def ai():
    return _page("ai.html", "AI")


_SPAN_ID = re.compile(r"^[0-9a-fA-F]{16}$")


def _ai_id(kind: str, value: str):
    """A session or user id from the URL, or the 400 page when it cannot be one."""
    if not value.strip() or len(value) > 255 or any(ord(ch) < 32 for ch in value):
        return _page("message.html", f"Bad {kind} id",
                     message=f"A {kind} id is 1 to 255 characters without control characters.", value=value[:300]), 400
    return None


@bp.get("/ai/sessions/<path:session_id>")
def ai_session(session_id: str):
    return _ai_id("session", session_id) or _page("ai_session.html", f"Session {session_id[:40]}",
                                                   session_id=session_id)


@bp.get("/ai/users/<path:user_id>")
def ai_user(user_id: str):
    return _ai_id("user", user_id) or _page("ai_user.html", f"User {user_id[:40]}", user_id=user_id)


@bp.get("/ai/llm/<trace_id>/<span_id>")
def llm_call(trace_id: str, span_id: str):
    if not _TRACE_ID.match(trace_id) or not _SPAN_ID.match(span_id):
        return _page("message.html", "Bad LLM call address",
                     message="An LLM call is /ai/llm/<trace id: 32 hex digits>/<span id: 16 hex digits>.",
                     value=f"{trace_id[:40]}/{span_id[:40]}"), 400
    return _page("llm_call.html", "LLM call", trace_id=trace_id.lower(), span_id=span_id.lower())


@bp.get("/assets/vendor/plotly.min.js")
def plotly_js():
    path = plotly_js_path()
    if path is None:
        abort(404, description="plotly is not installed: pip install 'contrail-tracing[server]'")
    return send_file(path, mimetype="text/javascript", max_age=86400)


@bp.get("/favicon.ico")
def favicon():
    return send_file(Path(bp.static_folder) / "favicon.svg", mimetype="image/svg+xml", max_age=86400)
