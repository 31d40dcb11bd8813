"""Dashboard fixtures: a seeded database whose answer is known, and the environment pointing at it.

The seed writes the tables directly (as the writer): a real tiny checkpoint, so free-text
queries are encoded for real; three regions (Marsh, City, Farm) tiled at zoom 1; two hours
(06:00 and 20:00) plus an all-left-out condition; tile embeddings built so that "sound of
insects" is closest in Marsh (more so at 20:00); a stored query; two evaluation runs; jobs.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from psm_db.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

REGIONS = {  # name -> (west, south, east, north)
    "Marsh": (-91.0, 40.0, -90.0, 41.0),
    "City": (-90.0, 40.0, -89.0, 41.0),
    "Farm": (-89.0, 40.0, -88.0, 41.0),
}
STEP = 0.1
"""Tile side in degrees: 10 x 30 = 300 tiles per condition."""
REGION_SET = "test-counties"
INSECTS = "sound of insects"
HOURS = (6, 20)
MONTH = 5
SOURCE = "inaturalist"
MISSING_VERSION = "badc0ffee0000001"


@dataclass(frozen=True)
class Seeded:
    """What the seed wrote, for the tests' expectations."""

    db_url: str
    version: str
    other_version: str
    checkpoint: Path
    query_id: int
    condition_ids: dict
    n_tiles: int


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _vec(a: np.ndarray) -> str:
    return "[" + ",".join(f"{float(v):.7g}" for v in a) + "]"


def seed_database(db_url: str, checkpoint: Path) -> Seeded:
    """Write the known-answer world into a migrated database."""
    import psycopg
    import torch

    from psm_model import create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("tiny", seed=0).eval()
    version = save_checkpoint(model, checkpoint)
    a, b = model.match_params()
    dim = model.config.embed_dim
    with torch.no_grad():
        mu_q, logvar_q = model.encode_text([INSECTS])
    mu_q = mu_q[0].numpy().astype(np.float64)
    var_q = logvar_q[0].exp().numpy().astype(np.float64)
    rng = np.random.default_rng(7)

    with psycopg.connect(db_url) as conn:
        cur = conn.cursor()
        for v, name, path in ((version, "tiny-test", str(checkpoint)),
                              (MISSING_VERSION, "baseline-missing", str(checkpoint.parent / "missing.safetensors"))):
            cur.execute(
                "INSERT INTO psm.model_versions (version, name, preset, loss, embed_dim, feature_dim, match_a,"
                " match_b, checkpoint_path, config) VALUES (%s, %s, 'tiny', %s, %s, %s, %s, %s, %s, %s)",
                (v, name, "pcmepp" if v == version else "infonce", dim, dim, a, b, path, '{"world_seed": 0}'))
        cur.execute("INSERT INTO psm.region_sets (name, description) VALUES (%s, 'three test counties')", (REGION_SET,))
        for name, (w, s, e, n) in REGIONS.items():
            cur.execute("INSERT INTO psm.regions (set_name, name, geom) VALUES (%s, %s,"
                        " ST_Multi(ST_MakeEnvelope(%s, %s, %s, %s, 4326)))", (REGION_SET, name, w, s, e, n))
        tiles = []  # (id, region)
        lons = np.arange(-91.0, -88.0 - 1e-9, STEP)
        lats = np.arange(40.0, 41.0 - 1e-9, STEP)
        for r, lat in enumerate(lats):
            for c, lon in enumerate(lons):
                x0, y0 = round(float(lon), 6), round(float(lat), 6)
                x1, y1 = round(x0 + STEP, 6), round(y0 + STEP, 6)
                tid = cur.execute(
                    "INSERT INTO psm.tiles (imagery_source, gsd, size_px, zoom, grid_row, grid_col, geom, centroid)"
                    " VALUES ('sentinel', 10, 256, 1, %s, %s, ST_MakeEnvelope(%s, %s, %s, %s, 4326),"
                    " ST_SetSRID(ST_MakePoint(%s, %s), 4326)) RETURNING id",
                    (r, c, x0, y0, x1, y1, (x0 + x1) / 2, (y0 + y1) / 2)).fetchone()[0]
                region = next(k for k, (w, s, e, n) in REGIONS.items() if w <= (x0 + x1) / 2 < e)
                tiles.append((tid, region))
        conds = {}
        for key, args in {6: (MONTH, 6, SOURCE, None), 20: (MONTH, 20, SOURCE, None),
                          None: (None, None, None, None)}.items():
            conds[key] = cur.execute("SELECT psm.ensure_condition(%s, %s, %s, %s)", args).fetchone()[0]
        other = _unit(rng.normal(size=(2, dim)))
        rows = []
        for key, cid in conds.items():
            weight = {6: 1.0, 20: 3.0, None: 2.0}[key]
            for tid, region in tiles:
                noise = rng.normal(size=dim) * 0.35
                if region == "Marsh":
                    mu = _unit(weight * mu_q + noise)
                elif region == "City":
                    mu = _unit(other[0] + noise)
                else:
                    mu = _unit(other[1] + noise)
                var = np.exp(-4.0) * (1.0 + rng.uniform(0, 1, size=dim)) * (2.0 if region == "Farm" else 1.0)
                rows.append((version, cid, tid, dim, _vec(mu), _vec(var), float(var.sum())))
        cur.executemany(
            "INSERT INTO psm.embeddings (model_version, condition_id, tile_id, dim, mu, var, var_sum)"
            " VALUES (%s, %s, %s, %s, %s::vector, %s::vector, %s)", rows)
        qid = cur.execute(
            "INSERT INTO psm.queries (model_version, name, kind, text, dim, mu, var, var_sum)"
            " VALUES (%s, 'insects', 'text', %s, %s, %s::vector, %s::vector, %s) RETURNING id",
            (version, INSECTS, dim, _vec(mu_q), _vec(var_q), float(var_q.sum()))).fetchone()[0]
        _seed_evals(cur, version, MISSING_VERSION, rng)
        _seed_jobs(cur, version)
        conn.commit()
    return Seeded(db_url, version, MISSING_VERSION, checkpoint, int(qid), conds, len(tiles))


