"""PostgreSQL: a trace's operation and tag postings as arrays in one row (``trace_search_keys``), GIN-indexed.

A posting row in ``trace_operations`` or ``trace_tags`` costs PostgreSQL 28 bytes of tuple header and line
pointer plus its primary-key entry: 3× what SQLite's WITHOUT ROWID tables pay. One row per trace holding
packed 64-bit keys (``storage/search_keys.py``: tag keys ``key_id << 40 | value_hash & (2**40 - 1)`` plus a
marker per key, operation keys ``service_id << 32 | operation_id`` plus service and operation markers,
and the operations that had an error) with a GIN index on each array answers the same filters with
``@>`` and ``&&``. ``trace_search_keys`` is partitioned by day like the other finalized tables (a partition
for every day ``traces`` has); the existing postings are packed into it and the two tables dropped.

SQLite keeps its posting tables: no change there.
"""

from __future__ import annotations

import datetime

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TAG_BITS = 40
_TAG_MASK = (1 << _TAG_BITS) - 1


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("CREATE TABLE trace_search_keys (trace_no bigint NOT NULL, tag_keys bigint[] NOT NULL, "
               "op_keys bigint[] NOT NULL, error_ops bigint[] NOT NULL, PRIMARY KEY (trace_no)) "
               "PARTITION BY RANGE (trace_no)")
    days = bind.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'traces'::regclass").scalars().all()
    for name in days:
        day = (datetime.datetime.strptime(name[len("traces_"):], "%Y%m%d").date() - datetime.date(1970, 1, 1)).days
        op.execute(f"CREATE TABLE trace_search_keys_{name[len('traces_'):]} PARTITION OF trace_search_keys "
                   f"FOR VALUES FROM ({day << 40}) TO ({(day + 1) << 40})")
    op.execute(f"""
        INSERT INTO trace_search_keys (trace_no, tag_keys, op_keys, error_ops)
        SELECT t.trace_no,
          coalesce((SELECT array_agg(DISTINCT k ORDER BY k) FROM (
              SELECT (g.key_id::bigint << {_TAG_BITS}) | (g.value_hash & {_TAG_MASK}) AS k
                FROM trace_tags g WHERE g.trace_no = t.trace_no
              UNION SELECT g.key_id::bigint << {_TAG_BITS} FROM trace_tags g WHERE g.trace_no = t.trace_no) tk),
            '{{}}'),
          coalesce((SELECT array_agg(DISTINCT k ORDER BY k) FROM (
              SELECT (o.service_id::bigint << 32) | o.operation_id AS k FROM trace_operations o
                WHERE o.trace_no = t.trace_no
              UNION SELECT o.service_id::bigint << 32 FROM trace_operations o WHERE o.trace_no = t.trace_no
              UNION SELECT o.operation_id::bigint FROM trace_operations o WHERE o.trace_no = t.trace_no) ok),
            '{{}}'),
          coalesce((SELECT array_agg(DISTINCT (o.service_id::bigint << 32) | o.operation_id)
                    FROM trace_operations o WHERE o.trace_no = t.trace_no AND o.error), '{{}}')
        FROM traces t""")
    # A small pending list: GIN's fast update buffers inserts there (4 MB by default, whose pages stay with
    # the index once merged: 40 B/span in a day of 110k spans); 256 kB keeps the buffering and its cost.
    op.execute("CREATE INDEX ix_search_tags ON trace_search_keys USING gin (tag_keys) "
               "WITH (gin_pending_list_limit = 256)")
    op.execute("CREATE INDEX ix_search_ops ON trace_search_keys USING gin (op_keys) "
               "WITH (gin_pending_list_limit = 256)")
    # The planner's estimate of "tag_keys @> {k}" comes from the arrays' most common elements; a longer list
    # (10x the default) keeps a rare value (a user id) estimated rare, so the GIN index is used for it.
    for column in ("tag_keys", "op_keys"):
        op.execute(f"ALTER TABLE trace_search_keys ALTER COLUMN {column} SET STATISTICS 1000")
    op.execute("DROP TABLE trace_tags")
    op.execute("DROP TABLE trace_operations")


def downgrade() -> None:
    raise NotImplementedError("Contrail migrations run forward only")
