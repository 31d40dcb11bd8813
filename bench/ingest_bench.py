"""Ingest benchmark: embeddings per second through psm_db.bulk (COPY -> staging -> upsert) vs psql \\copy.

Usage:
    PSM_HOME=.psm .venv/bin/python bench/ingest_bench.py --rows 100000 --dim 512 --batch 10000

It creates a throwaway database on the configured server, migrates it, writes ``--rows``
random Gaussians at ``--dim`` through ``write_embeddings`` (one transaction per batch, the
same as a worker chunk), then truncates and loads the very same rows (same bytes, plus the
two constant columns) straight into ``psm.embeddings`` with ``psql \\copy ... (FORMAT
binary)``, which is the limit of any COPY path. It repeats both ``--repeat`` times and
prints the best of each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from psm_db import bulk, migrate  # noqa: E402
from psm_db.engine import connect, connection, driver_connection  # noqa: E402
from psm_db.pgbinary import copy_payload  # noqa: E402
from psm_db.settings import Settings  # noqa: E402


def _with_db(url: str, name: str) -> str:
    return url.rpartition("/")[0] + "/" + name


def setup_db(admin: str, n: int, dim: int) -> str:
    name = f"psm_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(admin, name)
    migrate.upgrade(url)
    with connect(url) as conn:
        conn.execute(
            "INSERT INTO psm.model_versions (version, name, preset, loss, embed_dim, feature_dim,"
            " match_a, match_b, checkpoint_path) VALUES ('0badc0de', 'bench', 'bench', 'pcmepp',"
            " %s, %s, 5, 5, '/dev/null')",
            (dim, dim),
        )
        conn.execute("SELECT psm.ensure_condition(5, 20, 'inaturalist', NULL)")
        conn.execute(
            "INSERT INTO psm.tiles (imagery_source, gsd, size_px, zoom, grid_row, grid_col, geom, centroid)"
            " SELECT 'bench', 10, 256, 1, g / 1000, g %% 1000,"
            " ST_MakeEnvelope(g %% 1000 * 0.001, g / 1000 * 0.001, g %% 1000 * 0.001 + 0.001,"
            "   g / 1000 * 0.001 + 0.001, 4326),"
            " ST_SetSRID(ST_MakePoint(g %% 1000 * 0.001 + 0.0005, g / 1000 * 0.001 + 0.0005), 4326)"
            " FROM generate_series(0, %s - 1) AS g",
            (n,),
        )
        conn.commit()
    return url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=10_000, help="rows per transaction (a worker chunk)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the throwaway database")
    ap.add_argument("--upsert-only", action="store_true",
                    help="skip the direct COPY and time the staging upsert (the path of a re-run chunk)")
    args = ap.parse_args()
    if args.upsert_only:
        bulk._copy_embeddings_direct = lambda *a, **k: False  # type: ignore[assignment]

    settings = Settings()
    admin = _with_db(settings.db_url, "postgres")
    url = setup_db(admin, args.rows, args.dim)
    rng = np.random.default_rng(0)
    n, d = args.rows, args.dim
    mu = rng.standard_normal((n, d), dtype=np.float32)
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    var = np.exp(rng.normal(-4, 0.3, (n, d))).astype(np.float32)
    psql = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    try:
        with connect(url) as conn:
            cid = conn.execute("SELECT psm.find_condition(5, 20, 'inaturalist', NULL)").fetchone()[0]
            tile_ids = np.array([r[0] for r in conn.execute("SELECT id FROM psm.tiles ORDER BY id")],
                                dtype=np.int64)
        # The "same bytes" for psql: every embeddings column, straight into the target table.
        full = _full_payload("0badc0de", cid, tile_ids, mu, var, d)
        tmp = Path(tempfile.mkdtemp(prefix="psm-ingest-"))
        os.chmod(tmp, 0o755)
        payload = tmp / "embeddings.bin"
        payload.write_bytes(full)
        best_ours, best_psql = 0.0, 0.0
        for rep in range(args.repeat):
            with connection(url) as db:
                conn = driver_connection(db)  # plain SQL around the COPY path, on the same connection
                conn.execute("TRUNCATE psm.embeddings")
                conn.commit()
                conn.execute("CHECKPOINT")
                conn.commit()
                t0 = time.perf_counter()
                for s in range(0, n, args.batch):
                    e = min(n, s + args.batch)
                    bulk.write_embeddings(db, "0badc0de", cid, tile_ids[s:e], mu[s:e], var[s:e], d)
                    conn.commit()
                ours = n / (time.perf_counter() - t0)
                count = conn.execute("SELECT count(*) FROM psm.embeddings").fetchone()[0]
                assert count == n, count
                conn.execute("TRUNCATE psm.embeddings")
                conn.commit()
                conn.execute("CHECKPOINT")
                conn.commit()
            t0 = time.perf_counter()
            subprocess.run(
                [psql, url, "-v", "ON_ERROR_STOP=1", "-qc",
                 f"\\copy psm.embeddings (model_version, condition_id, tile_id, dim, mu, var, var_sum)"
                 f" FROM '{payload}' WITH (FORMAT binary)"],
                check=True,
            )
            limit = n / (time.perf_counter() - t0)
            with connect(url) as conn:
                assert conn.execute("SELECT count(*) FROM psm.embeddings").fetchone()[0] == n
            print(f"run {rep}: write_embeddings {ours:,.0f} rows/s   psql \\copy {limit:,.0f} rows/s   "
                  f"ratio {ours / limit:.2f}")
            best_ours, best_psql = max(best_ours, ours), max(best_psql, limit)
        print(f"best: rows={n} dim={d} batch={args.batch}: COPY path {best_ours:,.0f} rows/s, "
              f"psql \\copy {best_psql:,.0f} rows/s, ratio {best_ours / best_psql:.2f}, "
              f"payload {len(full) / n:.0f} B/row")
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}" WITH (FORCE)')


def _full_payload(version: str, cid: int, tile_ids: np.ndarray, mu: np.ndarray, var: np.ndarray, d: int) -> bytes:
    return copy_payload([("bytes", version.encode()), ("int4", cid), ("int8", tile_ids), ("int4", d),
                         ("vector", mu), ("vector", var), ("float8", var.sum(axis=1, dtype=np.float64))],
                        len(tile_ids))


if __name__ == "__main__":
    main()
