"""Alembic environment: runs on the connection `conveyor.store.migrate` hands it."""

from __future__ import annotations

from alembic import context

from conveyor.store.tables import metadata, schema_of

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only the alembic CLI gets here
    raise SystemExit("run migrations with `conveyor migrate`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_object=schema_of(connection.dialect.name),
)
with context.begin_transaction():
    context.run_migrations()
