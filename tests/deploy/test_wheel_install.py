"""The package works without the checkout: build the wheel, install it in a new venv, migrate,
run a worker and serve the dashboard.

This is what the docker images do (``pip install -c constraints.txt .``, then ``psm db
upgrade``, ``celery -A worker worker`` and ``psm dashboard`` with no repository around): the
migrations, the Alembic config, the tasks and the dashboard's pages must come from the
installed package.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import uuid
from collections.abc import Iterator
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


@pytest.fixture(scope="module")
def wheel_db(admin_url) -> Iterator[str]:
    """An empty database (PostGIS and pgvector only) that the installed ``psm db upgrade`` migrates."""
    name = f"psm_wheel_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin_url.rpartition('/')[0]}/{name}"
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        c.execute("CREATE EXTENSION IF NOT EXISTS vector")
    yield url
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def upgraded(installed, wheel_db, tmp_path_factory) -> tuple[str, Path, str]:
    """``psm db upgrade`` of the installed package, run in an empty folder: (db url, folder, stdout)."""
    tmp = tmp_path_factory.mktemp("upgrade")
    empty = tmp / "elsewhere"
    empty.mkdir()
    out = _run([str(installed / "psm"), "db", "upgrade"], cwd=empty, env=_clean_env(tmp, PSM_DATABASE_URL=wheel_db))
    return wheel_db, empty, out.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_wheel_install_migrates_a_fresh_database_from_anywhere(installed, upgraded, tmp_path):
    from alembic.script import ScriptDirectory

    from psm_db import migrate

    fresh_db_url, empty, upgrade_out = upgraded
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

    head = ScriptDirectory.from_config(migrate.alembic_config(fresh_db_url)).get_current_head()
    assert head is not None and head in upgrade_out
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


def test_wheel_carries_the_dashboard_pages_and_maps(installed):
    site = Path(_run([str(installed / "python"), "-c", "import dashboard; print(dashboard.__file__)"],
                     cwd=installed, env=_clean_env(installed.parent)).stdout.strip()).parent
    shipped = {p.relative_to(site).as_posix() for p in site.rglob("*.py")}
    source = {p.relative_to(ROOT / "dashboard").as_posix() for p in (ROOT / "dashboard").rglob("*.py")}
    assert "views/map.py" in source and shipped == source
    assert (site.parent / "psm_db" / "maps" / "coastlines.geojson").is_file()


def test_installed_worker_embeds_a_world_region(installed, upgraded, settings, tmp_path):
    """``celery -A worker worker`` on the venv's interpreter, fed by the venv's ``psm embed-region --wait``.

    The venv has no ``celery`` script (the dependencies are borrowed, see ``installed``), so the
    worker starts as ``python -m celery``: the same entry point on the venv's interpreter.
    """
    import torch

    from psm_model import create_model, save_checkpoint

    db_url = upgraded[0]
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(create_model("tiny"), ckpt, metrics={"val_loss": 1.0})
    queue = f"psm-wheel-{uuid.uuid4().hex[:10]}"
    env = _clean_env(tmp_path, PSM_DATABASE_URL=db_url, PSM_BROKER_URL=settings.broker,
                     PSM_RESULT_BACKEND=settings.results, PSM_QUEUE=queue, PSM_TORCH_THREADS="1",
                     PSM_CHUNK_TILES="8", PYTHONUNBUFFERED="1")
    version = _run([str(installed / "psm"), "register-model", str(ckpt), "--name", "wheel-tiny"],
                   cwd=empty, env=env).stdout.strip().splitlines()[-1]
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [str(installed / "python"), "-m", "celery", "-A", "worker", "worker", "-P", "solo", "-c", "1", "-Q", queue,
             "-n", f"wheel-{uuid.uuid4().hex[:6]}@%h", "--loglevel=INFO", "--without-gossip",
             "--without-mingle", "--without-heartbeat"],
            cwd=empty, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out = subprocess.run(
            [str(installed / "psm"), "embed-region", "--region", "-93.70,41.55,-93.60,41.62", "--model", version,
             "--zoom", "1", "--imagery", "world", "--gsd", "100", "--size-px", "32",
             "-c", "month=5,hour=6,audio_source=aporee", "--wait", "--no-progress", "--timeout", "120"],
            cwd=empty, env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr + log_path.read_text()[-4000:]
    finally:
        _stop(worker)
    job_id = out.stdout.strip().splitlines()[-1]
    log = log_path.read_text()
    assert "psm.embed_chunk" in log and "succeeded" in log, log[-4000:]
    with psycopg.connect(db_url) as c:
        status, done, total = c.execute("SELECT status, done, total FROM psm.jobs WHERE id = %s",
                                        (job_id,)).fetchone()
        tiles, emb = c.execute(
            "SELECT (SELECT count(*) FROM psm.tiles), (SELECT count(*) FROM psm.embeddings"
            " WHERE model_version = %s AND var_sum > 0 AND vector_dims(mu) = 32)", (version,)).fetchone()
    assert (status, done) == ("succeeded", total) and total > 1
    assert tiles == total and emb == total  # one condition: one embedding per tile


def test_installed_psm_dashboard_serves_the_packaged_app(installed, upgraded, tmp_path, as_role):
    db_url = upgraded[0]
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    port = _free_port()
    env = _clean_env(tmp_path, PSM_DATABASE_URL=db_url, PSM_READER_DATABASE_URL=as_role(db_url, "psm_reader"),
                     MPLBACKEND="Agg")
    log_path = tmp_path / "dashboard.log"
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(installed / "psm"), "dashboard", "--port", str(port)], cwd=empty, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "psm dashboard exited: " + log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    assert r.status == 200 and r.read().strip() == b"ok"
                    break
            except OSError:
                assert time.monotonic() < deadline, "no health answer: " + log_path.read_text()[-3000:]
                time.sleep(0.3)
        with urllib.request.urlopen(f"{base}/", timeout=10) as r:
            assert r.status == 200
            html = r.read().decode()
        assert '<div id="root">' in html and "<script" in html
        # psm dashboard became `python -m streamlit run <the venv's dashboard/app.py>` (same pid: exec)
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        app = Path(argv[argv.index(b"run") + 1].decode())
        assert app.name == "app.py" and app.is_relative_to(installed.parent / "lib"), argv
        assert argv[argv.index(b"--server.headless") + 1] == b"true"
    finally:
        _stop(proc)
    # the packaged app script runs (its pages, imports and database reads) in the venv
    run = _run([str(installed / "python"), "-c",
                "import sys; from streamlit.testing.v1 import AppTest; "
                "at = AppTest.from_file(sys.argv[1], default_timeout=90).run(); "
                "assert not at.exception, [e.value for e in at.exception]; "
                "assert not at.error, [e.value for e in at.error]; "
                "print('title:', at.title[0].value)", str(app)], cwd=empty, env=env)
    assert "title: Soundscape map" in run.stdout, run.stdout + run.stderr
