"""Engine and session factories; nothing connects at import time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from psm_db.errors import DatabaseURLError
from psm_db.settings import to_libpq_url, to_sqlalchemy_url


def make_engine(url: str, *, statement_timeout_ms: int | None = None, pool_size: int = 5) -> Engine:
    """Create a SQLAlchemy engine for ``url`` (libpq or SQLAlchemy form)."""
    try:
        sa_url = to_sqlalchemy_url(url)
    except ValueError as e:
        raise DatabaseURLError(str(e)) from e
    options = {}
    if statement_timeout_ms:
        options["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
    engine = create_engine(
        sa_url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
        connect_args={"connect_timeout": 10, **options},
    )

    @event.listens_for(engine, "connect")
    def _register_vector(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        from pgvector.psycopg import register_vector

        try:
            register_vector(dbapi_conn)
        except psycopg.ProgrammingError:
            pass  # the vector extension is created by the first migration

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine``."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A transactional session: commit on success, roll back on error."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def connect(url: str, **kwargs: object) -> psycopg.Connection:
    """A plain psycopg connection with pgvector types registered; clear error on bad URLs."""
    from pgvector.psycopg import register_vector

    libpq = to_libpq_url(url)
    if not libpq.startswith(("postgresql://", "postgres://")):
        raise DatabaseURLError(
            f"database URL {url!r} is not a PostgreSQL URL; expected postgresql://user@host:port/db"
        )
    try:
        conn = psycopg.connect(libpq, connect_timeout=10, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as e:
        raise DatabaseURLError(
            f"cannot connect to the database at {libpq}: {str(e).strip()}. Check PSM_DATABASE_URL, "
            "or start the project's own database with `psm services up`."
        ) from e
    try:
        register_vector(conn)
    except psycopg.ProgrammingError:
        conn.rollback()
    return conn
