from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from psm_db import services as svc
from psm_db.credentials import redact
from psm_db.engine import connect, make_engine
from psm_db.errors import DatabaseURLError, MissingDependencyError, PortInUseError
from psm_db.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def test_defaults_point_at_the_managed_services(monkeypatch, tmp_path):
    for var in ("PSM_DATABASE_URL", "PSM_BROKER_URL", "PSM_PG_PORT", "PSM_REDIS_PORT"):
        monkeypatch.delenv(var, raising=False)
    s = Settings(home=tmp_path)
    assert s.db_url == "postgresql://psm@127.0.0.1:55432/psm"
    assert s.broker == "redis://127.0.0.1:56379/0"
    assert s.manages_postgres() and s.manages_redis()
    assert s.services_dir == tmp_path / "services"


def test_settings_read_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PSM_DATABASE_URL", "postgresql://someone@db.example:5432/x")
    monkeypatch.setenv("PSM_BROKER_URL", "redis://cache.example:6379/0")
    s = Settings(home=tmp_path)
    assert not s.manages_postgres() and not s.manages_redis()
    assert s.sqlalchemy_url == "postgresql+psycopg://someone@db.example:5432/x"
    assert s.reader_url == "postgresql://psm_reader@db.example:5432/x"


def test_bad_database_url_scheme_is_refused():
    with pytest.raises(DatabaseURLError, match="not a PostgreSQL URL"):
        make_engine("mysql://root@localhost/x")
    with pytest.raises(DatabaseURLError, match="not a PostgreSQL URL"):
        connect("sqlite:///tmp/x.db")


def test_unreachable_database_names_the_setting(busy_port):
    with pytest.raises(DatabaseURLError, match="PSM_DATABASE_URL"):
        connect(f"postgresql://psm@127.0.0.1:{busy_port}/psm")


def test_port_taken_by_something_else_for_postgres(tmp_path, busy_port):
    s = Settings(home=tmp_path, pg_port=busy_port)
    with pytest.raises(PortInUseError, match=f"port {busy_port} is already taken.*PSM_PG_PORT"):
        svc.postgres_up(s)


def test_port_taken_by_something_else_for_redis(tmp_path, busy_port):
    s = Settings(home=tmp_path, redis_port=busy_port)
    with pytest.raises(PortInUseError, match="PSM_REDIS_PORT"):
        svc.redis_up(s)


def test_missing_binary_names_the_package(tmp_path):
    s = Settings(home=tmp_path, redis_server="redis-server-not-installed")
    with pytest.raises(MissingDependencyError, match="apt-get install redis-server"):
        svc.redis_up(s)


def test_missing_extension_names_the_package(tmp_path):
    fake = tmp_path / "lib" / "postgresql" / "99" / "bin"
    fake.mkdir(parents=True)
    with pytest.raises(MissingDependencyError, match="postgresql-99-postgis-3.*pgvector"):
        svc.check_extensions(fake)


def test_external_servers_are_left_alone(tmp_path, settings, services):
    s = Settings(home=tmp_path, database_url=settings.db_url.replace("127.0.0.1", "localhost")
                 .replace(str(settings.pg_port), str(settings.pg_port)), pg_port=1,
                 broker_url=settings.broker, redis_port=2)
    rows = {r.name: r for r in svc.up(s)}
    assert not rows["postgres"].managed and rows["postgres"].running
    assert not rows["redis"].managed
    assert svc.down(s) == []
    assert not (tmp_path / "services").exists()


def test_services_up_is_idempotent_and_status_reports_urls(settings, services):
    env_bin = Path(sys.executable).parent
    for _ in range(2):
        out = subprocess.run([str(env_bin / "psm"), "services", "up"], capture_output=True,
                             text=True, cwd=ROOT)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "running" in out.stdout
    out = subprocess.run([str(env_bin / "psm"), "services", "status"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0
    # the URLs are shown with the password hidden; `psm db url` prints the whole one
    password = urlsplit(settings.db_url).password
    assert password and password not in out.stdout
    assert redact(settings.db_url) in out.stdout and settings.broker in out.stdout
    printed = subprocess.run([str(env_bin / "psm"), "db", "url", "--reader"], capture_output=True, text=True, cwd=ROOT)
    assert printed.stdout.strip() == settings.reader_url
    with psycopg.connect(printed.stdout.strip()) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "psm_reader"
    assert svc.postgres_running(settings) and svc.redis_running(settings)


def test_shared_buffers_setting_is_checked():
    with pytest.raises(ValueError, match="pg_shared_buffers must look like"):
        Settings(pg_shared_buffers="lots")
    with pytest.raises(ValueError, match="pg_shared_buffers"):
        Settings(pg_shared_buffers="0MB")


def test_shared_buffers_apply_at_every_start(cluster_settings):
    """PSM_PG_SHARED_BUFFERS is passed to each start, so a restart picks up a new value."""
    own = cluster_settings(pg_shared_buffers="160MB")
    svc.postgres_up(own)
    with connect(own.db_url) as conn:
        assert conn.execute("SHOW shared_buffers").fetchone()[0] == "160MB"
    svc.postgres_down(own)
    bigger = own.model_copy(update={"pg_shared_buffers": "192MB"})
    svc.postgres_up(bigger)
    with connect(bigger.db_url) as conn:
        assert conn.execute("SHOW shared_buffers").fetchone()[0] == "192MB"
