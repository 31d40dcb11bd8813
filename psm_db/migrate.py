"""Run the Alembic migrations from Python (``psm db upgrade`` and the test fixtures)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import command
from alembic.config import Config

from psm_db.settings import to_sqlalchemy_url

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str) -> Config:
    """An Alembic config for our migrations folder, pointed at ``url``."""
    ini = ROOT / "alembic.ini"
    if not ini.exists():
        raise FileNotFoundError(
            f"{ini} is missing: psm db commands run from a checkout of the repository"
        )
    cfg = Config(str(ini))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", to_sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def revision_module(filename: str) -> ModuleType:
    """A migration file of ``migrations/versions`` loaded as a module.

    Revision files start with digits, so they cannot be imported by name; a later revision
    loads an earlier one this way to reuse (or restore) the SQL that one created.
    """
    path = ROOT / "migrations" / "versions" / filename
    spec = importlib.util.spec_from_file_location(f"psm_migration_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no migration file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the database at ``url`` down to ``revision``."""
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
