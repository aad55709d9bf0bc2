"""Each role reads only its own settings: the tracer none of the collector's or the web app's."""

from __future__ import annotations

import dataclasses

import pytest

from collector_worker.settings import CollectorSettings
from tracer import TracingManager
from tracer.config_file import ConfigFileError
from tracer.settings import TracerSettings
from web.settings import WebSettings

DATABASE_AND_WEB = {"database_url", "db_pool_size", "consumer_group", "consumer_name", "retention", "price_table",
                    "forward_endpoint", "span_event_count_limit", "trace_span_limit",
                    "web_host", "web_port", "web_workers", "otlp_grpc_port", "api_token", "read_token",
                    "ingest_token", "max_body_bytes", "web_allowed_hosts"}
WEB_ONLY = {"web_host", "web_port", "web_workers", "web_threads", "otlp_grpc_port", "prometheus_app_metrics",
            "api_token", "read_token", "ingest_token", "max_body_bytes", "body_read_timeout", "web_allowed_hosts"}


def names(settings_class) -> set[str]:
    return {f.name for f in dataclasses.fields(settings_class)}


@pytest.fixture(autouse=True)
def no_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_tracer_settings_have_no_database_or_web_fields():
    settings = TracerSettings.load(env={"CONTRAIL_DATABASE_URL": "sqlite:///x.db", "CONTRAIL_WEB_PORT": "9999"})
    assert names(TracerSettings) & DATABASE_AND_WEB == set()
    assert not hasattr(settings, "database_url") and not hasattr(settings, "resolved_database_url")
    assert "database" not in repr(settings) and "web_port" not in repr(settings)
    assert names(CollectorSettings) & WEB_ONLY == set()
    assert names(TracerSettings) < names(CollectorSettings) < names(WebSettings)  # each role extends the one below


@pytest.mark.parametrize("settings_class, keyword", [
    (TracerSettings, "database_url"), (TracerSettings, "web_port"), (TracerSettings, "span_event_count_limit"),
    (CollectorSettings, "web_port"), (CollectorSettings, "api_token"), (WebSettings, "db_url"),
])
def test_a_keyword_of_another_role_is_an_unknown_setting(settings_class, keyword):
    with pytest.raises(TypeError, match=f"unknown setting\\(s\\): {keyword}"):
        settings_class.load(env={}, **{keyword: "1"})


@pytest.mark.filterwarnings("ignore:.*original name:UserWarning")
def test_tracing_manager_rejects_collector_settings_and_keeps_the_original_names():
    with pytest.raises(TypeError, match=r"unknown setting\(s\): db_url"):
        TracingManager(service_name="svc", enabled=False, db_url="sqlite:///x.db")
    with pytest.raises(TypeError, match=r"unknown setting\(s\): database_url"):
        TracingManager(service_name="svc", enabled=False, database_url="sqlite:///x.db")
    assert TracingManager(service_name="svc", enable_tracing=False).enabled is False
    manager = TracingManager(service_name="svc", enabled=False, jaeger_host="jaeger.local")
    assert manager.settings.jaeger_host == "jaeger.local"


FILE = """
[tracer]
redis_url = "redis://from-file:6379/0"

[collector]
quiet_period = "5s"
stream = "from-collector-section"

[web]
web_port = 9000
max_body_bytes = "1mb"
"""


def test_one_config_file_serves_every_role(no_config_file):
    (no_config_file / "contrail.toml").write_text(FILE)
    tracer = TracerSettings.load(env={})
    assert (tracer.redis_url, tracer.stream) == ("redis://from-file:6379/0", "from-collector-section")
    collector = CollectorSettings.load(env={})
    assert (collector.quiet_period, collector.stream) == (5.0, "from-collector-section")
    web = WebSettings.load(env={})
    assert (web.web_port, web.max_body_bytes, web.quiet_period) == (9000, 1024 * 1024, 5.0)


@pytest.mark.parametrize("text, settings_class, message", [
    # a role checks every key of the sections it owns
    ("[tracer]\nsampel_rate = 0.5\n", TracerSettings, r"unknown key 'sampel_rate' in \[tracer\]"),
    ("[tracer]\ndatabase_url = 'x'\n", TracerSettings, r"unknown key 'database_url' in \[tracer\]"),
    ("[tracer]\ndatabase_url = 'x'\n", CollectorSettings,
     r"key 'database_url' belongs in \[collector\], not \[tracer\]"),
    ("[collector]\nquiet_perod = 1\n", CollectorSettings, r"unknown key 'quiet_perod' in \[collector\]"),
    ("[collector]\nweb_port = 1\n", CollectorSettings, r"unknown key 'web_port' in \[collector\]"),
    ("[collector]\nweb_port = 1\n", WebSettings, r"key 'web_port' belongs in \[web\], not \[collector\]"),
    ("[web]\nweb_prot = 1\n", WebSettings, r"unknown key 'web_prot' in \[web\]"),
    # every role checks the sections' names, and the tracer keys (and bad values) wherever they are
    ("[tracing]\nsample_rate = 0.5\n", TracerSettings, r"unknown section or key 'tracing'"),
    ("[web]\nsample_rate = 2\n", TracerSettings, r"\[web\] sample_rate: invalid ratio"),
    ("[tracer]\nstream = 'a'\n[web]\nstream = 'b'\n", TracerSettings, r"'stream' is set twice"),
    ("[web]\nquiet_period = 1\n", CollectorSettings, r"key 'quiet_period' belongs in \[collector\], not \[web\]"),
])
def test_unknown_keys_are_rejected_per_role(no_config_file, text, settings_class, message):
    (no_config_file / "contrail.toml").write_text(text)
    with pytest.raises(ConfigFileError if "invalid" not in message else ValueError, match=message) as raised:
        settings_class.load(env={})
    assert str(no_config_file / "contrail.toml") in str(raised.value)


@pytest.mark.parametrize("text, settings_class", [
    ("[collector]\nquiet_perod = 1\n", TracerSettings),  # the collector's section: the collector checks it
    ("[web]\nweb_prot = 1\n", TracerSettings),
    ("[web]\nweb_prot = 1\n", CollectorSettings),
])
def test_keys_of_a_section_another_role_owns_are_left_to_that_role(no_config_file, text, settings_class):
    (no_config_file / "contrail.toml").write_text(text)
    assert settings_class.load_with_sources(env={})[1]["redis_url"] == "default"
