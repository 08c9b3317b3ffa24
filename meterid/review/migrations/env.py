"""Alembic's entry for the label store: run on the connection ``LabelStore`` hands over
(``config.attributes["connection"]``), with a version table of its own, so the store can share
a database with other applications."""

from alembic import context

from meterid.review.store import VERSION_TABLE, Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
