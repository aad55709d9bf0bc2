"""Databases as the release before Alembic left them: its schema version 2, holding real traces.

The SQL beside this module (``fixtures/``) was dumped from databases that release's own
collector wrote; ``fixtures/make_v2_databases.py`` says how. Loading it gives a database a
real deployment would bring to its first upgrade.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def dialect_of(url: str) -> str:
    return "sqlite" if make_url(url).get_backend_name() == "sqlite" else "postgres"


def load_v2_database(url: str) -> dict:
    """Fill the empty database at ``url`` with the v2 dump; return the traces it holds (id -> spans, finalized)."""
    dialect = dialect_of(url)
    if dialect == "sqlite":
        with sqlite3.connect(make_url(url).database) as conn:
            conn.executescript((FIXTURES / "v2_sqlite.sql").read_text())
    else:
        # pg_dump output: drop psql's meta-commands (\restrict), run the rest as one script on a
        # connection of its own (the dump empties search_path for its session).
        script = "\n".join(line for line in (FIXTURES / "v2_postgres.sql").read_text().splitlines()
                           if not line.startswith("\\"))
        engine = create_engine(url, poolclass=NullPool)
        raw = engine.raw_connection()
        try:
            raw.cursor().execute(script)
            raw.commit()
        finally:
            raw.close()
            engine.dispose()
    return json.loads((FIXTURES / "v2_traces.json").read_text())[dialect]
