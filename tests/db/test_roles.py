from __future__ import annotations

import psycopg
import pytest


def _as(url: str, role: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{role}@{rest.split('@', 1)[1]}"


@pytest.mark.parametrize("sql", [
    "INSERT INTO psm.region_sets (name) VALUES ('x')",
    "UPDATE psm.jobs SET status = 'failed'",
    "DELETE FROM psm.model_versions",
    "CREATE TABLE psm.sneaky (id int)",
    "CREATE TEMP TABLE sneaky (id int)",
    "CREATE TABLE public.sneaky (id int)",
    "SELECT psm.ensure_condition(1, 2, NULL, NULL)",
])
def test_reader_cannot_write_or_create(db_url, sql):
    with psycopg.connect(_as(db_url, "psm_reader")) as c:
        with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)):
            c.execute(sql)


def test_reader_can_read_and_call_csd(db_url):
    with psycopg.connect(_as(db_url, "psm_reader")) as c:
        assert c.execute("SELECT count(*) FROM psm.tiles").fetchone()[0] >= 0
        assert c.execute("SELECT psm.csd('[1]', '[1]', '[0]', '[1]')").fetchone()[0] == 3.0
        timeout = c.execute("SHOW statement_timeout").fetchone()[0]
    assert timeout == "30s"


def test_writer_can_stage_and_write_conditions(db_url):
    with psycopg.connect(_as(db_url, "psm_writer")) as c:
        cid = c.execute("SELECT psm.ensure_condition(5, 6, 'aporee', NULL)").fetchone()[0]
        again = c.execute("SELECT psm.ensure_condition(5, 6, 'aporee', NULL)").fetchone()[0]
        found = c.execute("SELECT psm.find_condition(5, 6, 'aporee', NULL)").fetchone()[0]
        c.execute("CREATE TEMP TABLE staging (id int)")
    assert cid == again == found
