"""Engine and session factories; nothing connects at import time.

Rows are read and written through SQLAlchemy (sessions, or Core on the mapped tables of
:mod:`psm_db.models`). The only raw psycopg work is binary COPY (:mod:`psm_db.bulk`,
:mod:`psm_db.tiles`), and it runs on :func:`driver_connection` of the caller's SQLAlchemy
connection: one engine, one transaction per unit of work.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeAlias

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from psm_db.errors import DatabaseURLError
from psm_db.settings import to_libpq_url, to_sqlalchemy_url

Db: TypeAlias = Connection | Session
"""What the row functions of psm_db take: a SQLAlchemy connection or session (its transaction is used)."""

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError, sa_exc.InterfaceError, psycopg.OperationalError, psycopg.InterfaceError,
)
"""Errors a retry can cure (the database restarting, a lost connection, a deadlock), as SQLAlchemy
raises them and as the raw COPY of :mod:`psm_db.bulk` does."""


def make_engine(
    url: str, *, statement_timeout_ms: int | None = None, pool_size: int = 5, application_name: str | None = None
) -> Engine:
    """Create a SQLAlchemy engine for ``url`` (libpq or SQLAlchemy form)."""
    try:
        sa_url = to_sqlalchemy_url(url)
    except ValueError as e:
        raise DatabaseURLError(str(e)) from e
    options: dict[str, str] = {}
    if statement_timeout_ms:
        options["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
    if application_name:
        options["application_name"] = application_name
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


_ENGINES: dict[tuple[int, str, str | None], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def shared_engine(url: str, *, application_name: str | None = None) -> Engine:
    """One engine per URL in this process (a forked worker process makes its own)."""
    key = (os.getpid(), url, application_name)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = make_engine(url, application_name=application_name)
        return engine


@contextmanager
def connection(url_or_engine: str | Engine, *, application_name: str | None = None) -> Iterator[Connection]:
    """A SQLAlchemy connection: committed when the block ends, rolled back on an error.

    Inside the block the caller may commit or roll back as often as its unit of work needs.
    A URL uses :func:`shared_engine`; an unreachable database raises DatabaseURLError with
    what to do.
    """
    if isinstance(url_or_engine, Engine):
        engine = url_or_engine
        libpq = to_libpq_url(engine.url.render_as_string(hide_password=True))
    else:
        libpq = _check_url(url_or_engine)
        engine = shared_engine(url_or_engine, application_name=application_name)
    try:
        conn = engine.connect()
    except sa_exc.OperationalError as e:
        raise DatabaseURLError(_cannot_connect(libpq, e.orig if e.orig is not None else e)) from e
    with conn:
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def driver_connection(db: Db) -> psycopg.Connection:
    """The psycopg connection under ``db``, for binary COPY inside ``db``'s transaction.

    A transaction is begun on ``db`` when none is, so that its ``commit()`` also commits
    what is written on the raw connection.
    """
    conn = db.connection() if isinstance(db, Session) else db
    if not conn.in_transaction():
        conn.begin()
    raw = conn.connection.driver_connection
    if not isinstance(raw, psycopg.Connection):  # pragma: no cover - the engines are psycopg 3
        raise TypeError(f"expected a psycopg connection under {db!r}, got {type(raw).__name__}")
    return raw


def _check_url(url: str) -> str:
    libpq = to_libpq_url(url)
    if not libpq.startswith(("postgresql://", "postgres://")):
        raise DatabaseURLError(
            f"database URL {url!r} is not a PostgreSQL URL; expected postgresql://user@host:port/db"
        )
    return libpq


def _cannot_connect(libpq: str, error: BaseException) -> str:
    return (f"cannot connect to the database at {libpq}: {str(error).strip()}. Check PSM_DATABASE_URL, "
            "or start the project's own database with `psm services up`.")


def connect(url: str, **kwargs: object) -> psycopg.Connection:
    """A plain psycopg connection with pgvector types registered; clear error on bad URLs."""
    from pgvector.psycopg import register_vector

    libpq = _check_url(url)
    try:
        conn = psycopg.connect(libpq, connect_timeout=10, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as e:
        raise DatabaseURLError(_cannot_connect(libpq, e)) from e
    try:
        register_vector(conn)
    except psycopg.ProgrammingError:
        conn.rollback()
    return conn
