"""The wheel (what `pip install contrail-tracing` and the image install) carries every file the packages
need, and the dashboard is served from the installed wheel, not from this source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.deploy.conftest import ROOT

PACKAGES = ("tracer", "collector_worker", "web", "contrail_cli", "contrail_demo")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Built from a copy of the sources (an in-tree build would leave build/ in the checkout)."""
    source = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(out), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("contrail_tracing-*.whl")
    return path


def package_files() -> set[str]:
    files = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.add(str(path.relative_to(ROOT)))
    return files


def test_wheel_holds_every_package_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(package_files() - names)
    assert not missing, f"the wheel leaves out {missing}"
    assert any(n.startswith("web/templates/") for n in names) and any(n.startswith("web/static/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "contrail = contrail_cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_serves_the_dashboard(wheel, tmp_path):
    target = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                             str(wheel)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    script = f"""
import web, tracer, collector_worker, contrail_cli, contrail_demo
for module in (web, tracer, collector_worker, contrail_cli, contrail_demo):
    assert module.__file__.startswith({str(target)!r}), module.__file__
from web import create_app
from web.settings import WebSettings
app = create_app(settings=WebSettings.load(env={{}}, data_dir={str(tmp_path)!r}))
client = app.test_client()
for path in ("/", "/trace/{'ab' * 16}", "/services", "/ai", "/compare", "/assets/api.js", "/assets/contrail.css",
             "/assets/vendor/plotly.min.js", "/favicon.ico", "/api/v1/openapi.json", "/api/v1/traces"):
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
assert b"trace.js" in client.get("/trace/{'ab' * 16}").data
print("served")
"""
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("CONTRAIL_DATABASE_URL", None)
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0 and "served" in run.stdout, run.stderr
