"""Run the Alembic migrations from Python (``psm db upgrade`` and the test fixtures).

The migrations ship inside the package (``psm_db/migrations``) and the Alembic config is
built here in code, so ``psm db upgrade`` works from any install of the package, not only
from a checkout of the repository. The ``alembic.ini`` at the root of a checkout points at
the same folder, for the plain ``alembic`` command.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import command
from alembic.config import Config

from psm_db.settings import to_sqlalchemy_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
"""The Alembic script folder: env.py, script.py.mako and versions/."""


def alembic_config(url: str) -> Config:
    """An Alembic config for the package's migrations folder, pointed at ``url``."""
    if not (MIGRATIONS / "env.py").is_file():
        raise FileNotFoundError(f"{MIGRATIONS} has no env.py: the psm_db package is incomplete")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("sqlalchemy.url", to_sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def revision_module(filename: str) -> ModuleType:
    """A migration file of ``psm_db/migrations/versions`` loaded as a module."""
    path = MIGRATIONS / "versions" / filename
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
