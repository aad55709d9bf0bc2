"""Run the tracer's tests against the lowest and the highest OpenTelemetry releases pyproject.toml allows.

A traced service brings its own OpenTelemetry: pyproject.toml accepts any
``opentelemetry-api``/``-sdk`` from its ``>=`` bound on, while the main suite
runs the versions deploy/requirements.lock pins. The tracer reads a few SDK
internals (tracer/otel_internals.py, each with a public fallback), so both
ends of the range are tested:

* ``lowest``: every ``opentelemetry-*`` requirement of the installed extras
  pinned to its ``>=`` bound, read from pyproject.toml (the api, sdk, proto
  and exporter bounds are one release, the instrumentations' bounds the
  release made with it, so the pins resolve together). The other
  dependencies resolve freely, to what those pins allow.
* ``highest``: nothing pinned: the newest releases on the index that resolve
  together (an instrumentation release pins the api release it was made with;
  the run says when a newer api or sdk is on the index).

Each range gets a fresh virtualenv (``.venv-sdk-<range>/``, ignored by git)
with ``contrail-tracing[all,otlp]`` and the test tools of the ``dev`` extra
that these tests use, prints the resolved versions and which internals
otel_internals uses with them, and runs the tests with pytest-xdist
(``CONTRAIL_TEST_WORKERS`` workers, 4 by default, as scripts/test.sh):

    python scripts/test_sdk_range.py                  # both ranges, the tracer tests
    python scripts/test_sdk_range.py lowest -- tests/tracer/test_otel_internals.py   # other pytest arguments

The tests are the tracer's: tests/tracer, the Celery integration (tests/celery,
whose handlers use the span factory), tracer.ai's helpers, the settings codec
and the import contract. The collector, web, CLI, browser and end-to-end suites are left to
the main suite: they test the server side, whose only OpenTelemetry package
is opentelemetry-proto. tests/tracer's OTLP tests send to Contrail's own
receiver, which is why the ``all`` extra (the web stack) is installed.
Exits non-zero when any range fails to install or to pass.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "contrail-tracing"
RANGES = ("lowest", "highest")
EXTRAS = ("all", "otlp")
# the dev extra's tools that the tests below import (the rest serve the browser, AI and web suites)
TEST_TOOLS = ("pytest", "pytest-xdist", "pytest-timeout", "hypothesis", "flask-sock", "simple-websocket")
TESTS = ("tests/tracer", "tests/celery", "tests/ai/test_helpers.py", "tests/test_import_contract.py",
         "tests/test_settings_codec.py")
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*([^;]*?)\s*(?:;.*)?$")
REPORT_INTERNALS = """
import tracer.otel_internals as o
from opentelemetry.sdk.trace import TracerProvider
factory = o.SpanFactory(TracerProvider().get_tracer("probe"))
print(", ".join(f"{name} {'yes' if on else 'no (public path)'}" for name, on in (
    ("context keys", o.CONTEXT_KEYS), ("SpanContext tuple", o.DIRECT_SPAN_CONTEXT), ("span fields", o.SPAN_FIELDS),
    ("direct reads", o.READ_DIRECT), ("span factory", factory.usable))))
"""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def same_version(a: str, b: str) -> bool:
    """Whether two version strings name one release (``1.27`` is ``1.27.0``)."""
    def key(version: str) -> tuple[tuple[int, ...], str]:
        release, rest = re.match(r"(\d+(?:\.\d+)*)(.*)", version).groups()
        numbers = [int(part) for part in release.split(".")]
        while len(numbers) > 1 and numbers[-1] == 0:
            numbers.pop()
        return tuple(numbers), rest.lower()
    return key(a) == key(b)


def parse(requirement: str) -> tuple[str, list[str], str]:
    """(normalized name, extras, specifier) of a plain PEP 508 requirement string."""
    match = REQUIREMENT.match(requirement)
    if not match:
        raise SystemExit(f"pyproject.toml: cannot read requirement {requirement!r}")
    name, extras, specifier = match.groups()
    return normalize(name), [e.strip() for e in (extras or "").split(",") if e.strip()], specifier.replace(" ", "")


def requirements(project: dict, extras: tuple[str, ...]) -> list[str]:
    """The project's dependencies and those of ``extras``, its own ``contrail-tracing[...]`` extras expanded."""
    optional = project.get("optional-dependencies", {})
    found, seen, todo = list(project["dependencies"]), set(), list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in optional[extra]:
            name, inner, _ = parse(text)
            if name == PROJECT:
                todo.extend(inner)
            else:
                found.append(text)
    return found


