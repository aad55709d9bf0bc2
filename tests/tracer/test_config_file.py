"""contrail.toml / [tool.contrail]: where it is found, precedence kwargs > env > file > defaults, clear errors."""

from __future__ import annotations

import pytest

from tracer.config_file import ConfigFileError
from tracer.settings import TracerSettings
from web.settings import WebSettings

FILE = """
[tracer]
service_name = "from-file"
sample_rate = 0.25
exporters = ["redis", "console"]
redis_url = "redis://file-host:6379/0"

[collector]
quiet_period = "5s"
span_event_count_limit = 64
redis_url = "redis://file-host:6379/0"

[web]
web_port = 9000
"""


@pytest.fixture
def in_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_precedence_kwargs_then_env_then_file_then_defaults(in_project):
    (in_project / "contrail.toml").write_text(FILE)
    settings, sources = WebSettings.load_with_sources(
        env={"CONTRAIL_SAMPLE_RATE": "0.5", "OTEL_SERVICE_NAME": "from-otel-env"}, web_port=9100)
    path = str(in_project / "contrail.toml")
    assert (settings.web_port, sources["web_port"]) == (9100, "kwarg")
    assert (settings.sample_rate, sources["sample_rate"]) == (0.5, "env CONTRAIL_SAMPLE_RATE")
    assert (settings.service_name, sources["service_name"]) == ("from-otel-env", "env OTEL_SERVICE_NAME")
    assert (settings.quiet_period, sources["quiet_period"]) == (5.0, f"file {path} [collector]")
    assert (settings.exporters, sources["exporters"]) == (("redis", "console"), f"file {path} [tracer]")
    assert settings.span_event_count_limit == 64 and settings.redis_url == "redis://file-host:6379/0"
    assert (settings.retention, sources["retention"]) == (7 * 86400.0, "default")


def test_pyproject_tool_contrail_and_contrail_config_path(in_project, tmp_path_factory):
    (in_project / "pyproject.toml").write_text('[project]\nname = "app"\n\n[tool.contrail.tracer]\nsample_rate = 0.1\n')
    settings, sources = TracerSettings.load_with_sources(env={})
    assert settings.sample_rate == 0.1 and sources["sample_rate"].endswith("pyproject.toml [tool.contrail.tracer]")
    (in_project / "contrail.toml").write_text("[tracer]\nsample_rate = 0.2\n")  # contrail.toml comes first
    assert TracerSettings.load(env={}).sample_rate == 0.2
    elsewhere = tmp_path_factory.mktemp("etc") / "shared.toml"
    elsewhere.write_text("[tracer]\nsample_rate = 0.3\n")
    assert TracerSettings.load(env={"CONTRAIL_CONFIG": str(elsewhere)}).sample_rate == 0.3
    with pytest.raises(ConfigFileError, match="CONTRAIL_CONFIG=.*missing.toml: no such file"):
        TracerSettings.load(env={"CONTRAIL_CONFIG": str(in_project / "missing.toml")})


def test_a_pyproject_without_tool_contrail_is_no_config(in_project):
    (in_project / "pyproject.toml").write_text('[project]\nname = "app"\n')
    assert TracerSettings.load_with_sources(env={})[1]["sample_rate"] == "default"


@pytest.mark.parametrize("text, message", [
    ("[tracer]\nsampel_rate = 0.5\n", r"unknown key 'sampel_rate' in \[tracer\]"),
    ("[tracing]\nsample_rate = 0.5\n", r"unknown section or key 'tracing'"),
    ("sample_rate = 0.5\n", r"unknown section or key 'sample_rate'"),
    ("[tracer]\nquiet_period = 1\n", r"key 'quiet_period' belongs in \[collector\], not \[tracer\]"),
    ("[tracer]\nstream = 'a'\n[web]\nstream = 'b'\n", r"'stream' is set twice"),
    ("[tracer]\nsample_rate = 2\n", r"\[tracer\] sample_rate: invalid ratio"),
    ("[tracer\n", r"contrail.toml: "),
])
def test_mistakes_name_the_file_and_the_key(in_project, text, message):
    (in_project / "contrail.toml").write_text(text)
    with pytest.raises(ValueError, match=message) as raised:
        WebSettings.load(env={})
    assert str(in_project / "contrail.toml") in str(raised.value)


def test_tracing_manager_reads_the_file(in_project, make_manager):
    (in_project / "contrail.toml").write_text('[tracer]\nservice_name = "from-file"\nrecord_return_value = true\n')
    tracing = make_manager(service_name=None)
    assert tracing.service_name == "from-file" and tracing.settings.record_return_value is True
