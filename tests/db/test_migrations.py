from __future__ import annotations

import psycopg

from psm_db import migrate

TABLES = {
    "model_versions", "tiles", "tile_features", "conditions", "embeddings", "queries",
    "region_sets", "regions", "jobs", "job_chunks", "job_events", "eval_runs", "eval_metrics",
}


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as c:
        rows = c.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'psm'"
        ).fetchall()
    return {r[0] for r in rows}


def test_upgrade_creates_every_table_and_csd(db_url):
    assert TABLES <= _tables(db_url)
    with psycopg.connect(db_url) as c:
        volatility, strict, parallel = c.execute(
            "SELECT provolatile, proisstrict, proparallel FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'psm' AND p.proname = 'csd'"
        ).fetchone()
    assert (volatility, strict, parallel) == ("i", True, "s")


def test_downgrade_base_then_upgrade_head_round_trips(fresh_db_url):
    migrate.upgrade(fresh_db_url)
    assert migrate.current(fresh_db_url) is not None
    assert TABLES <= _tables(fresh_db_url)
    migrate.downgrade(fresh_db_url, "base")
    assert _tables(fresh_db_url) == set()
    assert migrate.current(fresh_db_url) is None
    migrate.upgrade(fresh_db_url)
    assert TABLES <= _tables(fresh_db_url)
    with psycopg.connect(fresh_db_url) as c:
        value = c.execute("SELECT psm.csd('[0,0]', '[1,1]', '[3,4]', '[1,1]')").fetchone()[0]
    assert abs(value - 29.0) < 1e-9


def test_alembic_cli_upgrade_head(fresh_db_url, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {"PATH": "/usr/bin:/bin", "PSM_DATABASE_URL": fresh_db_url, "HOME": str(tmp_path)}
    alembic = Path(sys.executable).parent / "alembic"
    out = subprocess.run([str(alembic), "upgrade", "head"], cwd=root, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "embeddings" in _tables(fresh_db_url)