def lowest_pins(project: dict) -> dict[str, str]:
    """``{name: lower bound}`` of every opentelemetry-* requirement of the installed extras."""
    pins: dict[str, str] = {}
    for text in requirements(project, EXTRAS):
        name, _, specifier = parse(text)
        if not name.startswith("opentelemetry-"):
            continue
        bounds = [part[2:] for part in specifier.split(",") if part.startswith(">=")]
        if len(bounds) != 1:
            raise SystemExit(f"pyproject.toml: {text!r} has no single >= bound to test as the lowest version")
        if pins.get(name, bounds[0]) != bounds[0]:
            raise SystemExit(f"pyproject.toml: {name} has two lower bounds, {pins[name]} and {bounds[0]}")
        pins[name] = bounds[0]
    return pins


def test_tools(project: dict) -> list[str]:
    """The TEST_TOOLS requirements, as the dev extra states them."""
    wanted = {normalize(tool) for tool in TEST_TOOLS}
    tools = [text for text in project["optional-dependencies"]["dev"] if parse(text)[0] in wanted]
    missing = wanted - {parse(text)[0] for text in tools}
    if missing:
        raise SystemExit(f"pyproject.toml: the dev extra lacks {sorted(missing)}")
    return tools


def base_python() -> str:
    """The interpreter the virtualenvs are made from: $PYTHON, else python3.11 (as scripts/venv.sh), else this one."""
    return os.environ.get("PYTHON") or shutil.which("python3.11") or sys.executable


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, **kwargs)


def install(which: str, venv: Path, project: dict) -> bool:
    """A fresh virtualenv with Contrail and the test tools at the range's OpenTelemetry versions."""
    shutil.rmtree(venv, ignore_errors=True)
    if run([base_python(), "-m", "venv", str(venv)]).returncode:
        return False
    python = str(venv / "bin" / "python")
    if run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"]).returncode:
        return False
    command = [python, "-m", "pip", "install", "--quiet", "--upgrade", "-e", f".[{','.join(EXTRAS)}]",
               *test_tools(project)]
    if which == "highest":
        return run(command).returncode == 0
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="sdk-lowest-") as constraints:
        constraints.write("".join(f"{name}=={version}\n" for name, version in sorted(lowest_pins(project).items())))
        constraints.flush()
        return run([*command, "-c", constraints.name]).returncode == 0


def report_versions(which: str, venv: Path, project: dict) -> bool:
    """Print the OpenTelemetry (and protobuf) versions installed and the internals used; check the lowest pins."""
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    versions = {normalize(item["name"]): item["version"] for item in json.loads(listed)}
    shown = sorted(name for name in versions if name.startswith("opentelemetry-") or name == "protobuf")
    for name in shown:
        print(f"[{which}] {name}=={versions[name]}")
    internals = subprocess.run([str(venv / "bin" / "python"), "-c", REPORT_INTERNALS], cwd=ROOT,
                               capture_output=True, text=True)
    print(f"[{which}] otel_internals: {internals.stdout.strip() or internals.stderr.strip()}", flush=True)
    if which == "highest":
        for name in ("opentelemetry-api", "opentelemetry-sdk"):
            newest = newest_on_index(venv, name)
            if newest and not same_version(newest, versions.get(name, "0")):
                print(f"[{which}] {name} {newest} is on the index but does not resolve with the other packages")
    if which == "lowest":
        wrong = {name: versions.get(name) for name, version in lowest_pins(project).items()
                 if not same_version(versions.get(name, "0"), version)}
        if wrong:
            print(f"[{which}] not at the lower bound: {wrong}", file=sys.stderr)
            return False
    return internals.returncode == 0


def newest_on_index(venv: Path, name: str) -> str | None:
    """The newest release of ``name`` the index offers (``pip index versions``), or None when pip cannot say."""
    shown = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "index", "versions", name], cwd=ROOT,
                           capture_output=True, text=True).stdout
    match = re.match(r"\S+ \(([^)]+)\)", shown)
    return match.group(1) if match else None


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv, pytest_args = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    else:
        pytest_args = list(TESTS)
    unknown = [word for word in argv if word not in RANGES]
    if unknown:
        print(f"usage: test_sdk_range.py [{'|'.join(RANGES)} ...] [-- pytest arguments]; not {unknown}",
              file=sys.stderr)
        return 2
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    workers = os.environ.get("CONTRAIL_TEST_WORKERS", "4")
    results = []
    for which in argv or RANGES:
        venv = ROOT / f".venv-sdk-{which}"
        started = time.monotonic()
        ok = install(which, venv, project) and report_versions(which, venv, project)
        installed = time.monotonic() - started
        if ok:
            tests = run([str(venv / "bin" / "python"), "-m", "pytest", "-n", workers, "--dist", "loadgroup",
                         "-p", "no:cacheprovider", *pytest_args], env=env)
            ok = tests.returncode == 0
        results.append((which, ok, installed, time.monotonic() - started - installed))
    for which, ok, installed, tested in results:
        print(f"[{which}] {'passed' if ok else 'FAILED'}: install {installed:.0f} s, tests {tested:.0f} s")
    return 0 if all(ok for _, ok, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
