"""The optional config file: ``contrail.toml`` or ``[tool.contrail]`` in ``pyproject.toml``.

Looked for in this order: the path in ``CONTRAIL_CONFIG`` (which must exist),
``./contrail.toml``, then a ``[tool.contrail]`` table in ``./pyproject.toml``.
The file has ``[tracer]``, ``[collector]`` and ``[web]`` sections whose keys
are setting names (``sample_rate = 0.5``). Tracer keys (Redis, stream, data
directory, ...) are read by every process, so they may appear in any section;
the ingest limits belong to ``[collector]`` or ``[web]``; collector and web keys
only to their own section. A key set in two sections must have one value.

One file serves every role, and each role knows only its own settings: a
process checks every key of the sections its role owns (the tracer
``[tracer]``; the collector also ``[collector]``; the web app all three) and
reads the keys it knows from the others, leaving their remaining keys to the
role that owns them. An unknown section, or an unknown key in an owned
section, is an error naming the key and the file, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from typing import Any, Mapping

SECTIONS = ("tracer", "collector", "web")
CONFIG_ENV = "CONTRAIL_CONFIG"


class ConfigFileError(ValueError):
    """The config file cannot be used; the message names the file and the key."""


@dataclass
class ConfigFile:
    path: str
    values: dict[str, tuple[Any, str]]  # setting -> (raw value, "file PATH [section]")


def find_config_file(env: Mapping[str, str], cwd: str | None = None) -> tuple[str, bool] | None:
    """(path, is_pyproject) of the file to read, or None when there is none."""
    named = env.get(CONFIG_ENV)
    if named:
        if not os.path.isfile(named):
            raise ConfigFileError(f"{CONFIG_ENV}={named}: no such file")
        return named, os.path.basename(named) == "pyproject.toml"
    cwd = cwd or os.getcwd()
    own = os.path.join(cwd, "contrail.toml")
    if os.path.isfile(own):
        return own, False
    pyproject = os.path.join(cwd, "pyproject.toml")
    if os.path.isfile(pyproject):
        return pyproject, True
    return None


def allowed_sections(groups: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """Setting name -> the sections it may appear in, from a role's groups (``RoleSettings.setting_groups()``)."""
    allowed: dict[str, frozenset[str]] = {}
    for name in groups.get("tracer", ()):
        allowed[name] = frozenset(SECTIONS)
    for name in groups.get("limits", ()):
        allowed[name] = frozenset({"collector", "web"})
    for group in ("collector", "web"):
        for name in groups.get(group, ()):
            allowed[name] = frozenset({group})
    return allowed


def read_config(env: Mapping[str, str], groups: Mapping[str, Any],
                cwd: str | None = None) -> ConfigFile | None:
    """The settings in the config file, validated; None when there is no file (or no [tool.contrail])."""
    found = find_config_file(env, cwd)
    if found is None:
        return None
    path, is_pyproject = found
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigFileError(f"{path}: {exc}") from None
    if is_pyproject:
        table = document.get("tool", {}).get("contrail")
        if table is None:
            return None if not env.get(CONFIG_ENV) else ConfigFile(path, {})
        prefix = "[tool.contrail."
    else:
        table = document
        prefix = "["
    return ConfigFile(path, _settings_in(table, path, prefix, groups))


def _settings_in(table: Mapping[str, Any], path: str, prefix: str,
                 groups: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    allowed = allowed_sections(groups)
    owned = {section for section in SECTIONS if section in groups}  # the role checks every key of these
    values: dict[str, tuple[Any, str]] = {}
    for section, body in table.items():
        if section not in SECTIONS or not isinstance(body, Mapping):
            raise ConfigFileError(f"{path}: unknown section or key {section!r}: settings go under "
                                  f"{', '.join(prefix + s + ']' for s in SECTIONS)}")
        for key, raw in body.items():
            where = f"{prefix}{section}]"
            if key not in allowed:
                if section not in owned:
                    continue  # another role's setting: that role reads and checks it
                raise ConfigFileError(f"{path}: unknown key {key!r} in {where} (see docs/configuration.md)")
            if section not in allowed[key]:
                homes = " or ".join(prefix + s + "]" for s in SECTIONS if s in allowed[key])
                raise ConfigFileError(f"{path}: key {key!r} belongs in {homes}, not {where}")
            if key in values and values[key][0] != raw:
                raise ConfigFileError(f"{path}: {key!r} is set twice with different values ({values[key][1]} "
                                      f"and {where})")
            values[key] = (raw, f"file {path} {where}")
    return values
