"""How every Contrail role reads its settings; the fields themselves live with the role.

A role's settings are a dataclass of :class:`RoleSettings` whose fields carry
an :class:`Option` (made with :func:`setting`): the tracer's in
:mod:`tracer.settings`, the collector's (which extend the tracer's) in
``collector_worker/settings.py``, the web app's (which extend the
collector's) in ``web/settings.py``. Values come from keyword arguments, then
``CONTRAIL_*`` environment variables, then the standard OpenTelemetry
variables where one applies (and the original notes' ``JAEGER_*`` /
``SERVICE_NAME`` names last), then the config file (``contrail.toml``, see
:mod:`tracer.config_file`), then defaults. A role reads only its own fields,
so a traced service never carries the collector's or the web app's.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Mapping
from urllib.parse import urlsplit, urlunsplit

from .units import parse_duration

# --------------------------------------------------------------------------- parsers


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"invalid boolean {value!r}: use true or false")


def ratio(value: Any) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"invalid ratio {value!r}: must be between 0 and 1")
    return number


def positive_int(value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"invalid value {value!r}: must be a positive integer")
    return number


def port_or_off(value: Any) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"invalid port {value!r}: must be 1-65535, or 0 for off")
    return number


def seconds(value: Any) -> float:
    return parse_duration(value)


def positive_seconds(value: Any) -> float:
    parsed = parse_duration(value)
    if parsed <= 0:
        raise ValueError(f"invalid duration {value!r}: must be more than 0")
    return parsed


def millis_as_seconds(value: Any) -> float:
    """OTEL_BSP_* durations are plain milliseconds."""
    return parse_duration(value, default_unit="ms")


def optional_str(value: Any) -> str | None:
    text = str(value).strip()
    return text or None


def headers(value: Any) -> tuple:
    """'k=v,k2=v2' (OTEL_EXPORTER_OTLP_HEADERS' format: values percent-encoded), a mapping or pairs, as pairs."""
    from urllib.parse import unquote

    if isinstance(value, Mapping):
        items = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(str(k), str(v)) for k, v in value]
    else:
        items = []
        for part in str(value).split(","):
            if not part.strip():
                continue
            key, sep, raw = part.partition("=")
            if not sep:
                raise ValueError(f"invalid header {part.strip()!r}: use key=value")
            items.append((unquote(key.strip()), unquote(raw.strip())))
    for key, header_value in items:
        if not key or any(c in key for c in " \t\r\n:") or any(c in header_value for c in "\r\n"):
            raise ValueError(f"invalid header name or value for {key!r}")
    return tuple(items)


DURATION_PARSERS = (seconds, positive_seconds, millis_as_seconds)  # defaults shown with a unit in the docs


# --------------------------------------------------------------------------- one setting


@dataclass(frozen=True)
class Option:
    """How one setting is read: its CONTRAIL_ variable, any OTel aliases, its parser; secrets are never shown."""

    env: str
    parse: Callable[[Any], Any]
    aliases: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
    help: str = ""
    secret: bool = False


def setting(env: str, parse: Callable[[Any], Any], help: str, *aliases: tuple[str, Callable[[Any], Any]],
            secret: bool = False) -> dict[str, Option]:
    """The field metadata of one setting: ``field(default=..., metadata=setting(...))``."""
    return {"option": Option(env=env, parse=parse, aliases=tuple(aliases), help=help, secret=secret)}


# --------------------------------------------------------------------------- a role's settings


