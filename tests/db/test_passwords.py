"""The managed cluster asks every connection for its role's SCRAM password (issue: trust on 127.0.0.1)."""

from __future__ import annotations

import stat
import time

import psycopg
import pytest

from psm_db import credentials
from psm_db import services as svc
from psm_db.settings import Settings


def _refused(**conninfo) -> str:
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(connect_timeout=5, **conninfo).close()
    return str(info.value)


def _tcp(settings: Settings, user: str, password: str | None = None, dbname: str = "postgres") -> dict:
    info = {"host": "127.0.0.1", "port": settings.pg_port, "user": user, "dbname": dbname}
    if password is not None:
        info["password"] = password
    return info


def _assert_passwords_required(s: Settings) -> None:
    run = s.services_dir / "postgres" / "run"
    for role in credentials.ROLES:
        assert "no password supplied" in _refused(**_tcp(s, role))
        assert "password authentication failed" in _refused(**_tcp(s, role, "not-the-password"))
        assert "no password supplied" in _refused(host=str(run), port=s.pg_port, user=role, dbname="postgres")
        with psycopg.connect(s.url_as(role, s.db_url)) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == role
    # the roles stay separate: the reader's password does not open the owner or the writer
    reader_password = credentials.password(s.home, credentials.READER_ROLE)
    for role in (credentials.OWNER_ROLE, credentials.WRITER_ROLE):
        assert "password authentication failed" in _refused(**_tcp(s, role, reader_password))


def test_the_shared_cluster_refuses_connections_without_the_password(settings, services):
    _assert_passwords_required(settings)
    path = credentials.credentials_path(settings.home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    hba = (settings.services_dir / "postgres" / "data" / "pg_hba.conf").read_text()
    assert "trust" not in hba and "scram-sha-256" in hba
    with psycopg.connect(settings.db_url) as c:
        stored = dict(c.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
                                (list(credentials.ROLES),)).fetchall())
    assert set(stored) == set(credentials.ROLES)
    assert all(v.startswith("SCRAM-SHA-256$") for v in stored.values())
    # the password itself is not in the server's log (the verifier is made on our side)
    log = (settings.services_dir / "postgres" / "postgres.log").read_text(errors="replace")
    for role in credentials.ROLES:
        assert credentials.password(settings.home, role) not in log


def test_a_cluster_that_trusted_everyone_is_switched_to_passwords(cluster_settings):
    s = cluster_settings()  # its pg_hba.conf is rewritten below
    assert svc.postgres_up(s) == "started"
    _assert_passwords_required(s)
    assert (s.services_dir / "postgres" / "data" / "pg_hba.conf").read_text() == svc.SCRAM_HBA
    assert stat.S_IMODE((s.services_dir / "postgres" / "run").stat().st_mode) == 0o700  # the socket's folder
    first = credentials.ensure_passwords(s.home)
    assert svc.postgres_up(s) == "already running"  # nothing to change the second time

    # What a cluster made before passwords looks like: trust everywhere, roles without passwords,
    # no passwords file. A password-less connection then gets in.
    with psycopg.connect(s.db_url, autocommit=True) as c:
        for role in credentials.ROLES:
            c.execute(f"ALTER ROLE {role} PASSWORD NULL")
    svc._write_hba(s, "local all all trust\nhost all all 127.0.0.1/32 trust\n")
    credentials.credentials_path(s.home).unlink()
    deadline = time.monotonic() + 10
    while True:
        try:
            psycopg.connect(**_tcp(s, "psm_reader", dbname="psm"), connect_timeout=5).close()
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "the trust pg_hba.conf was not taken"
            time.sleep(0.05)

    detail = svc.postgres_up(s)
    assert detail == "already running; now asks every connection for a SCRAM password"
    _assert_passwords_required(s)
    second = credentials.ensure_passwords(s.home)
    assert all(first[r] != second[r] for r in credentials.ROLES)  # lost passwords are made anew
    assert "password authentication failed" in _refused(**_tcp(s, "psm", first["psm"]))

