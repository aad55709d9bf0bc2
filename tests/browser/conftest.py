"""One real Contrail stack for all browser tests: Redis, a collector process, the web app, Chromium.

Traces are produced by real tracers and collected by the real collector; the
browser drives the dashboard the way a person would. In CI (CI=true) a missing
Chromium or Playwright fails the run; elsewhere the tests skip with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, unavailable
from tests.support.servers import RedisServer, free_port, stop_process, wait_until

from . import traffic

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
DOC_IMAGES = ROOT / "docs" / "images"


def browser_unavailable_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not installed: {exc}"
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM}"
    return None


@pytest.fixture(scope="module")
def chromium():
    # Module scope: Playwright's sync API keeps an event loop running in this thread while it is open, which
    # would break asyncio.run() in whatever tests the same xdist worker runs after the browser tests.
    reason = browser_unavailable_reason()
    if reason:
        unavailable(reason, f"the browser tests must run in CI: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class Stack:
    """URLs and trace ids of the running stack."""

    def __init__(self, base_url: str, ids: dict[str, str], big_trace_id: str):
        self.base_url = base_url
        self.ids = ids
        self.big_trace_id = big_trace_id

    def api(self, path: str, **params):
        response = requests.get(f"{self.base_url}/api/v1{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()


def _serve(app, port):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="contrail-web", daemon=True)
    thread.start()
    return server, thread


@contextlib.contextmanager
def running_stack(workdir: Path):
    """Redis, a `contrail collector` process and the web app on a free port, all stopped on exit.

    Yields the Stack-to-be's pieces: (base_url, redis_url, database_url, collector, collector log path).
    """
    redis_server = RedisServer.launch()
    database_url = f"sqlite:///{workdir / 'contrail.db'}"
    env = {**os.environ, "CONTRAIL_REDIS_URL": redis_server.url, "CONTRAIL_DATABASE_URL": database_url,
           "CONTRAIL_QUIET_PERIOD": "0.5s", "CONTRAIL_DATA_DIR": str(workdir), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "contrail_cli", "collector"]
    log_path = workdir / "collector.log"
    log = open(log_path, "wb")
    collector = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(workdir))
    server = None
    try:
        from web.app import create_app

        app = create_app({"DATABASE_URL": database_url, "REDIS_URL": redis_server.url})
        port = free_port()
        server, _ = _serve(app, port)
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(f"{base_url}/healthz", timeout=2).ok, timeout=20, message="web app")
        yield base_url, redis_server.url, database_url, collector, log_path
    finally:
        if server is not None:
            server.shutdown()
        stop_process(collector)
        log.close()
        redis_server.destroy()


@pytest.fixture(scope="module")
def stack(chromium, tmp_path_factory):
    """Redis + `contrail collector` subprocess + the web app, with real collected traces."""
    workdir = tmp_path_factory.mktemp("dashboard-stack")
    with running_stack(workdir) as (base_url, redis_url, _, collector, log_path):
        ids = traffic.produce_small_traces(redis_url, str(workdir / "tracer"))
        big = traffic.produce_big_trace(redis_url)
        traffic.produce_bottleneck_history(redis_url)
        ids["odd"] = traffic.produce_odd_trace(redis_url, linked_trace_id=ids["ok"])
        stack = Stack(base_url, ids, big)

        def collected():
            assert collector.poll() is None, log_path.read_text()
            for trace_id in [*ids.values(), big]:
                if requests.get(f"{base_url}/api/v1/traces/{trace_id}", timeout=10).status_code != 200:
                    return False
            found = stack.api("/traces", lookback="1h", limit=50)
            return found["total"] >= len(ids) + 4 and all(t["span_count"] for t in found["traces"])

        wait_until(collected, timeout=90, interval=0.5, message="the collector to store and finalize all traces")
        wait_until(lambda: stack.api(f"/traces/{big}")["summary"]["span_count"] == traffic.BIG_TRACE_SPANS,
                   timeout=60, interval=0.5, message="the 10k-span trace to be finalized")
        wait_until(lambda: len(stack.api("/ai/bottlenecks")["bottlenecks"]) >= 2, timeout=60, interval=0.5,
                   message="the billing statistics to show two bottleneck hints")
        yield stack


class ConsoleWatch:
    """Browser console errors and uncaught page errors seen by one page."""

    def __init__(self, page):
        self.errors: list[str] = []
        page.on("console", lambda message: self.errors.append(f"console.{message.type}: {message.text}")
                if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))

    def assert_clean(self):
        assert self.errors == [], "browser console errors:\n" + "\n".join(self.errors)


@contextlib.contextmanager
def watched_page(chromium, base_url: str, height: int = 900, timeout_ms: int = 15000, clipboard: bool = False):
    """A page of a fresh browser context on ``base_url`` whose console errors are collected (``page.console``).

    bypass_csp: Playwright's wait_for_function evaluates its string with eval, which the dashboard's
    Content-Security-Policy forbids; test_security.py drives the pages with the policy enforced.
    """
    context = chromium.new_context(viewport={"width": 1440, "height": height}, base_url=base_url, bypass_csp=True)
    if clipboard:
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    page.console = ConsoleWatch(page)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def page(chromium, stack):
    with watched_page(chromium, stack.base_url, clipboard=True) as page:
        yield page


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def check_doc_image(shot: str, doc_name: str, produced_by: str) -> None:
    """``docs/images/dashboard-<doc_name>.png`` is a page-sized screenshot; with CONTRAIL_UPDATE_DOC_IMAGES=1 it is
    first refreshed from this run's screenshot ``shot`` (the suite rewrites tracked files only when asked)."""
    target = DOC_IMAGES / f"dashboard-{doc_name}.png"
    if os.environ.get("CONTRAIL_UPDATE_DOC_IMAGES") == "1":
        path = SCREENSHOTS / f"{shot}.png"
        if not path.exists():
            pytest.fail(f"{path} missing: run {produced_by} in the same run to produce the screenshots")
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", target
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1000 and height >= 600, (target, width, height)  # a page, not a thumbnail
    assert len(data) < 400_000, target
