"""Shared fixtures: the real local services and a fresh, migrated database per test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Connection, Engine

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PSM_HOME", str(ROOT / ".psm"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def settings():
    """Settings for the test run (PSM_HOME defaults to the repository's .psm folder)."""
    from psm_db.settings import Settings

    return Settings()


@pytest.fixture(scope="session")
def services(settings):
    """Bring the project's PostgreSQL and Redis up (no-op when already running or external)."""
    from psm_db import services as svc

    return svc.up(settings)


@pytest.fixture
def cluster_settings(settings) -> Iterator[Callable[..., object]]:
    """``cluster_settings(**overrides)``: Settings for a throwaway cluster of the test's own.

    A fresh PSM_HOME under the shared one's ``test-clusters`` and a free port; nothing is started.
    After the test, each cluster made (and its watchdog) is stopped and its folder removed.
    """
    import shutil
    import socket

    from psm_db import services as svc
    from psm_db.settings import Settings

    made: list[Settings] = []

    def make(**overrides: object) -> Settings:
        home = Path(os.environ["PSM_HOME"]) / "test-clusters" / uuid.uuid4().hex[:8]
        home.mkdir(parents=True)
        os.chmod(home, 0o755)  # the postgres account must reach the cluster when we are root
        os.chmod(home.parent, 0o755)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        own = Settings(home=home, pg_port=port, redis_port=settings.redis_port, database_url=None,
                       **overrides)
        made.append(own)
        return own

    yield make
    for own in made:
        try:
            svc.watchdog_down(own)
            svc.postgres_down(own)
        finally:
            shutil.rmtree(own.home, ignore_errors=True)


@pytest.fixture(scope="session")
def as_role(settings) -> Callable[[str, str], str]:
    """``as_role(url, role)``: the URL as another role, with that role's managed password."""
    return lambda url, role: settings.url_as(role, url)


def _with_db(url: str, dbname: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def admin_url(settings, services) -> str:
    """A URL to the maintenance database of the server, for CREATE/DROP DATABASE."""
    return _with_db(settings.db_url, "postgres")


def create_database(admin_url: str, prefix: str = "psm_test") -> str:
    """Create an empty database with PostGIS and pgvector; return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(admin_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url


def drop_database(admin_url: str, url: str) -> None:
    """Drop a database created by create_database, closing its connections."""
    name = url.rpartition("/")[2]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def db_url(admin_url) -> Iterator[str]:
    """A fresh database for this test session, migrated to head."""
    from psm_db import migrate

    url = create_database(admin_url)
    migrate.upgrade(url)
    yield url
    drop_database(admin_url, url)


@pytest.fixture(scope="session")
def session_database(admin_url) -> Iterator[Callable[[str], str]]:
    """Make migrated databases of a test folder's own, kept for the session and then dropped."""
    from psm_db import migrate

    made: list[str] = []

    def make(prefix: str) -> str:
        url = create_database(admin_url, prefix=prefix)
        made.append(url)
        migrate.upgrade(url)
        return url

    yield make
    for url in made:
        drop_database(admin_url, url)


@pytest.fixture(scope="module")
def module_db_url(admin_url) -> Iterator[str]:
    """A migrated database of one test module's own, for tests that count every row."""
    from psm_db import migrate

    url = create_database(admin_url, prefix="psm_mod")
    migrate.upgrade(url)
    yield url
    drop_database(admin_url, url)


@pytest.fixture
def fresh_db_url(admin_url) -> Iterator[str]:
    """An empty (unmigrated) database for one test."""
    url = create_database(admin_url, prefix="psm_fresh")
    yield url
    drop_database(admin_url, url)


@pytest.fixture(scope="session")
def _engines() -> Iterator[dict[str, Engine]]:
    """SQLAlchemy engines by database URL (test modules may have a database of their own)."""
    engines: dict[str, Engine] = {}
    yield engines
    for engine in engines.values():
        engine.dispose()


@pytest.fixture
def db(db_url, _engines) -> Iterator[Connection]:
    """A SQLAlchemy connection to the test's database: what psm_db's row functions take."""
    from psm_db.engine import make_engine

    engine = _engines.get(db_url) or _engines.setdefault(db_url, make_engine(db_url, pool_size=1))
    with engine.connect() as c:
        yield c
        c.rollback()
        c.invalidate()  # a fresh connection for each test: no session setting or temp table is carried over


@pytest.fixture
def conn(db) -> psycopg.Connection:
    """The psycopg connection under ``db`` (pgvector types registered), in the same transaction.

    Tests read and write rows on it with plain SQL and hand ``db`` to the code under test.
    """
    from psm_db.engine import driver_connection

    return driver_connection(db)
