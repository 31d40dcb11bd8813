from __future__ import annotations

import psycopg
import pytest

from psm_db import credentials


@pytest.mark.parametrize("sql", [
    "INSERT INTO psm.region_sets (name) VALUES ('x')",
    "UPDATE psm.jobs SET status = 'failed'",
    "DELETE FROM psm.model_versions",
    "CREATE TABLE psm.sneaky (id int)",
    "CREATE TEMP TABLE sneaky (id int)",
    "CREATE TABLE public.sneaky (id int)",
    "SELECT psm.ensure_condition(1, 2, NULL, NULL)",
])
def test_reader_cannot_write_or_create(db_url, as_role, sql):
    with psycopg.connect(as_role(db_url, "psm_reader")) as c:
        with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)):
            c.execute(sql)


def test_reader_can_read_and_call_csd(db_url, as_role):
    with psycopg.connect(as_role(db_url, "psm_reader")) as c:
        assert c.execute("SELECT count(*) FROM psm.tiles").fetchone()[0] >= 0
        assert c.execute("SELECT psm.csd('[1]', '[1]', '[0]', '[1]')").fetchone()[0] == 3.0
        timeout = c.execute("SHOW statement_timeout").fetchone()[0]
    assert timeout == "30s"


def test_writer_can_stage_and_write_conditions(db_url, as_role):
    with psycopg.connect(as_role(db_url, "psm_writer")) as c:
        cid = c.execute("SELECT psm.ensure_condition(5, 6, 'aporee', NULL)").fetchone()[0]
        again = c.execute("SELECT psm.ensure_condition(5, 6, 'aporee', NULL)").fetchone()[0]
        found = c.execute("SELECT psm.find_condition(5, 6, 'aporee', NULL)").fetchone()[0]
        c.execute("CREATE TEMP TABLE staging (id int)")
    assert cid == again == found


# --------------------------------------------------------------------------- the reader cannot lift its limits


@pytest.fixture
def watched_cluster(cluster_settings):
    """A cluster of our own (role changes are cluster-wide) with the reader's watchdog: limit 2 s."""
    from psm_db import migrate
    from psm_db import services as svc

    own = cluster_settings(reader_statement_limit=2.0, watchdog_interval=0.25)
    svc.postgres_up(own)
    migrate.upgrade(own.db_url)
    assert svc.watchdog_up(own).startswith("started")
    assert any(r.name == "watchdog" and r.running for r in svc.status(own))
    return own


def _unbounded_sleep_is_cancelled(url: str) -> float:
    import time

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SET statement_timeout = 0")  # the session lifts its own timeout
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("SELECT pg_sleep(600)")
        return time.monotonic() - started


def _role_defaults(url: str) -> dict:
    with psycopg.connect(url) as c:
        rows = c.execute("SELECT coalesce(d.datname, ''), s.setconfig FROM pg_db_role_setting s"
                         " JOIN pg_roles r ON r.oid = s.setrole LEFT JOIN pg_database d ON d.oid = s.setdatabase"
                         " WHERE r.rolname = 'psm_reader'").fetchall()
    return {db: sorted(config) for db, config in rows}


def test_a_reader_statement_is_cancelled_at_the_limit_whatever_the_session_sets(watched_cluster):
    reader = watched_cluster.reader_url
    took = _unbounded_sleep_is_cancelled(reader)
    assert 2.0 <= took < 4.0, took
    print(f"watchdog: a pg_sleep(600) with statement_timeout = 0 was cancelled after {took:.2f} s (limit 2 s)")
    # the owner's and the writer's statements are not the watchdog's business
    import time

    with psycopg.connect(watched_cluster.url_as("psm_writer"), autocommit=True) as c:
        started = time.monotonic()
        c.execute("SELECT pg_sleep(3)")
        assert time.monotonic() - started >= 3


def test_a_reader_cannot_keep_its_role_defaults_lifted(watched_cluster):
    """PostgreSQL lets a role change its own defaults (no privilege stops it); the watchdog puts them back."""
    import time

    url = watched_cluster.db_url
    reader = watched_cluster.reader_url
    with psycopg.connect(reader, autocommit=True) as c:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):  # its sessions are read-only by default
            c.execute("ALTER ROLE psm_reader SET statement_timeout = 0")
        c.execute("SET default_transaction_read_only = off")
        # what the role may not do at all, read-only or not: other roles, and its own attributes
        for sql in ("ALTER ROLE psm_writer SET statement_timeout = 0", "ALTER ROLE psm_reader CREATEROLE",
                    "ALTER ROLE psm_reader SUPERUSER", "ALTER ROLE psm_reader BYPASSRLS",
                    "CREATE ROLE sneaky LOGIN", "GRANT psm_writer TO psm_reader"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(sql)
        c.execute("ALTER ROLE psm_reader SET statement_timeout = 0")  # PostgreSQL allows this to any role
        c.execute("ALTER ROLE psm_reader IN DATABASE psm SET default_transaction_read_only = off")
        c.execute("ALTER ROLE psm_reader IN DATABASE psm SET statement_timeout = '1h'")
        lifted = time.monotonic()
    deadline = time.monotonic() + 10
    want = {"": ["default_transaction_read_only=on", "statement_timeout=2s"],
            "psm": ["default_transaction_read_only=on", "statement_timeout=2s"]}
    while _role_defaults(url) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _role_defaults(url) == want
    print(f"watchdog: the reader's lifted role defaults were put back after {time.monotonic() - lifted:.2f} s")
    with psycopg.connect(reader) as c:  # a new session is bounded and read-only again
        assert c.execute("SHOW statement_timeout").fetchone()[0] == "2s"
        assert c.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
    assert _unbounded_sleep_is_cancelled(reader) < 4.0


def test_a_reader_cannot_keep_a_password_of_its_own(watched_cluster):
    """Any role may change its own password; the watchdog sets the managed one back."""
    import time

    reader = watched_cluster.reader_url
    with psycopg.connect(reader, autocommit=True) as c:
        c.execute("SET default_transaction_read_only = off")
        c.execute("ALTER ROLE psm_reader PASSWORD 'mine'")  # PostgreSQL allows this to any role
    deadline = time.monotonic() + 10
    while True:
        try:
            psycopg.connect(reader, connect_timeout=5).close()
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "the reader's managed password was not put back"
            time.sleep(0.05)
    mine = credentials.with_user(reader, "psm_reader", "mine")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(mine, connect_timeout=5).close()
