"""The package works without the checkout: build the wheel, install it in a new venv, migrate.

This is what the docker image's migrate service does (``pip install .``, then ``psm db
upgrade`` with no repository around): the migrations and the Alembic config must come from
the installed package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "psm_model", "psm_db", "worker", "dashboard")

pytestmark = pytest.mark.slow


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert out.returncode == 0, f"{args}\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv outside the checkout with the freshly built wheel installed (its bin folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a clean copy: an in-tree build/ folder can carry files deleted since.
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
          "-q", "-w", str(tmp / "dist"), str(src)])
    (wheel,) = (tmp / "dist").glob("psm_maps-*.whl")
    venv = tmp / "venv"
    # The base interpreter (not this venv's), so nothing of this environment leaks in yet.
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
          "--no-cache-dir", "-q", str(wheel)])
    # The dependencies (torch, SQLAlchemy, Alembic, ...) come from this environment's
    # site-packages, appended after the venv's own: the package itself is the wheel's. The
    # .pth files there (this checkout's editable install) are not run for a path added so.
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    (site / "psm_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def _clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "PSM_HOME": str(tmp / "psm_home"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}
    assert "PYTHONPATH" not in env
    return env


def test_wheel_install_migrates_a_fresh_database_from_anywhere(installed, fresh_db_url, tmp_path):
    from alembic.script import ScriptDirectory

    from psm_db import migrate

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = _clean_env(tmp_path, PSM_DATABASE_URL=fresh_db_url)
    # the package and its migrations are the venv's, not the checkout's
    where = _run([str(installed / "python"), "-c",
                  "import psm_db, psm_db.migrate as m, worker, psm_model; "
                  "print(psm_db.__file__); print(m.MIGRATIONS); print(worker.__file__); print(psm_model.__file__)"],
                 cwd=empty, env=env).stdout.split()
    site = installed.parent / "lib"
    assert len(where) == 4
    for path in where:
        assert Path(path).is_relative_to(site) and not Path(path).is_relative_to(ROOT), path
    assert (Path(where[1]) / "versions" / "0007_baseline.py").is_file()

    out = _run([str(installed / "psm"), "db", "upgrade"], cwd=empty, env=env)
    head = ScriptDirectory.from_config(migrate.alembic_config(fresh_db_url)).get_current_head()
    assert head is not None and head in out.stdout
    assert migrate.current(fresh_db_url) == head
    with psycopg.connect(fresh_db_url) as c:
        assert c.execute("SELECT to_regprocedure('psm.csd(vector, vector, vector, vector)') IS NOT NULL"
                         ).fetchone()[0]
        assert c.execute("SELECT psm.csd('[0,0]', '[1,1]', '[3,4]', '[1,1]')").fetchone()[0] == pytest.approx(29.0)
    assert not any(empty.iterdir()), "psm db upgrade wrote into the working folder"


def test_wheel_carries_every_revision_and_sql_file(installed):
    site = Path(_run([str(installed / "python"), "-c", "import psm_db; print(psm_db.__file__)"],
                     cwd=installed, env=_clean_env(installed.parent)).stdout.strip()).parent
    for folder, pattern in (("migrations/versions", "*.py"), ("sql", "*.sql")):
        shipped = {p.name for p in (site / folder).glob(pattern)}
        source = {p.name for p in (ROOT / "psm_db" / folder).glob(pattern)}
        assert source and shipped == source, folder
    assert (site / "migrations" / "env.py").is_file() and (site / "migrations" / "script.py.mako").is_file()
    assert not os.path.exists(site.parent / "alembic.ini")