def _seed_evals(cur, version: str, other: str, rng: np.random.Generator) -> None:  # type: ignore[no-untyped-def]
    import json

    for v, quality in ((version, 0.9), (other, 0.4)):
        n = 400
        ranks = {f"model/{d}/z1/text/all": rng.geometric(1.0 / (1 + (1 - quality) * n / 4), size=n).clip(1, n).tolist()
                 for d in ("i2a", "a2i")}
        results = {"rows": 96, "ranks": ranks} if v == version else {"rows": 96}  # the baseline stored none
        run_id = cur.execute(
            "INSERT INTO psm.eval_runs (model_version, dataset, split, config, results) VALUES"
            " (%s, 'world-0', 'test', '{}', %s) RETURNING id", (v, json.dumps(results))).fetchone()[0]
        for scorer in ("model", "oracle"):
            for direction in ("i2a", "a2i"):
                for zoom in (1, 3, 5):
                    for with_text in (False, True):
                        for meta in ("none", "all", "no-hour", "no-month"):
                            r10 = min(1.0, quality + (0.05 if with_text else 0) + (0.08 if scorer == "oracle" else 0)
                                      - 0.02 * (zoom - 1) / 2 - (0.1 if meta == "none" else 0))
                            cur.execute(
                                "INSERT INTO psm.eval_metrics (run_id, scorer, direction, zoom, with_text, metadata,"
                                " r_at_10, median_rank, n) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                                (run_id, scorer, direction, zoom, with_text, meta, max(0.0, r10),
                                 float(1 + (1 - r10) * 200), n))


def _seed_jobs(cur, version: str) -> None:  # type: ignore[no-untyped-def]
    done_id, failed_id, running_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cur.execute(
        "INSERT INTO psm.jobs (id, kind, status, params, model_version, total, done, message, created_at,"
        " started_at, finished_at) VALUES (%s, 'embed_region', 'succeeded', '{\"zoom\": 1}', %s, 300, 300,"
        " 'embedded 300 tiles', now() - interval '2 hours', now() - interval '2 hours',"
        " now() - interval '1 hour')", (done_id, version))
    cur.execute(
        "INSERT INTO psm.jobs (id, kind, status, params, total, done, error, created_at) VALUES"
        " (%s, 'train', 'failed', '{\"preset\": \"tiny\"}', 100, 12,"
        " 'CUDA out of memory: lower the batch size', now() - interval '30 minutes')", (failed_id,))
    cur.execute(
        "INSERT INTO psm.jobs (id, kind, status, params, model_version, total, done, message) VALUES"
        " (%s, 'embed_region', 'running', '{\"zoom\": 1}', %s, 1000, 250, 'chunk 3 of 8')", (running_id, version))
    for jid, level, msg in ((done_id, "info", "started"), (done_id, "info", "embedded 300 tiles"),
                            (failed_id, "info", "started"), (failed_id, "error", "CUDA out of memory"),
                            (running_id, "info", "chunk 3 of 8 done")):
        cur.execute("INSERT INTO psm.job_events (job_id, level, message) VALUES (%s, %s, %s)", (jid, level, msg))


@pytest.fixture(scope="session")
def dashboard_db_url(session_database) -> str:
    """A database of the dashboard tests' own.

    Their known answers count every tile and query, so rows that other test folders write
    into the shared session database must not reach them.
    """
    return session_database("psm_dash")


@pytest.fixture(scope="session")
def seeded(dashboard_db_url, tmp_path_factory) -> Seeded:
    """The seeded database (once per test session)."""
    return seed_database(dashboard_db_url, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture
def dash_env(seeded, monkeypatch):
    """Point the settings (writer and reader URLs) at the seeded database for one test."""
    monkeypatch.setenv("PSM_DATABASE_URL", seeded.db_url)
    monkeypatch.delenv("PSM_READER_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield seeded
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where browser screenshots go (test-artifacts/)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def app_path() -> str:
    """The dashboard entry point."""
    return str(ROOT / "dashboard" / "app.py")


os.environ.setdefault("MPLBACKEND", "Agg")
