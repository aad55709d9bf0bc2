"""docs/configuration.md is generated from the roles' settings and must stay in sync with them."""

from __future__ import annotations

import re
import subprocess
import sys

from collector_worker.settings import CollectorSettings
from tests.deploy.conftest import ROOT
from tracer.settings import TracerSettings
from tracer.settings_base import documented_options
from web.settings import WebSettings

ROLES = {"tracer": TracerSettings, "collector": CollectorSettings, "web": WebSettings}
# A value each variable's parser accepts: the first of these that parses.
SAMPLE_VALUES = ("1", "redis", "stored", "INFO", "a=b")


def test_configuration_doc_is_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_config_doc.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_setting_and_variable_is_documented():
    text = (ROOT / "docs" / "configuration.md").read_text()
    for field, variables, _help, _default in documented_options(WebSettings):
        assert f"`{field}`" in text
        for variable in variables.split(","):
            assert f"`{variable.strip()}`" in text


def documented_readers() -> dict[str, set[str]]:
    """Variable -> the roles the reference says read it (the "Read by:" line of its section)."""
    readers: dict[str, set[str]] = {}
    roles: set[str] | None = None
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        if line.startswith("## "):
            roles = None
        elif line.startswith("Read by: "):
            roles = {role.strip() for role in line[len("Read by: "):].split("(")[0].split(",")}
        elif line.startswith("| `") and roles is not None:
            for variable in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]):
                readers[variable] = roles
    return readers


def sample_value(variable: str) -> str:
    """A value of ``variable`` its setting's parser accepts."""
    for option in WebSettings.options().values():
        for name, parse in ((option.env, option.parse),) + option.aliases:
            if name == variable:
                for value in SAMPLE_VALUES:
                    try:
                        parse(value)
                    except (TypeError, ValueError):
                        continue
                    return value
    raise AssertionError(f"no sample value parses for {variable}")


def test_each_documented_variable_is_read_by_exactly_the_roles_the_doc_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no config file
    readers = documented_readers()
    variables = {v.strip() for _f, names, _h, _d in documented_options(WebSettings) for v in names.split(",")}
    assert set(readers) == variables, "every variable of the reference sits under a 'Read by:' line"
    for variable, roles in sorted(readers.items()):
        assert roles <= set(ROLES), (variable, roles)
        value = sample_value(variable)
        for role, settings_class in ROLES.items():
            _settings, sources = settings_class.load_with_sources(env={variable: value})
            read = f"env {variable}" in sources.values()
            assert read == (role in roles), f"{variable}: read by {role} is {read}, the reference says {roles}"

