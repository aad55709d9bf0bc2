"""Day partitions: trace numbers carry their UTC day, so retention removes whole days.

A trace number becomes ``day << 40 | sequence`` (``storage/partitions.py``):
existing numbers keep their sequence part and gain the day of their trace's
start. The sequence goes on from the largest number so far: PostgreSQL's
``trace_no_seq``, SQLite's one-row ``trace_sequence``.

PostgreSQL: ``traces``, ``trace_blocks``, ``trace_operations``, ``trace_tags`` and
``trace_tag_numbers`` become tables partitioned by RANGE (trace_no), one partition
per day (``traces_20260115``); the rows are copied, renumbered, into partitions for
their days and for yesterday to two days on. ``traces.trace_id`` loses its
database-wide UNIQUE (a partitioned table's unique keys must hold the partition key)
and keeps an index; the finalizer's lease already makes one row per trace.

SQLite: the tables stay plain and are renumbered in place; orphaned postings (no
``traces`` row) are deleted on the way.
"""

from __future__ import annotations

import datetime
import time

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_DAY_NS = 86_400 * 1_000_000_000
_SHIFT = 40
_NO = f"(({{start}} / {_DAY_NS}) * {1 << _SHIFT} + {{no}})"  # the new number of a trace: day bits + old number
_POSTINGS = {"trace_operations": ("service_id", "trace_no", "operation_id", "error"),
             "trace_tags": ("key_id", "value_hash", "trace_no"),
             "trace_tag_numbers": ("key_id", "value_num", "trace_no")}
_TRACE_COLUMNS = ("trace_id", "root_span_id", "root_service", "root_operation", "start_ns", "end_ns", "duration_ns",
                  "span_count", "error_count", "services", "service_count", "incomplete", "clock_skew_ns",
                  "warnings", "finalized_ns", "version")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgres()
    else:
        _upgrade_sqlite()


def _upgrade_sqlite() -> None:
    op.create_table("trace_sequence",
                    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                    sa.Column("last", sa.BigInteger, nullable=False))
    op.execute("INSERT INTO trace_sequence (id, last) SELECT 1, coalesce(max(trace_no), 0) FROM traces")
    new_no = _NO.format(start="t.start_ns", no="t.trace_no")
    for table in ("trace_blocks", *_POSTINGS):
        op.execute(f"DELETE FROM {table} WHERE trace_no NOT IN (SELECT trace_no FROM traces)")
        # New numbers are >= 2**40 > every old one: no update collides with a row not yet renumbered.
        op.execute(f"UPDATE {table} SET trace_no = (SELECT {new_no} FROM traces t "
                   f"WHERE t.trace_no = {table}.trace_no)")
    op.execute(f"UPDATE traces SET trace_no = {_NO.format(start='start_ns', no='trace_no')}")


def _partition(table: str, day: int) -> str:
    date = datetime.date(1970, 1, 1) + datetime.timedelta(days=day)
    return (f"CREATE TABLE {table}_{date.strftime('%Y%m%d')} PARTITION OF {table} "
            f"FOR VALUES FROM ({day << _SHIFT}) TO ({(day + 1) << _SHIFT})")