@dataclass(repr=False)
class RoleSettings:
    """The loading, grouping and display every role's settings share; subclasses declare the fields.

    ``GROUP_STARTS`` lists (group, first field) in declaration order: the
    groups are the config file's sections (``tracer``, ``collector``,
    ``web``) and the reference's headings (``limits`` too). Subclasses must
    be declared with ``@dataclass(repr=False)`` to keep the masked repr.
    """

    GROUP_STARTS: ClassVar[tuple[tuple[str, str], ...]] = ()

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any):
        """Build settings from keyword overrides, then the environment, then the config file, then defaults.

        ``None`` overrides count as not given. A bad value raises ``ValueError``
        naming the variable (or file and key) it came from; a keyword this role
        has no setting for raises ``TypeError``.
        """
        return cls.load_with_sources(env, **overrides)[0]

    @classmethod
    def load_with_sources(cls, env: Mapping[str, str] | None = None, **overrides: Any):
        """Like :meth:`load`, and where each value came from: ``kwarg``, ``env NAME``, ``file PATH [section]``
        or ``default`` (shown by ``contrail doctor``)."""
        from .config_file import read_config

        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        options = cls.options()
        unknown = set(overrides) - set(options)
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        config = read_config(env, cls.setting_groups())
        for name, option in options.items():
            given = overrides.get(name)
            if given is not None:
                try:
                    values[name] = option.parse(given)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"setting {name}: {exc}") from None
                sources[name] = "kwarg"
                continue
            for var, parse in ((option.env, option.parse),) + option.aliases:
                raw = env.get(var)
                if raw is None or raw == "":
                    continue
                try:
                    values[name] = parse(raw)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{var}: {exc}") from None
                sources[name] = f"env {var}"
                break
        if ("sample_rate" in options and "sample_rate" not in values
                and env.get("OTEL_TRACES_SAMPLER") in ("always_off", "parentbased_always_off")):
            values["sample_rate"] = 0.0
            sources["sample_rate"] = "env OTEL_TRACES_SAMPLER"
        if config is not None:
            for name, (raw, where) in config.values.items():
                if name in values:
                    continue
                try:
                    values[name] = options[name].parse(raw)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{where} {name}: {exc}") from None
                sources[name] = where
        for name in set(options) - set(sources):
            sources[name] = "default"
        return cls(**values), sources

    @classmethod
    def options(cls) -> dict[str, Option]:
        """Setting name -> how it is read, in declaration order."""
        return {f.name: f.metadata["option"] for f in fields(cls)}

    @classmethod
    def setting_groups(cls) -> dict[str, list[str]]:
        """Group name -> this role's settings in it, in declaration order."""
        starts = dict((field_name, group) for group, field_name in cls.GROUP_STARTS)
        groups: dict[str, list[str]] = {group: [] for group, _ in cls.GROUP_STARTS}
        current = cls.GROUP_STARTS[0][0]
        for f in fields(cls):
            current = starts.get(f.name, current)
            groups[current].append(f.name)
        return groups

    def __repr__(self) -> str:
        """Like the dataclass repr, with tokens and URL passwords hidden: settings end up in logs and tracebacks."""
        options = self.options()
        shown = [f"{name}={_shown_value(name, option, getattr(self, name))!r}" for name, option in options.items()]
        return f"{type(self).__name__}({', '.join(shown)})"


def effective_settings(settings: RoleSettings, sources: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every setting with its value (tokens hidden, URL passwords masked) and where it came from."""
    return [{"name": name, "value": _shown_value(name, option, getattr(settings, name), joined=True),
             "source": sources.get(name, "default")} for name, option in settings.options().items()]


def _shown_value(name: str, option: Option, value: Any, joined: bool = False) -> Any:
    """A value safe to show: tokens hidden, URL passwords masked (settings end up in logs and tracebacks)."""
    if option.secret and value:
        return "***"
    if option.parse is headers:  # header names only: their values are credentials (authorization, api keys)
        shown = [f"{key}=***" for key, _ in value]
        return ",".join(shown) if joined else shown
    if name.endswith(("_url", "_endpoint")) and isinstance(value, str):
        return mask_url(value)
    if joined and isinstance(value, tuple):
        return ",".join(value)
    return value


def mask_url(url: str | None) -> str | None:
    """Hide the password in a URL so it can be shown or logged."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def documented_options(settings_class: type[RoleSettings]) -> list[tuple[str, str, str, Any]]:
    """(field, variables, help, default) for every setting of a role, for docs and deployment checks."""
    rows = []
    for f in fields(settings_class):
        option: Option = f.metadata["option"]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        variables = ", ".join([option.env] + [alias for alias, _ in option.aliases])
        rows.append((f.name, variables, option.help, default))
    return rows
