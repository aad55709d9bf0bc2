"""The database schema, in SQLAlchemy Core, the same on SQLite and PostgreSQL but for the search postings
(``trace_operations`` and ``trace_tags`` on SQLite, ``trace_search_keys`` on PostgreSQL: :func:`finalized_tables`).

Times are unix nanoseconds (BigInteger); statistics buckets are unix seconds
at the start of the bucket. JSON-valued columns hold compact JSON text so
both backends store them the same way.

Who writes what:
  spans (staging), pending_traces  ingest (consumer)         -- idempotent on (trace_id, span_id)
  traces, trace_blocks, names,
  trace_operations, trace_tags,
  trace_tag_numbers                finalizer (assembler)     -- rewritten on every re-finalization
  stats, stats_histogram           statistics                -- additive upserts, merge across collectors
  dependencies, llm_usage          statistics                -- additive upserts
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY

metadata = MetaData()

# Staging: one row per trace per stored batch (staging.py), holding that trace's spans of the batch as one
# msgpack value until the finalizer merges them into the trace's block and deletes the row in the same
# transaction; after finalization this table is (nearly) empty. ``batch_id`` is a digest of the row's span
# ids, so the same spans staged again hit the same key; ingest leaves out spans already staged or in a block.
spans = Table(
    "spans",
    metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("batch_id", String(32), primary_key=True),
    Column("start_ns", BigInteger, nullable=False),  # earliest start of the row's spans
    Column("span_count", Integer, nullable=False),
    Column("linked", Boolean, nullable=False, default=False),  # some span of the row has links
    Column("received_ns", BigInteger, nullable=False),
    Column("span_ids", LargeBinary, nullable=False),  # 8 bytes per span, in the order of ``data``
    Column("data", LargeBinary, nullable=False),  # msgpack list of the decoded span dicts
    Index("ix_spans_start", "start_ns"),
)

# Traces with new spans that the finalizer has yet to (re)assemble.
pending_traces = Table(
    "pending_traces",
    metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("first_seen_ns", BigInteger, nullable=False),
    Column("last_seen_ns", BigInteger, nullable=False),  # receive time of the newest span
    Column("claimed_by", String(255), nullable=True),  # lease, so collectors never finalize the same trace at once
    Column("claimed_until_ns", BigInteger, nullable=True),
    Index("ix_pending_last_seen", "last_seen_ns"),
)

_TRACE_NO = BigInteger().with_variant(Integer, "sqlite")  # SQLite: the rowid itself

# One summary row per finalized trace; what trace search reads. ``trace_no`` is the compact key the
# block and the search postings refer to (a new one on every re-finalization): ``day << 40 | sequence``
# (partitions.py), so on PostgreSQL these five tables are partitioned by day on it. There
# ``trace_id`` is indexed, not unique (a partitioned table's unique keys hold its partition key);
# SQLite keeps it UNIQUE. Numbers are drawn from the sequence trace_no_seq (PostgreSQL) or the one-row
# table trace_sequence (SQLite only, so not declared here).
traces = Table(
    "traces",
    metadata,
    Column("trace_no", _TRACE_NO, primary_key=True, autoincrement=True),
    Column("trace_id", String(32), nullable=False),
    Column("root_span_id", String(16), nullable=True),
    Column("root_service", String(255), nullable=False),
    Column("root_operation", String(512), nullable=False),
    Column("start_ns", BigInteger, nullable=False),
    Column("end_ns", BigInteger, nullable=False),
    Column("duration_ns", BigInteger, nullable=False),
    Column("span_count", Integer, nullable=False),
    Column("error_count", Integer, nullable=False),
    Column("services", Text, nullable=False, default="[]"),  # JSON sorted list of service names
    Column("service_count", Integer, nullable=False, default=1),
    Column("incomplete", Boolean, nullable=False, default=False),  # some parent never arrived
    Column("clock_skew_ns", BigInteger, nullable=False, default=0),  # largest skew detected, 0 if none
    Column("warnings", Text, nullable=False, default="[]"),  # JSON [{code, message, span_id?}]
    Column("finalized_ns", BigInteger, nullable=False),
    Column("version", Integer, nullable=False, default=1),  # times finalized
    Index("ix_traces_trace_id", "trace_id"),
    Index("ix_traces_start", "start_ns"),
    Index("ix_traces_duration", "duration_ns"),
    Index("ix_traces_errors", "error_count", "start_ns"),
    sqlite_autoincrement=True,  # a number is never reused, so nothing left behind can point at a newer trace
)

# The spans of a finalized trace in one compressed block (see blocks.py), with their assembly results.
trace_blocks = Table(
    "trace_blocks",
    metadata,
    Column("trace_no", _TRACE_NO, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
)

# zstd dictionaries trained on this database's blocks (block_dictionary.py); a block names its own. Never deleted.
block_dictionaries = Table(
    "block_dictionaries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),  # the zstd dictionary id
    Column("data", LargeBinary, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
)

# Strings the search postings refer to by number: service, operation and tag key names. Never deleted.
names = Table(
    "names",
    metadata,
    Column("id", _TRACE_NO, primary_key=True, autoincrement=True),
    Column("name", String(512), nullable=False, unique=True),
)

# Which (service, operation) pairs occur in a trace: the service / operation / services-touched filters.
# Keyed service first, then trace, so "does trace N touch service S" is one key lookup.
trace_operations = Table(
    "trace_operations",
    metadata,
    Column("service_id", Integer, primary_key=True, autoincrement=False),
    Column("trace_no", _TRACE_NO, primary_key=True, autoincrement=False),
    Column("operation_id", Integer, primary_key=True, autoincrement=False),
    Column("error", Boolean, nullable=False, default=False),
    sqlite_with_rowid=False,
)

# Distinct attribute values of a trace's spans: tag equality search. The value is a 64-bit hash of its
# string form (tag_hash in search_keys.py), so the posting is the same few bytes whatever the value.
trace_tags = Table(
    "trace_tags",
    metadata,
    Column("key_id", Integer, primary_key=True, autoincrement=False),
    Column("value_hash", BigInteger, primary_key=True, autoincrement=False),
    Column("trace_no", _TRACE_NO, primary_key=True, autoincrement=False),
    sqlite_with_rowid=False,
)

# PostgreSQL only (revision 0006), in place of trace_operations and trace_tags there: a trace's operation and
# tag postings as arrays of packed keys (search_keys.search_arrays), one row per trace, GIN-indexed. A row per
# posting costs PostgreSQL 28 bytes of tuple header and line pointer besides its index entry.
trace_search_keys = Table(
    "trace_search_keys",
    metadata,
    Column("trace_no", BigInteger, primary_key=True, autoincrement=False),
    Column("tag_keys", ARRAY(BigInteger), nullable=False),
    Column("op_keys", ARRAY(BigInteger), nullable=False),
    Column("error_ops", ARRAY(BigInteger), nullable=False),
)

# Numeric attribute values of a trace's spans: tag range search (key>number, key<number).
trace_tag_numbers = Table(
    "trace_tag_numbers",
    metadata,
    Column("key_id", Integer, primary_key=True, autoincrement=False),
    Column("value_num", Float, primary_key=True, autoincrement=False),
    Column("trace_no", _TRACE_NO, primary_key=True, autoincrement=False),
    sqlite_with_rowid=False,
)

# Pre-aggregated RED statistics. scope 'span' = per span operation; 'trace' = per trace root (end to end).
# resolution 60 = per minute, 3600 = hourly rollup. Rows are additive: collectors upsert count += n.
stats = Table(
    "stats",
    metadata,
    Column("scope", String(8), primary_key=True),
    Column("resolution", Integer, primary_key=True),
    Column("bucket", BigInteger, primary_key=True),  # unix seconds, start of the bucket
    Column("service", String(255), primary_key=True),
    Column("operation", String(512), primary_key=True),
    Column("count", BigInteger, nullable=False, default=0),
    Column("error_count", BigInteger, nullable=False, default=0),
    Column("total_ns", BigInteger, nullable=False, default=0),
    Column("max_ns", BigInteger, nullable=False, default=0),
    Index("ix_stats_bucket", "resolution", "bucket"),
)

# Latency histogram behind each stats row: log-scaled bins, additive, so percentiles merge exactly.
stats_histogram = Table(
    "stats_histogram",
    metadata,
    Column("scope", String(8), primary_key=True),
    Column("resolution", Integer, primary_key=True),
    Column("bucket", BigInteger, primary_key=True),
    Column("service", String(255), primary_key=True),
    Column("operation", String(512), primary_key=True),
    Column("bin", Integer, primary_key=True),
    Column("count", BigInteger, nullable=False, default=0),
)

# Service dependency edges from parent/child span pairs that cross services.
dependencies = Table(
    "dependencies",
    metadata,
    Column("resolution", Integer, primary_key=True),
    Column("bucket", BigInteger, primary_key=True),
    Column("caller", String(255), primary_key=True),
    Column("callee", String(255), primary_key=True),
    Column("kind", String(16), primary_key=True),  # http | messaging | rpc | other
    Column("calls", BigInteger, nullable=False, default=0),
    Column("errors", BigInteger, nullable=False, default=0),
    Column("total_ns", BigInteger, nullable=False, default=0),
    Index("ix_deps_bucket", "resolution", "bucket"),
)

# LLM usage from gen_ai.* (and OpenInference llm.token_count.*) attributes. Empty string = unknown.
llm_usage = Table(
    "llm_usage",
    metadata,
    Column("resolution", Integer, primary_key=True),
    Column("bucket", BigInteger, primary_key=True),
    Column("service", String(255), primary_key=True),
    Column("model", String(255), primary_key=True),
    Column("user_id", String(255), primary_key=True),
    Column("agent", String(255), primary_key=True),
    Column("calls", BigInteger, nullable=False, default=0),
    Column("errors", BigInteger, nullable=False, default=0),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("cache_read_tokens", BigInteger, nullable=False, default=0),
    Column("cost", Float, nullable=False, default=0.0),
    Column("total_ns", BigInteger, nullable=False, default=0),
    Index("ix_llm_bucket", "resolution", "bucket"),
)

# Traces tail sampling dropped: a late span of one is dropped too instead of counting the trace again.
dropped_traces = Table(
    "dropped_traces",
    metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("start_ns", BigInteger, nullable=False),  # for retention
    Column("dropped_ns", BigInteger, nullable=False),
    Index("ix_dropped_start", "start_ns"),
)

# The pre-Alembic version table; kept at version 3 so releases before Alembic refuse; see migrations/.
schema_version = Table(
    "contrail_schema",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("migrated_ns", BigInteger, nullable=False),
)

# Application metrics (tracer.metrics) as time series: one row per series and bucket, per minute (resolution 60)
# and hourly rollup (3600). ``series`` is a digest of (name, service, kind, unit, attributes). Counters add their
# increases into ``sum``; gauges keep min, max and the value with the latest time (``last``, ``last_ns``);
# histograms add ``count`` and ``sum`` and their values into ``metric_histogram`` (the bins of stats.py).
metric_points = Table(
    "metric_points",
    metadata,
    Column("resolution", Integer, primary_key=True),
    Column("bucket", BigInteger, primary_key=True),  # unix seconds, start of the bucket
    Column("series", String(40), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("service", String(255), nullable=False),
    Column("kind", String(16), nullable=False),  # counter | gauge | histogram
    Column("unit", String(64), nullable=False),
    Column("description", Text, nullable=True),
    Column("attributes", Text, nullable=False),  # JSON object
    Column("count", BigInteger, nullable=False),  # points (counter, gauge) or measurements (histogram)
    Column("sum", Float, nullable=False),
    Column("min", Float, nullable=True),
    Column("max", Float, nullable=True),
    Column("last", Float, nullable=True),
    Column("last_ns", BigInteger, nullable=True),
    Column("exemplars", Text, nullable=False),  # JSON [[trace_id, span_id, value, time_ns], ...], the latest few
    Index("ix_metric_points_name", "name", "resolution", "bucket"),
    Index("ix_metric_points_bucket", "resolution", "bucket"),
)

# The histogram bins of each histogram row of metric_points (values scaled by 1e9, as durations in ns).
metric_histogram = Table(
    "metric_histogram",
    metadata,
    Column("resolution", Integer, primary_key=True),
    Column("bucket", BigInteger, primary_key=True),
    Column("series", String(40), primary_key=True),
    Column("bin", Integer, primary_key=True),
    Column("count", BigInteger, nullable=False),
)

# Stream entries of kind metrics already added into metric_points: a redelivered entry is not counted twice.
metric_entries = Table(
    "metric_entries",
    metadata,
    Column("entry_id", String(64), primary_key=True),
    Column("stored_ns", BigInteger, nullable=False),
    Index("ix_metric_entries_stored", "stored_ns"),
)

# Sampling profiles of spans (tracer.profiler): one row per span, profile name and mode (explicit | slow).
# ``stacks`` is zlib-compressed JSON ``[[folded_stack, samples], ...]``, most samples first; rows are written
# once (a redelivered entry changes nothing) and removed by retention by ``start_ns``.
profiles = Table(
    "profiles",
    metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("span_id", String(16), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("mode", String(16), primary_key=True),
    Column("service", String(255), nullable=False),
    Column("operation", String(255), nullable=True),
    Column("start_ns", BigInteger, nullable=False),
    Column("end_ns", BigInteger, nullable=False),
    Column("interval_ns", BigInteger, nullable=False),
    Column("samples", BigInteger, nullable=False),
    Column("dropped", BigInteger, nullable=False),
    Column("stacks", LargeBinary, nullable=False),
    Index("ix_profiles_operation", "operation", "start_ns"),
    Index("ix_profiles_service", "service", "start_ns"),
    Index("ix_profiles_start", "start_ns"),
)


def finalized_tables(dialect_name: str) -> tuple[Table, ...]:
    """The tables of finalized traces on a backend, summaries first: what day partitions hold."""
    if dialect_name == "postgresql":
        return traces, trace_blocks, trace_search_keys, trace_tag_numbers
    return traces, trace_blocks, trace_operations, trace_tags, trace_tag_numbers


def tables_of(dialect_name: str) -> tuple[Table, ...]:
    """Every table of ``metadata`` the backend has."""
    absent = {trace_search_keys} if dialect_name != "postgresql" else {trace_operations, trace_tags}
    return tuple(t for t in metadata.sorted_tables if t not in absent)