def _upgrade_postgres() -> None:
    bind = op.get_bind()
    op.execute("CREATE SEQUENCE trace_no_seq AS bigint")
    op.execute("SELECT setval('trace_no_seq', greatest(coalesce((SELECT max(trace_no) FROM traces), 0), 1))")
    for index in ("ix_traces_start", "ix_traces_duration", "ix_traces_errors"):
        op.drop_index(index, table_name="traces")
    for table in ("traces", "trace_blocks", *_POSTINGS):
        op.rename_table(table, f"{table}_v0002")
        # Their constraints' index names (traces_pkey1 after 0002's swap, ...) would clash with the new tables'.
        found = bind.exec_driver_sql("SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass",
                                     (f"{table}_v0002",)).scalars().all()
        for name in found:
            op.execute(f'ALTER TABLE {table}_v0002 RENAME CONSTRAINT "{name}" TO "{name}_v0002"')

    by_range = {"postgresql_partition_by": "RANGE (trace_no)"}
    op.create_table(
        "traces",
        sa.Column("trace_no", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("root_span_id", sa.String(16), nullable=True),
        sa.Column("root_service", sa.String(255), nullable=False),
        sa.Column("root_operation", sa.String(512), nullable=False),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("end_ns", sa.BigInteger, nullable=False),
        sa.Column("duration_ns", sa.BigInteger, nullable=False),
        sa.Column("span_count", sa.Integer, nullable=False),
        sa.Column("error_count", sa.Integer, nullable=False),
        sa.Column("services", sa.Text, nullable=False),
        sa.Column("service_count", sa.Integer, nullable=False),
        sa.Column("incomplete", sa.Boolean, nullable=False),
        sa.Column("clock_skew_ns", sa.BigInteger, nullable=False),
        sa.Column("warnings", sa.Text, nullable=False),
        sa.Column("finalized_ns", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        **by_range,
    )
    op.create_table("trace_blocks",
                    sa.Column("trace_no", sa.BigInteger, primary_key=True, autoincrement=False),
                    sa.Column("data", sa.LargeBinary, nullable=False), **by_range)
    op.create_table("trace_operations",
                    sa.Column("service_id", sa.Integer, primary_key=True, autoincrement=False),
                    sa.Column("trace_no", sa.BigInteger, primary_key=True, autoincrement=False),
                    sa.Column("operation_id", sa.Integer, primary_key=True, autoincrement=False),
                    sa.Column("error", sa.Boolean, nullable=False), **by_range)
    op.create_table("trace_tags",
                    sa.Column("key_id", sa.Integer, primary_key=True, autoincrement=False),
                    sa.Column("value_hash", sa.BigInteger, primary_key=True, autoincrement=False),
                    sa.Column("trace_no", sa.BigInteger, primary_key=True, autoincrement=False), **by_range)
    op.create_table("trace_tag_numbers",
                    sa.Column("key_id", sa.Integer, primary_key=True, autoincrement=False),
                    sa.Column("value_num", sa.Float, primary_key=True, autoincrement=False),
                    sa.Column("trace_no", sa.BigInteger, primary_key=True, autoincrement=False), **by_range)
    op.create_index("ix_traces_trace_id", "traces", ["trace_id"])
    op.create_index("ix_traces_start", "traces", ["start_ns"])
    op.create_index("ix_traces_duration", "traces", ["duration_ns"])
    op.create_index("ix_traces_errors", "traces", ["error_count", "start_ns"])

    today = time.time_ns() // _DAY_NS
    days = {int(d) for (d,) in bind.exec_driver_sql(f"SELECT DISTINCT start_ns / {_DAY_NS} FROM traces_v0002")}
    for day in sorted(days | set(range(today - 1, today + 3))):
        for table in ("traces", "trace_blocks", *_POSTINGS):
            op.execute(_partition(table, day))

    columns = ", ".join(_TRACE_COLUMNS)
    op.execute(f"INSERT INTO traces (trace_no, {columns}) "
               f"SELECT {_NO.format(start='start_ns', no='trace_no')}, {columns} FROM traces_v0002")
    new_no = _NO.format(start="t.start_ns", no="t.trace_no")
    op.execute(f"INSERT INTO trace_blocks (trace_no, data) SELECT {new_no}, b.data "
               f"FROM trace_blocks_v0002 b JOIN traces_v0002 t ON t.trace_no = b.trace_no")
    for table, cols in _POSTINGS.items():
        picked = ", ".join(new_no if c == "trace_no" else f"p.{c}" for c in cols)
        op.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {picked} "
                   f"FROM {table}_v0002 p JOIN traces_v0002 t ON t.trace_no = p.trace_no")
    for table in ("trace_blocks", *_POSTINGS, "traces"):
        op.drop_table(f"{table}_v0002")


def downgrade() -> None:
    raise NotImplementedError("Contrail migrates forward only; restore a backup to go back")
