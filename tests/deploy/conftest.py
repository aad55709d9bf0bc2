"""Helpers for checking deploy files against the project: commands, settings, routes."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from contrail_cli.main import COMMANDS, cli
from tracer.settings_base import documented_options
from web.settings import WebSettings

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
CONTRAIL_IMAGE = "contrail:local"


def setting_variables() -> set[str]:
    names = set()
    for _field, variables, _help, _default in documented_options(WebSettings):
        names.update(v.strip() for v in variables.split(","))
    return names


def contrail_command(name: str) -> click.Command:
    assert name in COMMANDS, f"'contrail {name}' is not a contrail subcommand ({sorted(COMMANDS)})"
    ctx = click.Context(cli)
    command = cli.get_command(ctx, name)
    assert command is not None
    return command


def check_contrail_argv(argv: list[str]) -> None:
    """``contrail <sub> [options]``: the subcommand exists and accepts each option given."""
    command = contrail_command(argv[1])
    known = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for word in argv[2:]:
        if word.startswith("-"):
            assert word.split("=")[0] in known, f"'contrail {argv[1]}' has no option {word} (has {sorted(known)})"


def resolve_object(target: str):
    """``module:attr`` or ``module:factory()`` → the object (factory called)."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    if not attr:
        return module
    call = attr.endswith("()")
    obj = getattr(module, attr[:-2] if call else attr)
    return obj() if call else obj


def check_argv(argv: list[str]) -> str:
    """Check any container command against the project; return what kind of command it is."""
    program = argv[0]
    if program == "contrail":
        check_contrail_argv(argv)
        return "contrail"
    if program == "python":
        assert argv[1] == "-m", argv
        spec = importlib.util.find_spec(argv[2])
        assert spec is not None, f"no module {argv[2]}"
        return "python"
    if program == "gunicorn":
        app = resolve_object(argv[-1])
        assert callable(app), f"{argv[-1]} is not a WSGI application"
        return "gunicorn"
    if program == "celery":
        target = argv[argv.index("-A") + 1]
        app = resolve_object(target)
        assert app.__class__.__name__ == "Celery", f"{target} is not a Celery app"
        queues = argv[argv.index("--queues") + 1].split(",")
        routed = {route["queue"] for route in (app.conf.task_routes or {}).values()}
        assert set(queues) <= routed, f"worker queues {queues} not routed to by {target} ({routed})"
        return "celery"
    raise AssertionError(f"unknown program {program!r} in {argv}")


HEALTH_URL = re.compile(r"http://127\.0\.0\.1:(\d+)(/[\w/]*)")


def health_urls(test) -> list[tuple[int, str]]:
    text = " ".join(test) if isinstance(test, list) else str(test)
    return [(int(port), path) for port, path in HEALTH_URL.findall(text)]


def bind_port(argv: list[str]) -> int | None:
    """The port a command serves on, from --port N or --bind host:N."""
    for flag in ("--port", "--bind"):
        if flag in argv:
            return int(argv[argv.index(flag) + 1].rsplit(":", 1)[-1])
    return None


def routes_of(app) -> set[str]:
    return {rule.rule for rule in app.url_map.iter_rules()}


@pytest.fixture(scope="module")
def web_routes(tmp_path_factory):
    from web import create_app

    tmp = tmp_path_factory.mktemp("web")
    settings = WebSettings.load(env={}, database_url=f"sqlite:///{tmp / 'c.db'}", data_dir=str(tmp))
    return routes_of(create_app(settings=settings))


def load_yaml_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def split_shell(command) -> list[str]:
    return command if isinstance(command, list) else shlex.split(command)


@pytest.fixture(autouse=True)
def tracing_off(monkeypatch):
    """Building the demo apps to read their routes must not export spans anywhere."""
    monkeypatch.setenv("CONTRAIL_ENABLED", "false")
