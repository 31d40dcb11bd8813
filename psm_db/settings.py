"""Service settings, read once from the environment (``PSM_*``) at the edges."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from psm_db import credentials

MEMORY_SIZE = re.compile(r"[1-9]\d*(kB|MB|GB)")
"""A PostgreSQL memory setting as the project accepts it: 512MB, 4GB, 65536kB."""

DEFAULT_PG_PORT = 55432
DEFAULT_REDIS_PORT = 56379


class Settings(BaseSettings):
    """Everything the services, workers and dashboard need to find each other.

    Every field reads ``PSM_<NAME>`` from the environment (or a ``.env`` file). The
    defaults point at the project-managed PostgreSQL and Redis that ``psm services up``
    starts under ``PSM_HOME``, so nothing has to be set to get started.
    """

    model_config = SettingsConfigDict(env_prefix="PSM_", env_file=".env", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".psm")
    pg_port: int = DEFAULT_PG_PORT
    redis_port: int = DEFAULT_REDIS_PORT
    database_url: str | None = None
    reader_database_url: str | None = None
    broker_url: str | None = None
    result_backend: str | None = None
    pg_bin_dir: Path | None = None
    redis_server: str = "redis-server"
    device: str = "auto"
    max_region_tiles: int = 250_000
    chunk_tiles: int = 2_048
    embed_batch_size: int = 256
    query_timeout_ms: int = 30_000
    reader_statement_limit: float = 0.0
    """Seconds a statement of the read-only role (psm_reader) may run whatever its session sets:
    the watchdog of ``psm services up`` cancels longer ones. 0 means PSM_QUERY_TIMEOUT_MS."""
    watchdog_interval: float = 1.0
    """Seconds between the watchdog's looks at the reader's statements and role settings."""
    pg_shared_buffers: str = "512MB"
    max_audio_seconds: float = 600.0
    """The longest audio query clip (CLI and dashboard), in seconds."""
    min_audio_seconds: float = 0.5
    """The shortest audio query clip, in seconds."""
    chunk_lease: float = 120.0
    """Seconds a running chunk stays claimed without a heartbeat from its worker; after that it is
    stale (its worker died) and a live worker re-queues it (``psm job`` shows stale chunks)."""
    dashboard_housekeeping_s: float = 30.0
    """Seconds between the dashboard's rounds of shutting down closed sessions (their uploads go)
    and handing freed memory back to the system."""
    task_soft_time_limit: int = 3_600
    task_time_limit: int = 3_900

    @field_validator("home", mode="before")
    @classmethod
    def _expand_home(cls, value: object) -> object:
        if isinstance(value, str | Path):
            return Path(value).expanduser().resolve()
        return value

    @field_validator("pg_shared_buffers")
    @classmethod
    def _check_memory(cls, value: str) -> str:
        if not MEMORY_SIZE.fullmatch(value):
            raise ValueError(f"pg_shared_buffers must look like 512MB or 4GB, got {value!r}")
        return value

    @field_validator("pg_port", "redis_port")
    @classmethod
    def _check_port(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError(f"port must be in 1..65535, got {value}")
        return value

    @property
    def db_url(self) -> str:
        """The writer database URL (libpq form, ``postgresql://``).

        On the managed cluster it carries the owner's password from ``PSM_HOME/secrets``.
        """
        if self.database_url:
            return self.database_url
        return self.url_as(credentials.OWNER_ROLE, f"postgresql://psm@127.0.0.1:{self.pg_port}/psm")

    @property
    def reader_url(self) -> str:
        """The read-only database URL used by the dashboard and analysts."""
        if self.reader_database_url:
            return self.reader_database_url
        return self.url_as(credentials.READER_ROLE, self.db_url)

    def url_as(self, role: str, url: str | None = None) -> str:
        """``url`` (default: the writer URL) as ``role``, without the URL's own password.

        On the managed cluster the role's stored password goes in; elsewhere the URL has none,
        and the server's own means apply (a ``~/.pgpass``, ``PGPASSWORD``, or a trusted host).
        """
        url = url or self.db_url
        secret = credentials.password(self.home, role) if _is_local(url, self.pg_port) else None
        return credentials.with_user(url, role, secret)

    @property
    def reader_limit_seconds(self) -> float:
        """The effective bound on a psm_reader statement, in seconds."""
        return self.reader_statement_limit or self.query_timeout_ms / 1000

    @property
    def sqlalchemy_url(self) -> str:
        """The writer URL in SQLAlchemy's psycopg-3 dialect form."""
        return to_sqlalchemy_url(self.db_url)

    @property
    def broker(self) -> str:
        """The Celery broker URL."""
        return self.broker_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def results(self) -> str:
        """The Celery result backend URL."""
        return self.result_backend or f"redis://127.0.0.1:{self.redis_port}/1"

    @property
    def services_dir(self) -> Path:
        """Where the project-managed PostgreSQL and Redis keep their files."""
        return self.home / "services"

    @property
    def checkpoints_dir(self) -> Path:
        """Where trained checkpoints are written."""
        return self.home / "checkpoints"

    @property
    def data_dir(self) -> Path:
        """Where datasets and synthetic worlds are written."""
        return self.home / "data"

    def manages_postgres(self) -> bool:
        """True when the database URL points at the project-managed cluster."""
        return _is_local(self.db_url, self.pg_port)

    def manages_redis(self) -> bool:
        """True when the broker URL points at the project-managed Redis."""
        return _is_local(self.broker, self.redis_port)


def to_sqlalchemy_url(url: str) -> str:
    """Turn a libpq URL into SQLAlchemy's ``postgresql+psycopg://`` form."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(
        f"database URL {url!r} is not a PostgreSQL URL; expected postgresql://user@host:port/dbname"
    )


def to_libpq_url(url: str) -> str:
    """Turn a SQLAlchemy URL back into a libpq URL."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _is_local(url: str, port: int) -> bool:
    parts = urlsplit(url)
    return parts.hostname in {"127.0.0.1", "localhost", "::1"} and (parts.port or 0) == port


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
