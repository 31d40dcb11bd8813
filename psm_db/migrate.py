"""Run the Alembic migrations from Python (``psm db upgrade`` and the test fixtures).

The migrations ship inside the package (``psm_db/migrations``) and the Alembic config is
built here in code, so ``psm db upgrade`` works from any install of the package, not only
from a checkout of the repository. The ``alembic.ini`` at the root of a checkout points at
the same folder, for the plain ``alembic`` command.

Revision 0007 is a frozen baseline that replaced the chain 0001-0007 (every released
database is at 0007, which it keeps as its id); the ids 0001-0006 are retired.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

from psm_db.settings import to_sqlalchemy_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
"""The Alembic script folder: env.py, script.py.mako and versions/."""

RETIRED_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006")
"""Revision ids of the old chain that the baseline 0007 replaced."""


class RetiredRevisionError(RuntimeError):
    """The database is stamped at a revision id that this package no longer ships."""


def alembic_config(url: str) -> Config:
    """An Alembic config for the package's migrations folder, pointed at ``url``."""
    if not (MIGRATIONS / "env.py").is_file():
        raise FileNotFoundError(f"{MIGRATIONS} has no env.py: the psm_db package is incomplete")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("sqlalchemy.url", to_sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def retired_message(revision: str) -> str:
    """What to do with a database stamped at a retired revision id."""
    return (
        f"the database is at revision {revision}, a retired revision of the old migration chain "
        "0001-0007, which this version of psm-maps replaced by one baseline revision 0007. "
        "Upgrade it to 0007 first with psm-maps 0.1.0 (the release that shipped 0001-0007: "
        "`psm db upgrade`), then run `psm db upgrade` with this version; or, when its data "
        "can be rebuilt, drop the schema (`DROP SCHEMA psm CASCADE; DROP TABLE alembic_version`) "
        "and migrate it from scratch."
    )


def check_not_retired(connection: Any) -> None:
    """Refuse a database whose ``alembic_version`` names a retired revision.

    Args:
        connection: A SQLAlchemy connection to the database, not inside a transaction.

    Raises:
        RetiredRevisionError: When the database is stamped at one of RETIRED_REVISIONS.
    """
    from sqlalchemy import text

    # A transaction of its own, ended here: Alembic then begins the migration's transaction.
    with connection.begin():
        if connection.execute(text("SELECT to_regclass('public.alembic_version')")).scalar() is None:
            return
        revisions = connection.execute(text("SELECT version_num FROM public.alembic_version")).scalars().all()
    for revision in revisions:
        if revision in RETIRED_REVISIONS:
            raise RetiredRevisionError(retired_message(revision))


def _check_url(url: str) -> None:
    revision = current(url)
    if revision in RETIRED_REVISIONS:
        raise RetiredRevisionError(retired_message(revision))


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``.

    Raises:
        RetiredRevisionError: When the database is at a retired revision (0001-0006).
    """
    _check_url(url)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the database at ``url`` down to ``revision``.

    Raises:
        RetiredRevisionError: When the database is at a retired revision (0001-0006).
    """
    _check_url(url)
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at, or None when unmigrated."""
    from sqlalchemy import create_engine, pool, text

    engine = create_engine(to_sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            exists = conn.execute(text("SELECT to_regclass('public.alembic_version')")).scalar()
            if exists is None:
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
