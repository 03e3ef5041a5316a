"""Alembic migrations of the registry catalog, run programmatically by ``Registry.open``.

A schema change is a new file in ``versions/`` whose ``down_revision`` is the previous head,
with ``upgrade()`` written in ``alembic.op`` calls; ``registry/schema.py`` is changed to match
(a test compares the migrated database with it).
"""
