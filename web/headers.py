"""Security headers on every response: the dashboard, its assets, the API and the receiver.

The dashboard is project-written ES modules plus the Plotly bundle, all served
from this origin, and it builds the page with DOM calls (never ``innerHTML``),
so the Content-Security-Policy allows scripts and styles from this origin only:
no inline script, no ``eval``, no inline ``<style>`` or ``style=""`` except the
exact stylesheets Plotly writes (allowed by hash). Styles set through the CSSOM
(``element.style``, ``sheet.insertRule``), as the dashboard and Plotly do, are
not inline styles and stay allowed. Nothing may frame the dashboard.
"""

from __future__ import annotations

from flask import Flask

# Plotly adds its own rules through the CSSOM into a <style> element it creates empty: the hash of the
# empty string admits exactly that element.
EMPTY_STYLE_HASH = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"  # base64(sha256(b""))


def content_security_policy() -> str:
    from .dashboard import plotly_style_hashes

    return "; ".join((
        "default-src 'self'",
        "script-src 'self'",
        " ".join(("style-src 'self'", EMPTY_STYLE_HASH, *plotly_style_hashes())),
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ))


def security_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


def init_app(app: Flask) -> None:
    headers = security_headers()

    @app.after_request
    def _security_headers(response):
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response
