"""Storage: schema, engines, migrations, writes and reads on SQLite and PostgreSQL."""

from .engine import is_postgres, open_engine

__all__ = ["open_engine", "is_postgres"]
