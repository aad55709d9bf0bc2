"""Every `contrail ...` command line and CONTRAIL_* variable the docs show exists, with the options shown."""

from __future__ import annotations

import re
import shlex

import click
import pytest

from contrail_cli.main import cli
from tests.deploy.conftest import ROOT, setting_variables

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "deploy").rglob("*.md"))]
COMMAND = re.compile(r"(?:^|[`\s$;(])(contrail [a-z][^`\n#|]*)")
NOT_SETTINGS = {"CONTRAIL_UPDATE_DOC_IMAGES",  # read by the test suite, not by Contrail
                "CONTRAIL_CONFIG"}  # where the config file is, read before the settings (tracer/config_file.py)


def command_lines(document) -> list[str]:
    lines = []
    for match in COMMAND.finditer(document.read_text()):
        text = match.group(1).rstrip("\\ ").strip()
        if text.split()[1] in ("create", "exec"):  # `kubectl -n contrail create|exec ...`: the namespace
            continue
        for alternative in text.split()[1].split("/"):  # `contrail traces/services/stats/deps`
            lines.append(" ".join(["contrail", alternative, *text.split()[2:]]))
    return lines


def resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    """The (sub)command a `contrail ...` line runs and the words after it."""
    command, rest = cli, words[1:]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        if sub is None:
            if command is cli:
                raise AssertionError(f"'contrail {rest[0]}' is not a command")
            break  # an argument of the group, as in `contrail traces <id>`
        command, rest = sub, rest[1:]
    return command, rest


def options_of(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]}


def check_line(line: str) -> None:
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    command, rest = resolve(words)
    known = options_of(command) | {"--help", "-h"}
    for word in rest:
        if word.startswith("-") and word not in ("-", "--", "…") and not word.startswith("---"):
            option = word.split("=")[0]
            assert option in known, f"`{line}`: {command.name} has no option {option} ({sorted(known)})"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_commands_and_options_exist(document):
    for line in command_lines(document):
        check_line(line)


def test_the_check_sees_commands_and_bad_options():
    assert "contrail cleanup --retention 3d" in command_lines(ROOT / "docs" / "operations.md")
    command, rest = resolve(["contrail", "traces", "list", "--service", "x"])
    assert command.name == "list" and "--service" in options_of(command)
    with pytest.raises(AssertionError):
        resolve(["contrail", "no-such-command"])
    check_line("contrail up --host 0.0.0.0 --insecure")
    with pytest.raises(AssertionError, match="no option --no-such-flag"):
        check_line("contrail collector --no-such-flag 3")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_variables_are_settings(document):
    known = setting_variables() | NOT_SETTINGS
    unknown = set(re.findall(r"\bCONTRAIL_[A-Z0-9_]+", document.read_text())) - known
    assert not unknown, f"{document.name} names variables that are no setting: {sorted(unknown)}"
