"""Alembic environment: runs our migrations against the configured database.

It imports only psm_db.settings and psm_db.migrate (never psm_model): the revisions are frozen SQL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from psm_db.migrate import check_not_retired
from psm_db.settings import get_settings, to_sqlalchemy_url

config = context.config


def _url() -> str:
    override = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    return to_sqlalchemy_url(override) if override else get_settings().sqlalchemy_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), literal_binds=True, version_table_schema="public")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        check_not_retired(connection)
        context.configure(connection=connection, version_table_schema="public")
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
