"""Dashboard latency on a 100k-tile region: "Map" pressed to the image shown, and an hour change.

Seeds a scratch database (dropped at the end): a tiny checkpoint (the text query is encoded for
real), a ~100k-tile grid at zoom 1 with embeddings for two hours, and a region set. Then it
drives the real map page with Streamlit's AppTest (the whole script run server-side: widgets,
the psm_db query, rasterising, matplotlib, PNG) and times:

* ``map``: pressing Map with the condition embedded (cold caches for that map);
* ``hour``: moving the hour slider to another embedded hour (not cached yet);
* ``hour (temporal, cached)``: the same move in temporal mode, once every hour is loaded.

It prints a Markdown table and the break-down of one map (fetch, rasterise + draw).

Usage:
    PSM_HOME=.psm .venv/bin/python bench/dashboard_bench.py [--side 317] [--dim 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PSM_HOME", str(ROOT / ".psm"))
os.environ.setdefault("MPLBACKEND", "Agg")

from psm_db import migrate  # noqa: E402
from psm_db.bulk import write_embeddings  # noqa: E402
from psm_db.engine import connection, driver_connection  # noqa: E402
from psm_db.settings import get_settings  # noqa: E402

TEXT = "sound of insects"
HOURS = (6, 20)
STEP = 0.01
WEST, SOUTH = -91.0, 40.0


def create_db() -> tuple[str, str]:
    s = get_settings()
    base = s.db_url.rsplit("/", 1)[0]
    name = f"psm_bench_dash_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    try:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            c.execute("CREATE EXTENSION IF NOT EXISTS vector")
        migrate.upgrade(url)
    except BaseException:
        drop_db(base, url)
        raise
    return base, url


def drop_db(base: str, url: str) -> None:
    with psycopg.connect(f"{base}/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def seed(url: str, side: int, dim: int, ckpt: Path) -> tuple[str, int]:
    """Tiles side x side, two hours of embeddings; returns (model version, tiles)."""
    import torch

    from psm_model import create_model, save_checkpoint

    model = create_model("tiny", seed=0, embed_dim=dim).eval()
    version = save_checkpoint(model, ckpt)
    a, b = model.match_params()
    with torch.no_grad():
        mu_q = model.encode_text([TEXT])[0][0].numpy()
    rng = np.random.default_rng(0)
    east, north = WEST + side * STEP, SOUTH + side * STEP
    t0 = time.perf_counter()
    with connection(url) as db:
        conn = driver_connection(db)  # plain SQL for the seed rows, in the same transaction as the COPY
        conn.execute(
            "INSERT INTO psm.model_versions (version, name, preset, loss, embed_dim, feature_dim, match_a, match_b,"
            " checkpoint_path) VALUES (%s, 'bench', 'tiny', 'pcmepp', %s, %s, %s, %s, %s)",
            (version, dim, dim, a, b, str(ckpt)))
        conn.execute("INSERT INTO psm.region_sets (name) VALUES ('bench')")
        halves = ((WEST, SOUTH, (WEST + east) / 2, north, "west"), ((WEST + east) / 2, SOUTH, east, north, "east"))
        for w, s, e, n, name in halves:
            conn.execute("INSERT INTO psm.regions (set_name, name, geom) VALUES ('bench', %s,"
                         " ST_Multi(ST_MakeEnvelope(%s, %s, %s, %s, 4326)))", (name, w, s, e, n))
        conn.execute(
            "INSERT INTO psm.tiles (imagery_source, gsd, size_px, zoom, grid_row, grid_col, geom, centroid)"
            " SELECT 'bench', 10, 256, 1, r, c,"
            "  ST_MakeEnvelope(%(w)s + c * %(d)s, %(s)s + r * %(d)s, %(w)s + (c + 1) * %(d)s, %(s)s + (r + 1) * %(d)s, 4326),"
            "  ST_SetSRID(ST_MakePoint(%(w)s + (c + 0.5) * %(d)s, %(s)s + (r + 0.5) * %(d)s), 4326)"
            " FROM generate_series(0, %(k)s - 1) r, generate_series(0, %(k)s - 1) c",
            {"w": WEST, "s": SOUTH, "d": STEP, "k": side})
        ids = np.array([r[0] for r in conn.execute(
            "SELECT id FROM psm.tiles ORDER BY grid_row, grid_col")], dtype=np.int64)
        cols = np.tile(np.arange(side), side)
        for hour in HOURS:
            cid = conn.execute("SELECT psm.ensure_condition(5, %s, 'inaturalist', NULL)", (hour,)).fetchone()[0]
            for start in range(0, len(ids), 20_000):
                sl = slice(start, start + 20_000)
                k = len(ids[sl])
                weight = (cols[sl] / side) * (2.0 if hour == 20 else 1.0)
                mu = weight[:, None] * mu_q[None] + rng.normal(size=(k, dim)) * 0.5
                mu /= np.linalg.norm(mu, axis=1, keepdims=True)
                var = np.exp(-4.0) * (1 + rng.uniform(size=(k, dim)))
                write_embeddings(db, version, np.array([cid]), ids[sl], mu.astype(np.float32),
                                 var.astype(np.float32), dim)
                conn.commit()
        conn.execute("ANALYZE")
        conn.commit()
    print(f"seeded {len(ids):,} tiles x {len(HOURS)} hours at d={dim} in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    return version, len(ids)


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(url: str, repeat: int) -> dict[str, list[float]]:
    from streamlit.testing.v1 import AppTest

    os.environ["PSM_DATABASE_URL"] = url
    os.environ.pop("PSM_READER_DATABASE_URL", None)
    get_settings.cache_clear()
    out: dict[str, list[float]] = {"map": [], "map: click to image sent": [], "hour": [],
                                   "hour: change to image sent": [], "hour (temporal, cached)": []}
    for i in range(repeat):
        import streamlit as st

        st.cache_data.clear()  # every repeat starts with cold data caches (the model stays loaded)
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=600)
        at.run()
        for key in ("meta_month_out", "meta_hour_out", "meta_src_out"):
            at.checkbox(key=key).uncheck()
        at.run()
        at.selectbox(key="meta_month").set_value(5)
        at.selectbox(key="meta_src").set_value("inaturalist")
        at.slider(key="meta_hour").set_value(HOURS[0])
        at.text_input(key="query_text").input(TEXT)
        at.run()  # the text is encoded here, before Map is pressed
        assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
        out["map"].append(timed(lambda: at.button(key="map_button").click().run()))  # noqa: B023
        assert at.get("image") and not at.error, [e.value for e in at.error]
        out["map: click to image sent"].append(at.session_state["map_timing"]["to_image"])
        out["hour"].append(timed(lambda: at.slider(key="meta_hour").set_value(HOURS[1]).run()))  # noqa: B023
        assert at.get("image") and not at.error
        out["hour: change to image sent"].append(at.session_state["map_timing"]["to_image"])
        at.toggle(key="temporal").set_value(True).run()  # loads every hour once (shared scale)
        at.slider(key="meta_hour").set_value(HOURS[0]).run()
        out["hour (temporal, cached)"].append(
            timed(lambda: at.slider(key="meta_hour").set_value(HOURS[1]).run()))  # noqa: B023
        assert at.get("image") and not at.error
        print(f"repeat {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in out.items()), file=sys.stderr)
    return out


def breakdown(url: str, version: str) -> dict[str, float]:
    """One map's parts, outside Streamlit: the psm_db query, rasterising, drawing."""
    import shapely
    import torch
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from dashboard import mapview
    from psm_db import ranking
    from psm_db.engine import make_engine
    from psm_model import load_checkpoint
    from psm_model.condition import Condition

    engine = make_engine(get_settings().reader_url)
    with Session(engine) as sess:
        path = sess.execute(text("SELECT checkpoint_path FROM psm.model_versions WHERE version = :v"),
                            {"v": version}).scalar_one()
        mdl, _ = load_checkpoint(path)
        with torch.no_grad():
            mu, logvar = mdl.encode_text([TEXT])
        mu, var = mu[0].numpy(), logvar[0].exp().numpy()
        region = shapely.box(WEST - 1, SOUTH - 1, 0, 60)
        parts = {}
        t = time.perf_counter()
        ranking.region_layout(session=sess, region=region, zoom=1)
        parts["region grid (psm_db, cached per region, loaded when the region is chosen)"] = time.perf_counter() - t
        t = time.perf_counter()
        gaussian = ranking.Gaussian(version, mu, var)
        condition = Condition(month=5, hour=HOURS[0], audio_source="inaturalist")
        m = ranking.map_scores(session=sess, gaussian=gaussian, region=region, condition=condition)
        parts["scores of one condition (psm_db, 100k rows)"] = time.perf_counter() - t
        t = time.perf_counter()
        ranking.rank_regions(session=sess, gaussian=gaussian, region_set="bench", condition=condition, k=20)
        parts["rank_regions (after the image)"] = time.perf_counter() - t
    scores = mapview.TileScores.from_map(m)
    t = time.perf_counter()
    r = mapview.rasterise(scores, scores.probability)
    parts["rasterise"] = time.perf_counter() - t
    t = time.perf_counter()
    mapview.render_png(r, vmin=0, vmax=float(scores.probability.max()), title="bench")
    parts["draw + PNG"] = time.perf_counter() - t
    engine.dispose()
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=317, help="tiles per side (317 -> 100,489 tiles)")
    ap.add_argument("--dim", type=int, default=128, help="embedding size")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    base, url = create_db()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            version, n = seed(url, args.side, args.dim, Path(tmp) / "bench.safetensors")
            results = run(url, args.repeat)
            parts = breakdown(url, version)
            load = os.getloadavg()[0]
    finally:
        drop_db(base, url)
    print(f"\n{n:,} tiles, d = {args.dim}, {args.repeat} repeats (median, max), server-side; "
          f"1-min load average at the end {load:.1f} on {os.cpu_count()} cores\n")
    print("| step | median | max | target |")
    print("|---|---|---|---|")
    targets = {"map": "", "map: click to image sent": "<= 2 s", "hour": "",
               "hour: change to image sent": "<= 1 s", "hour (temporal, cached)": "<= 1 s"}
    for k, v in results.items():
        print(f"| {k} | {statistics.median(v):.2f} s | {max(v):.2f} s | {targets[k]} |")
    print("\none map, by part:\n")
    print("| part | time |")
    print("|---|---|")
    for k, v in parts.items():
        print(f"| {k} | {v:.2f} s |")


if __name__ == "__main__":
    main()
