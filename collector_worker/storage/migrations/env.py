"""Alembic's environment for Contrail: migrate the connection ``migrations.migrate`` hands over.

The caller holds the migration lock and the transaction on that connection, so this
file neither connects nor commits (Alembic sees the transaction and leaves it alone).
"""

from alembic import context

from collector_worker.storage.migrations import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Contrail migrates through collector_worker.storage.migrations.migrate() "
                       "or `contrail db upgrade`, which hold the migration lock; not through the alembic command")
context.configure(connection=connection, version_table=VERSION_TABLE, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
