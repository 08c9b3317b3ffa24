"""PostgreSQL as the stack's state store: the databases ``meterid serve --postgres`` needs."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from meterid.serve.plan import ServeError

log = logging.getLogger(__name__)


def ensure_databases(urls: Iterable[str]) -> None:
    """Create each URL's database on its server when missing (through the maintenance database
    ``postgres``, as the URL's user: it needs CREATEDB, or the databases made beforehand)."""
    import psycopg2
    from psycopg2 import sql
    from sqlalchemy.engine import make_url

    for url in urls:
        parsed = make_url(url)
        where = parsed.set(database="postgres").render_as_string(hide_password=True)
        try:
            connection = psycopg2.connect(
                dbname="postgres", user=parsed.username, password=parsed.password,
                host=parsed.host or "127.0.0.1", port=parsed.port or 5432, connect_timeout=10)
        except psycopg2.OperationalError as error:
            raise ServeError(f"cannot connect to PostgreSQL at {where}: {error}".strip()) from error
        try:
            connection.autocommit = True  # CREATE DATABASE refuses to run in a transaction
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,))
                if cursor.fetchone() is None:
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(
                        sql.Identifier(parsed.database)))
                    log.info("created database %s on %s", parsed.database, where)
        except psycopg2.Error as error:
            raise ServeError(f"cannot create database {parsed.database!r} on {where}: "
                             f"{error}".strip()) from error
        finally:
            connection.close()
