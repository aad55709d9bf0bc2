"""Settings precedence and the wire codec contract."""

import msgpack
import pytest

from collector_worker.settings import CollectorSettings
from tracer import codec
from tracer.settings import TracerSettings
from tracer.settings_base import mask_url
from tracer.units import parse_duration
from web.settings import WebSettings


def test_precedence_kwargs_then_contrail_then_otel_then_default():
    env = {"CONTRAIL_SAMPLE_RATE": "0.5", "OTEL_TRACES_SAMPLER_ARG": "0.2", "OTEL_SERVICE_NAME": "svc",
           "OTEL_BSP_SCHEDULE_DELAY": "250"}
    assert TracerSettings.load(env=env).sample_rate == 0.5
    assert TracerSettings.load(env=env, sample_rate=0.1).sample_rate == 0.1
    assert TracerSettings.load(env={"OTEL_TRACES_SAMPLER_ARG": "0.2"}).sample_rate == 0.2
    assert TracerSettings.load(env={}).sample_rate == 1.0
    assert TracerSettings.load(env=env).service_name == "svc"
    assert TracerSettings.load(env=env).schedule_delay == pytest.approx(0.25)


def test_bad_values_name_their_source():
    with pytest.raises(ValueError, match="CONTRAIL_SAMPLE_RATE"):
        CollectorSettings.load(env={"CONTRAIL_SAMPLE_RATE": "2"})
    with pytest.raises(ValueError, match="CONTRAIL_RETENTION"):
        CollectorSettings.load(env={"CONTRAIL_RETENTION": "seven days"})
    with pytest.raises(TypeError, match="nonsense"):
        CollectorSettings.load(env={}, nonsense=1)


@pytest.mark.postgres
def test_postgres_pool_size_comes_from_the_settings_object(postgres_url):
    """The pool size is the settings' ``db_pool_size`` (keyword or CONTRAIL_DB_POOL), not a second look at the
    environment: a keyword setting is honoured by every engine built from a settings object."""
    from collector_worker.storage.engine import open_engine
    from web.resources import Resources

    unreached = "postgresql+psycopg://contrail@127.0.0.1:1/contrail"  # never connected: the pool is built lazily
    assert open_engine(unreached, migrate=False, pool_size=7).pool.size() == 7
    assert open_engine(unreached, migrate=False).pool.size() == WebSettings.load(env={}).db_pool_size == 5
    url = postgres_url
    keyword = WebSettings.load(env={}, database_url=url, db_pool_size=9)
    assert Resources(keyword).engine().pool.size() == 9
    from_env = WebSettings.load(env={"CONTRAIL_DB_POOL": "3", "CONTRAIL_DATABASE_URL": url})
    assert Resources(from_env).engine().pool.size() == 3
    with pytest.raises(ValueError, match="CONTRAIL_DB_POOL"):
        WebSettings.load(env={"CONTRAIL_DB_POOL": "0"})


