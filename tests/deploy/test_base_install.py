"""The tracer works with only the base dependencies: a fresh virtualenv, no extras, no system site-packages.

Every traced service installs ``contrail-tracing`` without extras, so the
tracer must import and export spans with exactly ``[project.dependencies]``
(pinned by deploy/requirements.lock) and nothing else: no celery, flask,
sqlalchemy, ... The virtualenv gets the project's wheel with ``--no-deps``
plus those dependencies from the package index; a span is then exported by a
script in that virtualenv to a private Redis and decoded here.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
import venv

from tests.conftest import unavailable
from tests.deploy.conftest import ROOT
from tests.deploy.test_wheel import wheel  # noqa: F401  (the fixture: the project's wheel, built once)

EXTRAS_ONLY = ("celery", "flask", "sqlalchemy", "alembic", "gunicorn", "psycopg", "rich", "grpc", "zstandard")

EXPORT_ONE_SPAN = """
import sys

from tracer import TracingManager

tracing = TracingManager(service_name="base-only")
with tracing.span("base-span", checked="yes"):
    pass
assert tracing.flush(10), "the span was not exported"
tracing.shutdown()
for name in {extras!r}:
    assert name not in sys.modules, name + " was imported"
"""


def base_dependencies() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]


def pip(python: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=600)


def test_tracer_exports_with_only_the_base_dependencies(wheel, tmp_path, redis_server):  # noqa: F811
    from tracer.codec import decode_entry

    home = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(home)
    python = str(home / "bin" / "python")
    installed = pip(python, "install", "-q", "-c", str(ROOT / "deploy" / "requirements.lock"), *base_dependencies())
    if installed.returncode != 0:
        reason = f"cannot install the base dependencies from the package index: {installed.stderr[-800:]}"
        unavailable(reason, reason)
    result = pip(python, "install", "-q", "--no-deps", str(wheel))
    assert result.returncode == 0, result.stderr
    listed = pip(python, "list", "--format=freeze").stdout.lower()
    for name in EXTRAS_ONLY:
        assert f"\n{name}==" not in f"\n{listed}", f"{name} is in the base install:\n{listed}"

    stream = f"contrail:base-install:{tmp_path.name}"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "CONTRAIL_REDIS_URL": redis_server.url,
           "CONTRAIL_STREAM": stream, "CONTRAIL_DATA_DIR": str(tmp_path / "data")}
    run = subprocess.run([python, "-c", EXPORT_ONE_SPAN.format(extras=EXTRAS_ONLY)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr

    client = redis_server.client()
    try:
        entries = client.xrange(stream)
    finally:
        client.close()
    spans = [span for _id, fields in entries for span in decode_entry(fields).spans]
    assert [(s["name"], s["service"], s["attributes"].get("checked")) for s in spans] == [
        ("base-span", "base-only", "yes")]
