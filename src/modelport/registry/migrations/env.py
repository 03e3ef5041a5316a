"""Alembic environment: runs on the connection ``modelport.registry.db.migrate`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from modelport.registry.schema import VERSION_TABLE, metadata


def run_migrations_online() -> None:
    """Upgrade on the caller's connection, inside the caller's transaction."""
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("registry migrations run through Registry.open, not the alembic CLI "
                           "without a connection")
    context.configure(connection=connection, target_metadata=metadata,
                      version_table=VERSION_TABLE, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