def test_durations_and_masking():
    assert parse_duration("250ms") == pytest.approx(0.25)
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("1.5s") == 1.5
    for bad in ("", "-1s", "5 parsecs", "abc"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert mask_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert mask_url("redis://host:6379/0") == "redis://host:6379/0"


def _span(**over):
    span = dict(trace_id="ab" * 16, span_id="cd" * 8, parent_span_id=None, name="op", kind="server",
                start_ns=1_700_000_000_000_000_000, end_ns=1_700_000_000_500_000_000, status_code="error",
                status_message="boom", service="orders", resource={"host.name": "h1"},
                attributes={"order.id": 42, "tags": ["a", "b"]},
                events=[{"name": "exception", "time_ns": 1_700_000_000_100_000_000, "attributes": {"x": 1}}],
                links=[{"trace_id": "ef" * 16, "span_id": "01" * 8, "attributes": {}}], scope="tracer")
    span.update(over)
    return span


@pytest.mark.parametrize("encoding", ["msgpack", "msgpack+zlib", "json"])
def test_round_trip(encoding):
    spans = [_span(), _span(span_id="12" * 8, parent_span_id="cd" * 8, service="billing", resource={})]
    fields = codec.encode_span_dicts(spans, encoding=encoding)
    assert fields[b"n"] == b"2" and fields[b"v"] == b"1"
    decoded = codec.decode_entry(fields)
    assert decoded.rejected == []
    assert decoded.spans == spans


def test_bad_rows_are_rejected_individually():
    fields = codec.encode_span_dicts([_span(), _span(span_id="XYZ"), _span(span_id="34" * 8, end_ns=1)])
    decoded = codec.decode_entry(fields)
    assert [s["span_id"] for s in decoded.spans] == ["cd" * 8]
    assert [i for i, _ in decoded.rejected] == [1, 2]
    assert "span id" in decoded.rejected[0][1]


@pytest.mark.parametrize("fields, reason", [
    ({b"v": b"9", b"enc": b"msgpack", b"n": b"0", b"data": msgpack.packb({"spans": []})}, "unsupported format version"),
    ({b"v": b"1", b"enc": b"xml", b"n": b"0", b"data": b"<a/>"}, "unknown encoding"),
    ({b"v": b"1", b"enc": b"msgpack", b"n": b"1", b"data": b"\xc1\xc1garbage"}, "cannot decode"),
    ({b"v": b"1", b"enc": b"msgpack", b"n": b"5", b"data": msgpack.packb({"spans": []})}, "count mismatch"),
    ({b"hello": b"world"}, "missing field"),
])
def test_unreadable_entries_raise_with_reason(fields, reason):
    with pytest.raises(codec.CodecError, match=reason):
        codec.decode_entry(fields)


def test_settings_repr_hides_tokens_and_url_passwords():
    settings = WebSettings.load(env={
        "CONTRAIL_API_TOKEN": "api-secret-1", "CONTRAIL_READ_TOKEN": "read-secret-2",
        "CONTRAIL_INGEST_TOKEN": "ingest-secret-3",
        "CONTRAIL_DATABASE_URL": "postgresql+psycopg://contrail:db-pass-4@db:5432/contrail",
        "CONTRAIL_REDIS_URL": "redis://:redis-pass-5@redis:6379/0"})
    text = repr(settings)
    for secret in ("api-secret-1", "read-secret-2", "ingest-secret-3", "db-pass-4", "redis-pass-5"):
        assert secret not in text and secret not in str(settings) and secret not in f"{settings}"
    assert "api_token='***'" in text and "contrail:***@db:5432" in text and "web_port=8680" in text
    assert settings.api_token == "api-secret-1"  # only the display is masked


def test_forward_headers_are_read_like_otel_exporter_otlp_headers_and_never_shown():
    settings = CollectorSettings.load(env={
        "CONTRAIL_FORWARD_HEADERS": " authorization=Bearer%20tok-6 , x-scope-orgid=team=a,",
        "CONTRAIL_FORWARD_ENDPOINT": "https://u:endpoint-pass-7@saas.example/v1/traces"})
    assert settings.forward_headers == (("authorization", "Bearer tok-6"), ("x-scope-orgid", "team=a"))
    assert CollectorSettings.load(env={}, forward_headers={"x-api-key": "k"}).forward_headers == (("x-api-key", "k"),)
    text = repr(settings)
    assert "tok-6" not in text and "endpoint-pass-7" not in text
    assert "forward_headers=['authorization=***', 'x-scope-orgid=***']" in text
    for bad in ("no-equals-sign", "bad name=v", "a=line%0Abreak"):
        with pytest.raises(ValueError, match="CONTRAIL_FORWARD_HEADERS"):
            CollectorSettings.load(env={"CONTRAIL_FORWARD_HEADERS": bad})


def test_forward_mode_is_stored_or_kept():
    assert CollectorSettings.load(env={}).forward_mode == "stored"
    assert CollectorSettings.load(env={"CONTRAIL_FORWARD_MODE": "Kept"}).forward_mode == "kept"
    with pytest.raises(ValueError, match="CONTRAIL_FORWARD_MODE.*stored or kept"):
        CollectorSettings.load(env={"CONTRAIL_FORWARD_MODE": "sampled"})
