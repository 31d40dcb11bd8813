from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import psycopg
import pytest
import shapely
import shapely.errors
import shapely.geometry
import shapely.ops
from shapely.geometry import box
from sqlalchemy import text

from psm_db import ann, catalog, ranking
from psm_db.errors import NotEmbeddedError
from psm_db.regions import load_regions
from psm_model.condition import FIELDS, Condition

MODEL = "a1b2c3d4e5f6a7b8"
OTHER = "ffee0000ffee0000"
D = 16
A, B = 4.0, 6.0
C56 = Condition(month=5, hour=6)
GRID = 40                      # GRID x GRID tiles of 0.1 deg from (-100, 40)
LON0, LAT0, STEP = -100.0, 40.0, 0.1


@dataclass
class Seed:
    url: str
    engine: object
    tile_ids: np.ndarray
    centroids: np.ndarray
    mu: np.ndarray
    var: np.ndarray
    query_id: int
    other_query_id: int
    q_mu: np.ndarray
    q_var: np.ndarray
    cond_a: int
    cond_b: int


def _gaussians(rng, n, d, centres):
    mu = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.15, (n, d))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    var = np.exp(rng.normal(-4, 0.5, (n, d)))
    return mu.astype(np.float32), var.astype(np.float32)


def _csd(mu, var, q_mu, q_var):
    mu, var = mu.astype(np.float64), var.astype(np.float64)
    return ((mu - q_mu.astype(np.float64)) ** 2).sum(1) + var.sum(1) + q_var.astype(np.float64).sum()


def _prob(d):
    return 1.0 / (1.0 + np.exp(A * d - B))


@pytest.fixture(scope="module")
def db_url(module_db_url):
    """These tests count every tile of a condition, so they get a database of their own."""
    return module_db_url


@pytest.fixture(scope="module")
def seed(db_url):
    from sqlalchemy.orm import Session

    from psm_db.engine import connect, make_engine

    rng = np.random.default_rng(7)
    with connect(db_url) as c:
        for version, dim in ((MODEL, D), (OTHER, 8)):
            c.execute(
                "INSERT INTO psm.model_versions (version, name, preset, loss, embed_dim, feature_dim,"
                " match_a, match_b, checkpoint_path) VALUES (%s, 'test', 'tiny', 'pcmepp', %s, 8, %s, %s, '/x')",
                (version, dim, A, B))
        cond_a = c.execute("SELECT psm.ensure_condition(5, 6, NULL, NULL)").fetchone()[0]
        cond_b = c.execute("SELECT psm.ensure_condition(NULL, NULL, 'aporee', NULL)").fetchone()[0]
        c.execute(
            "INSERT INTO psm.tiles (imagery_source, gsd, size_px, zoom, grid_row, grid_col, geom, centroid) "
            "SELECT 'bing', 0.6, 300, 1, r, k, "
            " ST_MakeEnvelope(%(x)s + k * %(s)s, %(y)s + r * %(s)s, %(x)s + (k + 1) * %(s)s, %(y)s + (r + 1) * %(s)s, 4326),"
            " ST_SetSRID(ST_MakePoint(%(x)s + (k + 0.5) * %(s)s, %(y)s + (r + 0.5) * %(s)s), 4326) "
            "FROM generate_series(0, %(g)s - 1) r, generate_series(0, %(g)s - 1) k ORDER BY r, k",
            {"x": LON0, "y": LAT0, "s": STEP, "g": GRID})
        rows = c.execute("SELECT id, ST_X(centroid), ST_Y(centroid) FROM psm.tiles "
                         "WHERE zoom = 1 ORDER BY id").fetchall()
        tile_ids = np.array([r[0] for r in rows])
        centroids = np.array([(r[1], r[2]) for r in rows])
        centres = rng.normal(size=(20, D))
        mu, var = _gaussians(rng, len(tile_ids), D, centres)
        with c.cursor().copy("COPY psm.embeddings (model_version, condition_id, tile_id, dim, mu, var, var_sum) "
                             "FROM STDIN") as cp:
            for i, t in enumerate(tile_ids):
                cp.write_row((MODEL, cond_a, int(t), D, mu[i], var[i], float(var[i].sum(dtype=np.float64))))
                if centroids[i, 0] < LON0 + GRID * STEP / 2:   # condition B: west half only
                    cp.write_row((MODEL, cond_b, int(t), D, mu[i], var[i], float(var[i].sum(dtype=np.float64))))
        c.commit()
    q_mu, q_var = _gaussians(rng, 1, D, centres)
    engine = make_engine(db_url)
    with Session(engine) as s, s.begin():
        qid = catalog.store_query(session=s, model_version=MODEL, kind="text", mu=q_mu[0], var=q_var[0],
                                  text="rooster at dawn", name="rooster")
        o_mu, o_var = _gaussians(rng, 1, 8, rng.normal(size=(3, 8)))
        other = catalog.store_query(session=s, model_version=OTHER, kind="text", mu=o_mu[0], var=o_var[0],
                                    text="x")
        squares = {"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"name": f"sq{i}{j}"},
             "geometry": shapely.geometry.mapping(box(LON0 + i * 2, LAT0 + j * 2, LON0 + i * 2 + 2, LAT0 + j * 2 + 2))}
            for i in range(2) for j in range(2)]}
        load_regions(session=s, source=squares, region_set="squares")
    yield Seed(db_url, engine, tile_ids, centroids, mu, var, qid, other, q_mu[0], q_var[0], cond_a, cond_b)
    engine.dispose()


@pytest.fixture
def session(seed):
    from sqlalchemy.orm import Session

    with Session(seed.engine) as s:
        yield s
        s.rollback()


def _exact(seed, k, mask=None):
    d = _csd(seed.mu, seed.var, seed.q_mu, seed.q_var)
    idx = np.arange(len(d)) if mask is None else np.flatnonzero(mask)
    order = idx[np.argsort(d[idx], kind="stable")][:k]
    return seed.tile_ids[order], d[order]


def _in(seed, geom):
    return shapely.contains_xy(geom, seed.centroids[:, 0], seed.centroids[:, 1])


# --------------------------------------------------------------------------- rankings


def test_rank_tiles_exact_matches_numpy(seed, session):
    rows = ranking.rank_tiles(session=session, query_id=seed.query_id, condition=C56, k=25,
                              method="exact")
    ids, d = _exact(seed, 25)
    assert [r.tile_id for r in rows] == ids.tolist()
    np.testing.assert_allclose([r.distance for r in rows], d, rtol=1e-5)
    np.testing.assert_allclose([r.probability for r in rows], _prob(d), rtol=1e-4)
    by_id = dict(zip(seed.tile_ids.tolist(), seed.var.astype(np.float64).sum(1), strict=True))
    np.testing.assert_allclose([r.uncertainty for r in rows], [by_id[i] for i in ids], rtol=1e-6)
    assert all(r.geom.geom_type == "Polygon" for r in rows)


@pytest.mark.parametrize("n_other", [30, 20_001])
def test_rank_tiles_whole_zoom_leaves_out_closer_tiles_of_other_zooms(seed, session, n_other):
    """Tiles at another zoom embedded at the query's mean with tiny variance (nearer than any tile
    of the zoom) must not enter the whole-zoom ranking. With few such tiles the function ranks the
    slice alone and over-fetches by their number; with more than 20,000 it joins every row."""
    session.execute(text(
        "INSERT INTO psm.tiles (imagery_source, gsd, size_px, zoom, grid_row, grid_col, geom, centroid) "
        "SELECT 'bing', 0.6, 300, 2, g / 200, g % 200, ST_MakeEnvelope(-90 + (g % 200) * 0.01, 30 + (g / 200) * 0.01,"
        " -90 + (g % 200 + 1) * 0.01, 30 + (g / 200 + 1) * 0.01, 4326),"
        " ST_SetSRID(ST_MakePoint(-90 + (g % 200 + 0.5) * 0.01, 30 + (g / 200 + 0.5) * 0.01), 4326) "
        "FROM generate_series(0, :n - 1) g"), {"n": n_other})
    session.execute(text(
        "INSERT INTO psm.embeddings (model_version, condition_id, tile_id, dim, mu, var, var_sum) "
        "SELECT :mv, :cid, t.id, :dim, q.mu, array_fill(1e-6::real, ARRAY[:dim])::vector, 1e-6 * :dim "
        "FROM psm.tiles t, psm.queries q "
        "WHERE t.zoom = 2 AND q.id = :qid ORDER BY t.id LIMIT 30"),
        {"mv": MODEL, "cid": seed.cond_a, "dim": D, "qid": seed.query_id})
    at_zoom_2 = ranking.rank_tiles(session=session, query_id=seed.query_id, condition=C56, zoom=2, k=5,
                                   method="exact")
    assert len(at_zoom_2) == 5  # they are the nearest of all ...
    rows = ranking.rank_tiles(session=session, query_id=seed.query_id, condition=C56, k=25, method="exact")
    ids, d = _exact(seed, 25)  # ... and none of them is at zoom 1
    assert [r.tile_id for r in rows] == ids.tolist()
    np.testing.assert_allclose([r.distance for r in rows], d, rtol=1e-5)
    assert max(r.distance for r in at_zoom_2) < d[0]


def test_rank_tiles_in_region_keeps_only_tiles_inside(seed, session):
    region = box(-99.0, 41.0, -98.0, 42.0)
    rows = ranking.rank_tiles(session=session, query_id=seed.query_id, region=region, condition=C56, k=10)
    ids, _ = _exact(seed, 10, _in(seed, region))
    assert [r.tile_id for r in rows] == ids.tolist()


def test_sql_and_python_agree_and_accept_wkt(seed, conn):
    rows = conn.execute(
        "SELECT tile_id, distance FROM psm.rank_tiles(%s, psm.region_from_text(%s), 5, 6, NULL, NULL, 1, 5)",
        (seed.query_id, "POLYGON((-99 41, -98 41, -98 42, -99 42, -99 41))")).fetchall()
    ids, d = _exact(seed, 5, _in(seed, box(-99, 41, -98, 42)))
    assert [r[0] for r in rows] == ids.tolist()
    np.testing.assert_allclose([r[1] for r in rows], d, rtol=1e-5)


def test_region_in_another_srid_is_transformed(seed, session):
    from pyproj import Transformer

    to_merc = Transformer.from_crs(4326, 3857, always_xy=True).transform
    region = box(-99.0, 41.0, -98.0, 42.0)
    merc = shapely.transform(region, to_merc, interleaved=False)
    a = ranking.rank_tiles(session=session, query_id=seed.query_id, region=region, condition=C56, k=10)
    b = ranking.rank_tiles(session=session, query_id=seed.query_id, region=merc, srid=3857, condition=C56, k=10)
    c = ranking.rank_tiles(session=session, query_id=seed.query_id, region=f"SRID=3857;{merc.wkt}",
                           condition=C56, k=10)
    assert [r.tile_id for r in a] == [r.tile_id for r in b] == [r.tile_id for r in c]


def test_stored_region_by_set_and_name(seed, session):
    by_name = ranking.rank_tiles(session=session, query_id=seed.query_id, region="squares/sq00", condition=C56,
                                 k=10)
    by_geom = ranking.rank_tiles(session=session, query_id=seed.query_id,
                                 region=box(LON0, LAT0, LON0 + 2, LAT0 + 2), condition=C56, k=10)
    assert [r.tile_id for r in by_name] == [r.tile_id for r in by_geom] and by_name
    m = ranking.map_scores(session=session, query_id=seed.query_id, region="squares/sq00", condition=C56)
    assert len(m) == len(ranking.map_scores(session=session, query_id=seed.query_id,
                                            region=box(LON0, LAT0, LON0 + 2, LAT0 + 2), condition=C56))
    with pytest.raises(ValueError, match="unknown stored region 'squares/nope'"):
        ranking.rank_tiles(session=session, query_id=seed.query_id, region="squares/nope", condition=C56)


def test_sql_transforms_srid_and_refuses_unknown_srid(seed, conn):
    row = conn.execute(
        "SELECT count(*) FROM psm.rank_tiles(%s, ST_Transform(ST_MakeEnvelope(-99, 41, -98, 42, 4326), 3857),"
        " 5, 6, NULL, NULL, 1, 50)", (seed.query_id,)).fetchone()
    assert row[0] == 50
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="SRID 999999"):
        conn.execute("SELECT * FROM psm.rank_tiles(%s, ST_SetSRID(ST_MakeEnvelope(0, 0, 1, 1), 999999))",
                     (seed.query_id,))


@pytest.mark.parametrize("key_type", ["halfvec", "vector"])
def test_ann_index_gives_the_exact_order(seed, session, key_type):
    entry = ann.build_ann_index(engine=seed.engine, model_version=MODEL, condition_id=seed.cond_a,
                                key_type=key_type)
    assert entry.rows == len(seed.tile_ids) and entry.dim == D + 1 and entry.key_type == key_type
    exact = ranking.rank_tiles(session=session, query_id=seed.query_id, condition=C56, k=50, method="exact")
    by_index = ranking.rank_tiles(session=session, query_id=seed.query_id, condition=C56, k=50, method="ann")
    recall = len({r.tile_id for r in by_index} & {r.tile_id for r in exact}) / 50
    assert recall >= 0.95
    assert [r.distance for r in by_index] == sorted(r.distance for r in by_index)
    # whatever the key's precision, the returned distances are the exact float32 CSD
    by_tile = {r.tile_id: r.distance for r in exact}
    shared = [r for r in by_index if r.tile_id in by_tile]
    assert shared and all(r.distance == pytest.approx(by_tile[r.tile_id], rel=1e-9) for r in shared)
    # a small region is ranked exactly even when asked for the index (fallback when the walk runs out)
    small = box(-99.0, 41.0, -98.8, 41.2)
    rows = ranking.rank_tiles(session=session, query_id=seed.query_id, region=small, condition=C56, k=4,
                              method="ann")
    assert [r.tile_id for r in rows] == _exact(seed, 4, _in(seed, small))[0].tolist()
    summary = {c.condition_id: c for c in catalog.list_conditions(session=session, model_version=MODEL)}
    assert summary[seed.cond_a].has_ann_index and summary[seed.cond_a].tiles == len(seed.tile_ids)
    assert not summary[seed.cond_b].has_ann_index


@pytest.mark.parametrize("key_type", ["halfvec", "vector"])
def test_ann_plan_uses_the_partial_hnsw_index(seed, conn, key_type):
    ann.build_ann_index(engine=seed.engine, model_version=MODEL, condition_id=seed.cond_a,
                            key_type=key_type)
    q = np.append(seed.q_mu, 0).astype(np.float32)
    plan = "\n".join(r[0] for r in conn.execute(
        f"EXPLAIN SELECT tile_id FROM psm.embeddings WHERE model_version = %s AND condition_id = %s "
        f"ORDER BY psm.ann_vector(mu, var_sum)::{key_type}({D + 1}) <-> %s::vector::{key_type} LIMIT 10",
        (MODEL, seed.cond_a, q)).fetchall())
    assert ann.ann_index_name(MODEL, seed.cond_a) in plan


def test_ann_build_arguments_are_checked(seed):
    with pytest.raises(ValueError, match="key_type must be one of vector, halfvec"):
        ann.build_ann_index(engine=seed.engine, model_version=MODEL, condition_id=seed.cond_a,
                                key_type="float8")
    with pytest.raises(ValueError, match="maintenance_work_mem"):
        ann.build_ann_index(engine=seed.engine, model_version=MODEL, condition_id=seed.cond_a,
                                maintenance_work_mem="lots")


def test_hnsw_build_memory_holds_the_graph():
    # 1M keys of 513 dimensions: float32 keys need about twice the memory of float16 ones
    half = int(ann.hnsw_build_memory(1_000_000, 513, 16, "halfvec")[:-2])
    full = int(ann.hnsw_build_memory(1_000_000, 513, 16, "vector")[:-2])
    assert 1_000_000 * 513 * 2 / 2**20 < half < full and 1_000_000 * 513 * 4 / 2**20 < full < 8192
    assert ann.hnsw_build_memory(10, 33, 16, "vector") == "64MB"
    assert ann.hnsw_build_memory(10**9, 513, 16, "vector") == "8192MB"


def test_rank_regions_aggregates_match_numpy(seed, session):
    d = _csd(seed.mu, seed.var, seed.q_mu, seed.q_var)
    p = _prob(d)
    thr = float(np.median(p))
    for agg, fn in (("mean", np.mean), ("max", np.max), ("share", lambda x: np.mean(x >= thr))):
        rows = ranking.rank_regions(session=session, query_id=seed.query_id, region_set="squares",
                                    condition=C56, agg=agg, threshold=thr)
        assert len(rows) == 4
        for r in rows:
            i, j = int(r.name[2]), int(r.name[3])
            inside = _in(seed, box(LON0 + i * 2, LAT0 + j * 2, LON0 + i * 2 + 2, LAT0 + j * 2 + 2))
            assert r.tile_count == inside.sum() == 400
            assert r.score == pytest.approx(fn(p[inside]), rel=1e-4, abs=1e-12)
            assert r.uncertainty == pytest.approx(seed.var[inside].astype(np.float64).sum(1).mean(), rel=1e-5)
        assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)
    frame = ranking.rank_regions_frame(session=session, query_id=seed.query_id, region_set="squares",
                                       condition=C56, k=2)
    assert list(frame.columns) == ["region_id", "name", "score", "tile_count", "uncertainty"]
    assert len(frame) == 2


@pytest.mark.parametrize("set_name, squares", [("all4", [(0, 0), (0, 1), (1, 0), (1, 1)]), ("corner", [(1, 1)])])
def test_rank_regions_scores_large_and_small_sets_alike(seed, session, set_name, squares):
    """A set holding half of the tiles or more is scored by one pass over the condition's slice,
    a smaller one by a lookup per member (psm.rank_regions_gaussian). After ANALYZE the 1,600
    tiles are known: all four squares (1,600 members) take the pass, one square (400) the lookups.
    Both must give numpy's aggregates."""
    session.execute(text("ANALYZE psm.tiles"))
    load_regions(session=session, region_set=set_name, source={"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": f"sq{i}{j}"},
         "geometry": shapely.geometry.mapping(box(LON0 + i * 2, LAT0 + j * 2, LON0 + i * 2 + 2, LAT0 + j * 2 + 2))}
        for i, j in squares]})
    p = _prob(_csd(seed.mu, seed.var, seed.q_mu, seed.q_var))
    thr = float(np.quantile(p, 0.3))
    for agg, fn in (("mean", np.mean), ("max", np.max), ("share", lambda x: np.mean(x >= thr))):
        rows = ranking.rank_regions(session=session, query_id=seed.query_id, region_set=set_name,
                                    condition=C56, agg=agg, threshold=thr)
        assert sorted(r.name for r in rows) == sorted(f"sq{i}{j}" for i, j in squares)
        for r in rows:
            i, j = int(r.name[2]), int(r.name[3])
            inside = _in(seed, box(LON0 + i * 2, LAT0 + j * 2, LON0 + i * 2 + 2, LAT0 + j * 2 + 2))
            assert r.tile_count == inside.sum() == 400
            assert r.score == pytest.approx(fn(p[inside]), rel=1e-4, abs=1e-12)
            assert r.uncertainty == pytest.approx(seed.var[inside].astype(np.float64).sum(1).mean(), rel=1e-5)


def test_rank_regions_pass_reads_the_slice_through_the_key_without_jit(seed, conn):
    """The one-pass branch must read the (model, condition) slice through the primary key, not
    scan every model's and condition's rows, and no query of the function may be JIT-compiled
    (with sequential scans off, an index-less filter is costed high enough to start JIT). The
    function's own settings do it; auto_explain shows the plans of its queries."""
    conn.execute("ANALYZE psm.tiles, psm.embeddings")  # the planner then knows the slice is most of the table
    conn.execute("LOAD 'auto_explain'")
    for name, value in (("log_min_duration", "0"), ("log_nested_statements", "on"), ("log_level", "notice")):
        conn.execute(f"SET auto_explain.{name} = {value}")
    plans: list[str] = []
    conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
    conn.execute("SELECT * FROM psm.rank_regions(%s, 'squares', 5, 6)", (seed.query_id,)).fetchall()
    conn.execute("SET auto_explain.log_min_duration = -1")
    passes = [p for p in plans if "WITH tile AS MATERIALIZED" in p]
    assert len(passes) == 1, plans
    assert "on embeddings e" in passes[0] and "Seq Scan on embeddings" not in passes[0], passes[0]
    assert not any("JIT:" in p for p in plans), [p for p in plans if "JIT:" in p]


def test_rank_regions_sql(seed, conn):
    rows = conn.execute("SELECT region_name, tile_count FROM psm.rank_regions(%s, 'squares', 5, 6, "
                        "p_agg => 'max', p_k => 3)", (seed.query_id,)).fetchall()
    assert len(rows) == 3 and all(r[1] == 400 for r in rows)


@pytest.mark.parametrize("shift", [0.0, 1e-9, -1e-9])
def test_a_rectangle_holds_the_tiles_st_intersects_holds_edges_included(seed, session, shift):
    """A rectangular region's layout (the index's bounding-box test, then lon/lat ranges) must
    be the ST_Intersects(region, centroid) set, also for edges through a row of centroids
    (shift 0: on the edge, inside) or a hair beside it (inside or outside by 1e-9 degrees,
    which float4 index boxes cannot tell apart). A triangle takes ST_Intersects itself. The
    SQL rankings' psm.region_tile_ids must hold the same tiles."""
    from psm_db.ranking import maps

    lons, lats = np.unique(seed.centroids[:, 0]), np.unique(seed.centroids[:, 1])
    regions = [box(lons[i] + shift, lats[j] + shift, lons[i + w] - shift, lats[j + h] - shift)
               for i, j, w, h in ((0, 0, 5, 7), (3, 11, 20, 2), (17, 4, 2, 2))]
    regions.append(shapely.Polygon([(lons[2], lats[2]), (lons[30], lats[5]), (lons[9], lats[33])]))
    for region in regions:
        got = maps.region_tiles(region, 1, session=session)
        want = session.execute(text(
            "SELECT id, ST_X(centroid), ST_Y(centroid), ST_XMin(geom), ST_YMax(geom) FROM psm.tiles "
            "WHERE zoom = 1 AND ST_Intersects(ST_GeomFromWKB(:g, 4326), centroid) ORDER BY id"),
            {"g": shapely.to_wkb(region)}).all()
        assert len(want) > 0
        assert got["tile_id"].tolist() == [r[0] for r in want], region.wkt
        in_sql = session.scalar(text("SELECT psm.region_tile_ids(ST_GeomFromWKB(:g, 4326), 1)"),
                                {"g": shapely.to_wkb(region)})
        assert sorted(in_sql) == [r[0] for r in want], region.wkt  # what psm.rank_tiles ranks
        np.testing.assert_array_equal(np.stack([got["lon"], got["lat"], got["xmin"], got["ymax"]], 1),
                                      np.array([r[1:] for r in want]))


def test_scores_by_range_by_runs_and_by_probe_agree(seed, session, monkeypatch):
    """A box cut from the 40 x 40 grid is 12 runs of 10 consecutive ids spanning 4x its tiles:
    read by runs. Forced the other ways (one range, one probe per id) the scores are the same,
    and the session's jit setting is as it was."""
    from psm_db.ranking import maps

    region = box(LON0 + 10 * STEP, LAT0 + 20 * STEP, LON0 + 19.9 * STEP, LAT0 + 31.9 * STEP)
    model = catalog.get_model(session=session, model_version=MODEL)
    ids = maps.region_tiles(region, 1, session=session)["tile_id"]
    assert len(ids) == 120 and len(np.flatnonzero(np.diff(ids) != 1)) == 11
    seen: list[str] = []
    real = maps._score_arrays
    monkeypatch.setattr(maps, "_score_arrays", lambda s, q, m: (seen.append(str(q)), real(s, q, m))[1])
    jit = session.scalar(text("SELECT current_setting('jit')"))
    got = {}
    for name, slack, min_run in (("runs", 1, 8), ("range", 8, 8), ("probe", 1, 10_000)):
        monkeypatch.setattr(maps, "RANGE_SLACK", slack)
        monkeypatch.setattr(maps, "MIN_RUN", min_run)
        got[name] = maps.scores_for_tiles(model, seed.q_mu, float(seed.q_var.sum()), seed.cond_a, ids, session=session)
        assert session.scalar(text("SELECT current_setting('jit')")) == jit
    assert "unnest(" in seen[0] and "BETWEEN" in seen[1] and "any(" in seen[2]
    want = _csd(seed.mu, seed.var, seed.q_mu, seed.q_var)
    by_id = dict(zip(seed.tile_ids.tolist(), want.tolist(), strict=True))
    for name, out in got.items():
        order = np.argsort(out["tile_id"])
        assert out["tile_id"][order].tolist() == ids.tolist(), name
        np.testing.assert_allclose(out["distance"][order], [by_id[i] for i in ids.tolist()], rtol=1e-5)


def test_map_scores_returns_every_tile_as_arrays(seed, session):
    region = box(-100.0, 40.0, -99.0, 41.0)
    m = ranking.map_scores(session=session, query_id=seed.query_id, region=region, condition=C56)
    inside = _in(seed, region)
    assert len(m) == inside.sum() == 100
    order = np.argsort(m.tile_id)
    want_ids = np.sort(seed.tile_ids[inside])
    np.testing.assert_array_equal(m.tile_id[order], want_ids)
    d = _csd(seed.mu, seed.var, seed.q_mu, seed.q_var)[inside][np.argsort(seed.tile_ids[inside])]
    np.testing.assert_allclose(m.distance[order], d, rtol=1e-5)
    np.testing.assert_allclose(m.probability[order], _prob(d), rtol=1e-4)
    assert m.bounds.shape == (100, 4)
    assert np.all(m.bounds[:, 0] < m.lon) and np.all(m.lon < m.bounds[:, 2])
    assert m.to_frame().shape == (100, 10)
    everything = ranking.map_scores(session=session, query_id=seed.query_id, condition=C56)
    assert len(everything) == len(seed.tile_ids)


# --------------------------------------------------------------------------- not embedded


def test_condition_never_embedded_names_the_command(seed, session):
    with pytest.raises(NotEmbeddedError, match=r"no embeddings for month=7.*psm embed-region --model "
                                               + MODEL + r".*--month 7"):
        ranking.rank_tiles(session=session, query_id=seed.query_id, condition=Condition(month=7))
    with pytest.raises(NotEmbeddedError, match="celery -A worker embed_region"):
        ranking.rank_regions(session=session, query_id=seed.query_id, region_set="squares", condition=Condition(month=7))
    with pytest.raises(NotEmbeddedError, match="psm embed-region"):
        ranking.map_scores(session=session, query_id=seed.query_id, condition=Condition(month=7))


def test_region_not_embedded_for_a_condition(seed, session):
    east = box(-97.0, 40.0, -96.0, 44.0)      # condition B covers the west half only
    with pytest.raises(NotEmbeddedError, match="audio_source=aporee.*zoom 1.*--audio-source aporee"):
        ranking.rank_tiles(session=session, query_id=seed.query_id, region=east, condition=Condition(audio_source="aporee"))
    with pytest.raises(NotEmbeddedError, match="zoom 3"):
        ranking.rank_tiles(session=session, query_id=seed.query_id, condition=C56, zoom=3)
    west = ranking.rank_tiles(session=session, query_id=seed.query_id, region=box(-100, 40, -99, 41),
                              condition=Condition(audio_source="aporee"), k=3)
    assert len(west) == 3


def test_sql_not_embedded_raises_with_hint(seed, conn):
    with pytest.raises(psycopg.Error) as info:
        conn.execute("SELECT * FROM psm.rank_tiles(%s, NULL, 7)", (seed.query_id,))
    assert info.value.sqlstate == "PSM01"
    assert "psm embed-region" in info.value.diag.message_hint


def test_session_stays_usable_after_an_error(seed, session):
    with pytest.raises(ValueError):
        ranking.rank_tiles(session=session, query_id=seed.query_id, condition=Condition(month=13))
    with pytest.raises(ValueError, match="zoom must be"):  # refused by the SQL function
        ranking.rank_tiles(session=session, query_id=seed.query_id, condition=C56, zoom=0)
    assert len(ranking.rank_tiles(session=session, query_id=seed.query_id, condition=C56, k=2)) == 2


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, message", [
    ({"month": 0}, r"month must be in 1\.\.12"),
    ({"month": 13}, r"month must be in 1\.\.12"),
    ({"hour": 24}, r"hour must be in 0\.\.23"),
    ({"hour": -1}, r"hour must be in 0\.\.23"),
    ({"audio_source": "spotify"}, r"unknown audio source 'spotify'; expected one of yfcc"),
    ({"caption_source": "gpt"}, r"unknown caption source 'gpt'"),
    ({"k": 0}, r"k must be an integer in 1\.\.10000"),
    ({"k": -5}, r"k must be an integer in 1\.\.10000"),
    ({"k": 10_001}, r"k must be an integer in 1\.\.10000"),
    ({"zoom": 0}, r"zoom must be an integer >= 1"),
    ({"method": "fast"}, r"method must be one of auto, exact, ann"),
    ({"region": "POLYGON((0 0, 1 0"}, r"cannot read the region as WKT or GeoJSON"),
    ({"region": "not a shape"}, r"cannot read the region as WKT or GeoJSON"),
    ({"region": '{"type": "Polygon", "coordinates": [[[0, 0], [1'}, r"cannot read the region"),
    ({"region": '{"type": "Polygon", "coordinates": "x"}'}, r"cannot read the region"),
    ({"region": "POINT(-99 41)"}, r"must be a Polygon or MultiPolygon, got Point"),
    ({"region": "POLYGON((0 0, 1 1, 1 0, 0 1, 0 0))"}, r"not valid: Self-intersection"),
    ({"region": "POLYGON((-11e6 4e6, -10e6 4e6, -10e6 5e6, -11e6 4e6))"}, r"outside lon/lat bounds"),
    ({"region": box(0, 0, 1, 1), "srid": 123456}, r"unknown SRID 123456"),
    ({"query_id": 999_999}, r"no stored query with id 999999"),
])
def test_rank_tiles_bad_input(seed, session, kwargs, message):
    kwargs = dict(kwargs)
    fields = {"month": 5, "hour": 6, **{k: kwargs.pop(k) for k in FIELDS if k in kwargs}}
    with pytest.raises(ValueError, match=message):
        ranking.rank_tiles(session=session, **{"query_id": seed.query_id, **kwargs}, condition=Condition(**fields))


def test_sql_bad_input_messages(seed, conn):
    cases = [
        ("SELECT * FROM psm.rank_tiles(%s, NULL, 0)", r"month must be in 1\.\.12"),
        ("SELECT * FROM psm.rank_tiles(%s, NULL, 5, 24)", r"hour must be in 0\.\.23"),
        ("SELECT * FROM psm.rank_tiles(%s, NULL, 5, 6, 'bogus')", "unknown audio source"),
        ("SELECT * FROM psm.rank_tiles(%s, NULL, 5, 6, NULL, NULL, 1, 0)", r"k must be in 1\.\.10000"),
        ("SELECT * FROM psm.rank_tiles(%s, psm.region_from_text('POLYGON((0 0'))", "cannot parse the region"),
        ("SELECT * FROM psm.rank_tiles(%s, psm.region_from_text('{\"type\": 1}'))", "cannot parse the region"),
        ("SELECT * FROM psm.rank_regions(%s, 'nope')", "unknown region set 'nope'"),
        ("SELECT * FROM psm.rank_regions(%s, 'squares', p_agg => 'median')", "agg must be mean, max or share"),
    ]
    for sql, message in cases:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
            conn.execute(sql, (seed.query_id,))
        conn.rollback()


def test_query_of_another_model_is_refused(seed, session):
    with pytest.raises(ValueError, match=f"encoded by model {OTHER} \\(8-d\\), not by {MODEL} \\(16-d\\)"):
        ranking.rank_tiles(session=session, query_id=seed.other_query_id, model_version=MODEL)
    with pytest.raises(ValueError, match="encoded by model"):
        ranking.map_scores(session=session, query_id=seed.other_query_id, model_version=MODEL)
    with pytest.raises(NotEmbeddedError, match=f"model {OTHER} has no embeddings"):
        ranking.rank_tiles(session=session, query_id=seed.other_query_id)


def test_store_query_checks_sizes_and_values(seed, session):
    good = np.ones(D, dtype=np.float32) / 4
    with pytest.raises(ValueError, match="sizes 8 and 8, but model .* embeds in 16"):
        catalog.store_query(session=session, model_version=MODEL, kind="text", mu=good[:8], var=good[:8])
    with pytest.raises(ValueError, match="sigma\\^2 of the query must be > 0"):
        catalog.store_query(session=session, model_version=MODEL, kind="text", mu=good, var=-good)
    with pytest.raises(ValueError, match="NaN"):
        catalog.store_query(session=session, model_version=MODEL, kind="text", mu=good * np.nan, var=good)
    with pytest.raises(ValueError, match="unknown model version"):
        catalog.store_query(session=session, model_version="00000000", kind="text", mu=good, var=good)
    with pytest.raises(ValueError, match="kind must be one of"):
        catalog.store_query(session=session, model_version=MODEL, kind="video", mu=good, var=good)


def test_unknown_model_and_query_have_their_own_errors(seed, session):
    from psm_db.errors import UnknownModelError, UnknownQueryError

    good = np.ones(D, dtype=np.float32) / 4
    with pytest.raises(UnknownModelError, match=f"unknown model version '00000000'; known versions: .*{MODEL}"):
        catalog.store_query(session=session, model_version="00000000", kind="text", mu=good, var=good)
    with pytest.raises(UnknownModelError):
        ranking.map_scores(session=session, gaussian=ranking.Gaussian("00000000", good, good))
    with pytest.raises(UnknownModelError):
        ranking.rank_regions(session=session, gaussian=ranking.Gaussian("00000000", good, good), region_set="squares")
    with pytest.raises(UnknownModelError):
        ranking.rank_tiles(session=session, gaussian=ranking.Gaussian("00000000", good, good))
    with pytest.raises(UnknownModelError):
        ann.build_ann_index(engine=seed.engine, model_version="00000000", condition_id=seed.cond_a)
    with pytest.raises(UnknownQueryError, match="no stored query with id 999999"):
        ranking.map_scores(session=session, query_id=999_999)
    with pytest.raises(UnknownQueryError):
        catalog.stored_query_gaussian(999_999, session=session)
    assert issubclass(UnknownModelError, LookupError) and issubclass(UnknownQueryError, LookupError)


def test_unknown_region_set(seed, session):
    with pytest.raises(ValueError, match="unknown region set 'nowhere'.*psm regions load"):
        ranking.rank_regions(session=session, query_id=seed.query_id, region_set="nowhere", condition=C56)
    with pytest.raises(ValueError, match="unknown region set"):
        catalog.list_regions(session=session, region_set="nowhere")
    with pytest.raises(ValueError, match="threshold must be a probability"):
        ranking.rank_regions(session=session, query_id=seed.query_id, region_set="squares", threshold=2.0)


# --------------------------------------------------------------------------- hostile strings


HOSTILE = [
    "'; DROP TABLE psm.tiles; --",
    "Robert'); DELETE FROM psm.embeddings; --",
    "$$; SELECT pg_sleep(10); $$",
    "\\'; TRUNCATE psm.queries CASCADE; --",
    "%s %(x)s {0} ?",
    "ünïcødé 🐓 \" ' ` ; --",
]


@pytest.mark.parametrize("evil", HOSTILE)
def test_hostile_strings_are_data(seed, session, evil):
    good = seed.q_mu
    qid = catalog.store_query(session=session, model_version=MODEL, kind="text", mu=good, var=seed.q_var,
                              text=evil, name=evil)
    assert catalog.get_query(session=session, query_id=qid).text == evil
    with pytest.raises(ValueError, match="unknown audio source"):
        ranking.rank_tiles(session=session, query_id=seed.query_id, condition=Condition(audio_source=evil))
    with pytest.raises(ValueError, match="unknown region set"):
        ranking.rank_regions(session=session, query_id=seed.query_id, region_set=evil)
    with pytest.raises(ValueError):
        ranking.rank_tiles(session=session, query_id=seed.query_id, region=evil)
    assert len(ranking.rank_tiles(session=session, query_id=seed.query_id, condition=C56, k=3)) == 3


def test_tables_survive_hostile_inputs(seed, conn):
    n = conn.execute("SELECT count(*) FROM psm.tiles").fetchone()[0]
    assert n == GRID * GRID
    assert conn.execute("SELECT count(*) FROM psm.embeddings").fetchone()[0] > n


# --------------------------------------------------------------------------- listings


def test_listings(seed, session):
    assert {m.version for m in catalog.list_models(session=session)} >= {MODEL, OTHER}
    sets = {s.name: s for s in catalog.list_region_sets(session=session)}
    assert sets["squares"].regions == 4
    assert [r.name for r in catalog.list_regions(session=session, region_set="squares")] == [
        "sq00", "sq01", "sq10", "sq11"]
    assert {q.id for q in catalog.list_queries(session=session, model_version=MODEL)} >= {seed.query_id}
    assert catalog.eval_runs(session=session) == [] or all(r.id for r in catalog.eval_runs(session=session))
    assert isinstance(catalog.jobs(session=session, limit=5), list)
    frame = ranking.rank_tiles_frame(session=session, query_id=seed.query_id, condition=C56, k=4)
    assert list(frame.columns) == ["tile_id", "geom", "distance", "probability", "uncertainty"]
    assert frame["distance"].is_monotonic_increasing


# --------------------------------------------------------------------------- roles


def test_reader_can_rank_but_not_write(seed, as_role):
    from sqlalchemy.orm import Session

    from psm_db.engine import make_engine

    with psycopg.connect(as_role(seed.url, "psm_reader")) as c:
        tiles = c.execute("SELECT count(*) FROM psm.rank_tiles(%s, NULL, 5, 6, NULL, NULL, 1, 7)",
                          (seed.query_id,)).fetchone()[0]
        regions = c.execute("SELECT count(*) FROM psm.rank_regions(%s, 'squares', 5, 6)",
                            (seed.query_id,)).fetchone()[0]
        assert (tiles, regions) == (7, 4)
        for sql in (
            "INSERT INTO psm.queries (model_version, kind, dim, mu, var, var_sum) "
            "SELECT model_version, kind, dim, mu, var, var_sum FROM psm.queries LIMIT 1",
            "DELETE FROM psm.ann_indexes",
            "CREATE INDEX sneaky ON psm.embeddings (tile_id)",
        ):
            with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)):
                c.execute(sql)
            c.rollback()
    reader = make_engine(as_role(seed.url, "psm_reader"))
    try:
        with Session(reader) as s:
            assert len(ranking.rank_tiles(session=s, query_id=seed.query_id, condition=C56, k=3)) == 3
            assert len(ranking.map_scores(session=s, query_id=seed.query_id, condition=C56)) == GRID * GRID
            assert len(ranking.rank_regions(session=s, query_id=seed.query_id, region_set="squares",
                                            condition=C56)) == 4
            with pytest.raises(Exception, match="read-only|permission denied"):
                catalog.store_query(session=s, model_version=MODEL, kind="text", mu=seed.q_mu, var=seed.q_var)
    finally:
        reader.dispose()
    with pytest.raises(Exception, match="must be owner|permission denied"):
        ann.build_ann_index(engine=make_engine(as_role(seed.url, "psm_writer")), model_version=MODEL,
                                condition_id=seed.cond_b, concurrently=False)


# --------------------------------------------------------------------------- knobs and CLI


def test_the_index_walk_reads_k_candidates_unless_asked_for_more(seed, conn):
    """By default the ANN path takes k rows from the index walk (its order is the CSD order):
    asking for more than the beam holds started a second round of the iterative scan and read
    ef_search + k rows. psm.ann_candidates still asks for more. auto_explain shows the walk's
    actual rows."""
    ann.build_ann_index(engine=seed.engine, model_version=MODEL, condition_id=seed.cond_a)
    conn.execute("LOAD 'auto_explain'")
    for name, value in (("log_min_duration", "0"), ("log_nested_statements", "on"), ("log_level", "notice"),
                        ("log_analyze", "on"), ("log_timing", "off")):
        conn.execute(f"SET auto_explain.{name} = {value}")
    plans: list[str] = []
    conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))

    def walked(k: int) -> int:
        plans.clear()
        rows = conn.execute("SELECT tile_id FROM psm.rank_tiles(%s, NULL, 5, 6, NULL, NULL, 1, %s, 'ann')",
                            (seed.query_id, k)).fetchall()
        assert len(rows) == k
        (walk,) = [p for p in plans if "<->" in p and "Index Scan" in p]
        limit = re.search(r"Limit +\([^)]*\) \(actual rows=(\d+)", walk)
        assert limit, walk
        return int(limit.group(1))

    assert walked(20) == 20
    conn.execute("SET psm.ann_candidates = 150")
    assert walked(20) == 150
    conn.execute("RESET psm.ann_candidates")
    conn.execute("SET auto_explain.log_min_duration = -1")


def test_ann_settings_are_honoured_and_clamped(seed, conn):
    ann.build_ann_index(engine=seed.engine, model_version=MODEL, condition_id=seed.cond_a)
    conn.execute("SET psm.ann_ef_search = 5000")
    conn.execute("SET psm.ann_candidates = 1")
    rows = conn.execute("SELECT tile_id FROM psm.rank_tiles(%s, NULL, 5, 6, NULL, NULL, 1, 20, 'ann')",
                        (seed.query_id,)).fetchall()
    assert len(rows) == 20
    conn.execute("RESET psm.ann_ef_search")
    conn.execute("RESET psm.ann_candidates")
    assert conn.execute("SHOW hnsw.ef_search").fetchone()[0] == "40"


@pytest.fixture
def cli(seed, monkeypatch):
    from typer.testing import CliRunner

    from psm_db.settings import get_settings
    from worker.cli.query import app as query_app

    monkeypatch.setenv("PSM_DATABASE_URL", seed.url)
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(query_app, [str(a) for a in args])
    get_settings.cache_clear()


def test_cli_rank_index_and_errors(seed, cli):
    out = cli("rank", seed.query_id, "--month", 5, "--hour", 6, "-k", 3)
    assert out.exit_code == 0, out.output
    assert str(_exact(seed, 1)[0][0]) in out.output
    out = cli("rank", seed.query_id, "--set", "squares", "--month", 5, "--hour", 6, "--agg", "max")
    assert out.exit_code == 0 and "sq" in out.output
    out = cli("rank", seed.query_id, "--month", 9)
    assert out.exit_code == 1 and "psm embed-region" in out.output
    out = cli("rank", seed.query_id, "--month", 13)
    assert out.exit_code == 1 and "month must be in 1..12" in out.output
    out = cli("index", "--model", MODEL, "--audio-source", "aporee")
    assert out.exit_code == 0, out.output
    assert f"{ann.ann_index_name(MODEL, seed.cond_b)}: {GRID * GRID // 2} rows" in out.output
    out = cli("index", "--model", MODEL, "--month", 2)
    assert out.exit_code == 1 and "never embedded" in out.output
    out = cli("list", "--model", MODEL)
    assert out.exit_code == 0 and "rooster" in out.output


def test_cli_conditions(seed, cli):
    """--condition TEXT is the same condition as the flags; bad ones are refused with what to fix."""
    by_flags = cli("rank", seed.query_id, "--month", 5, "--hour", 6, "-k", 3)
    by_text = cli("rank", seed.query_id, "--condition", "month=5, hour=6", "-k", 3)
    assert by_flags.exit_code == by_text.exit_code == 0 and by_text.output == by_flags.output
    assert cli("rank", seed.query_id, "-c", "audio=Aporee", "-k", 2).exit_code == 0
    assert cli("index", "--model", MODEL, "--condition", "audio=aporee").exit_code == 0
    for args, message in [
        (("--hour", 24), "hour 24 is out of range: hour must be in 0..23, or leave it out"),
        (("--audio-source", "spotify"), "unknown audio source 'spotify'; expected one of yfcc"),
        (("--caption-source", "gpt"), "unknown caption source 'gpt'"),
        (("--condition", "month=13"), "month 13 is out of range: month must be in 1..12"),
        (("--condition", "weekday=3"), "bad condition part 'weekday=3'"),
        (("--condition", "hour=noon"), "hour must be an integer in 0..23, got 'noon'"),
        (("--condition", "month=5", "--hour", 6), "either as --condition 'month=5' or as --hour, not both"),
    ]:
        for command in (("rank", seed.query_id), ("index", "--model", MODEL)):
            out = cli(*command, *args)
            assert out.exit_code == 1 and message in " ".join(out.output.split()), (command, args, out.output)


def test_embeddings_keep_mu_inline(conn):
    options = conn.execute("SELECT reloptions FROM pg_class WHERE oid = 'psm.embeddings'::regclass").fetchone()[0]
    storage = dict(conn.execute(
        "SELECT attname, attstorage FROM pg_attribute WHERE attrelid = 'psm.embeddings'::regclass "
        "AND attname IN ('mu', 'var')").fetchall())
    assert "toast_tuple_target=4080" in options
    assert storage == {"mu": "m", "var": "e"}


def test_exact_threshold_setting_switches_a_region_to_the_index(seed, conn):
    ann.build_ann_index(engine=seed.engine, model_version=MODEL, condition_id=seed.cond_a)
    region = "POLYGON((-99 41, -98 41, -98 42, -99 42, -99 41))"
    sql = ("SELECT tile_id FROM psm.rank_tiles(%s, psm.region_from_text(%s), 5, 6, NULL, NULL, 1, 10)")
    exact = [r[0] for r in conn.execute(sql, (seed.query_id, region)).fetchall()]
    conn.execute("SET psm.exact_threshold = 5")
    assert conn.execute("SELECT psm.exact_threshold()").fetchone()[0] == 5
    by_index = [r[0] for r in conn.execute(sql, (seed.query_id, region)).fetchall()]
    conn.execute("RESET psm.exact_threshold")
    assert exact == _exact(seed, 10, _in(seed, box(-99, 41, -98, 42)))[0].tolist()
    assert len(set(by_index) & set(exact)) >= 9


def test_map_layout_is_cached_per_region_and_refreshed_when_tiles_arrive(fresh_db_url):
    """map_scores keeps a region's tile layout per process; a tile added since is not missed."""
    from sqlalchemy.orm import Session

    from psm_db import migrate
    from psm_db.engine import connect, make_engine

    migrate.upgrade(fresh_db_url)
    rng = np.random.default_rng(11)
    with connect(fresh_db_url) as c:
        c.execute("INSERT INTO psm.model_versions (version, name, preset, loss, embed_dim, feature_dim, match_a,"
                  " match_b, checkpoint_path) VALUES (%s, 't', 'tiny', 'pcmepp', 4, 8, 1, 1, '/x')", (MODEL,))
        cid = c.execute("SELECT psm.ensure_condition(5, 6, NULL, NULL)").fetchone()[0]

        def add_tile(col: int) -> None:
            tid = c.execute(
                "INSERT INTO psm.tiles (imagery_source, gsd, size_px, zoom, grid_row, grid_col, geom, centroid)"
                " VALUES ('bing', 0.6, 300, 1, 0, %(k)s, ST_MakeEnvelope(%(k)s, 0, %(k)s + 1, 1, 4326),"
                " ST_SetSRID(ST_MakePoint(%(k)s + 0.5, 0.5), 4326)) RETURNING id", {"k": col}).fetchone()[0]
            mu = rng.normal(size=4).astype(np.float32)
            mu /= np.linalg.norm(mu)
            var = np.full(4, 0.1, dtype=np.float32)
            c.execute("INSERT INTO psm.embeddings (model_version, condition_id, tile_id, dim, mu, var, var_sum)"
                      " VALUES (%s, %s, %s, 4, %s, %s, 0.4)", (MODEL, cid, tid, mu, var))
            c.commit()

        for col in range(4):
            add_tile(col)
        q = np.array([1, 0, 0, 0], dtype=np.float32)
        qid = c.execute("INSERT INTO psm.queries (model_version, kind, text, dim, mu, var, var_sum) VALUES"
                        " (%s, 'text', 'x', 4, %s, %s, 0.4) RETURNING id",
                        (MODEL, q, np.full(4, 0.1, dtype=np.float32))).fetchone()[0]
        c.commit()
        region = box(-0.1, -0.1, 10.0, 1.1)
        engine = make_engine(fresh_db_url)
        try:
            with Session(engine) as s:
                first = ranking.map_scores(session=s, query_id=qid, region=region, condition=C56)
                again = ranking.map_scores(session=s, query_id=qid, region=region, condition=C56)
                assert len(first) == 4
                np.testing.assert_array_equal(np.sort(first.tile_id), np.sort(again.tile_id))
                np.testing.assert_allclose(first.distance[np.argsort(first.tile_id)],
                                           again.distance[np.argsort(again.tile_id)])
                west = ranking.map_scores(session=s, query_id=qid, region=box(-0.1, -0.1, 1.9, 1.1),
                                          condition=C56)
                assert len(west) == 2  # another region gets its own layout
                s.rollback()
                add_tile(4)
                later = ranking.map_scores(session=s, query_id=qid, region=region, condition=C56)
                assert len(later) == 5
                i = int(np.argmax(later.tile_id))
                assert later.bounds[i].tolist() == [4.0, 0.0, 5.0, 1.0] and later.lon[i] == 4.5
        finally:
            engine.dispose()


# --------------------------------------------------------------------------- the hint runs as printed


def _hint_command(hint: str) -> list[str]:
    """The psm command of a "not embedded" hint, split as a shell splits it."""
    import shlex

    assert hint.startswith("Embed it first: psm embed-region "), hint
    command = hint.removeprefix("Embed it first: ").split("  (")[0]
    argv = shlex.split(command)
    assert argv[:2] == ["psm", "embed-region"], argv
    return argv[2:]


@pytest.fixture
def embed_cli(seed, monkeypatch, tmp_path):
    """Run ``psm embed-region`` in-process on the seed database; tasks are recorded, not sent."""
    from typer.testing import CliRunner

    from psm_db.engine import connect
    from psm_db.settings import get_settings
    from worker.cli import app as psm_app
    from worker.cli import embed as embed_cli_module

    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"")  # the planner checks that the file is there; nothing loads it
    with connect(seed.url) as c:
        c.execute("UPDATE psm.model_versions SET checkpoint_path = %s WHERE version = %s", (str(checkpoint), MODEL))
        c.commit()
    sent: list[str] = []

    def publish(app, name, args):
        assert name == "psm.embed_region"
        sent.append(args[0])
        return f"task-{len(sent)}"

    monkeypatch.setattr(embed_cli_module, "_celery_app", lambda ctx: None)
    monkeypatch.setattr("worker.api.publish", publish)
    monkeypatch.setenv("PSM_DATABASE_URL", seed.url)
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda argv: (runner.invoke(psm_app, ["embed-region", *argv]), sent)
    get_settings.cache_clear()
    with connect(seed.url) as c:
        c.execute("UPDATE psm.model_versions SET checkpoint_path = '/x' WHERE version = %s", (MODEL,))
        c.execute("DELETE FROM psm.jobs WHERE kind = 'embed_region'")
        c.commit()


@pytest.mark.parametrize("case", ["region set", "polygon", "anywhere"])
def test_not_embedded_hint_is_a_command_that_runs_as_printed(seed, session, embed_cli, case):
    """The hint named a region set as --region 'region set ''squares''', which the command refused."""
    never = Condition(month=7, audio_source="aporee")
    triangle = shapely.geometry.Polygon([(-99.5, 40.5), (-98.2, 40.5), (-99.5, 41.7)])
    with pytest.raises(NotEmbeddedError) as info:
        if case == "region set":
            ranking.rank_regions(session=session, query_id=seed.query_id, region_set="squares", condition=never)
        elif case == "polygon":
            ranking.rank_tiles(session=session, query_id=seed.query_id, region=triangle, condition=never)
        else:
            ranking.rank_tiles(session=session, query_id=seed.query_id, condition=never)
    message = str(info.value)
    if case == "region set":
        assert "in region set 'squares'" in message  # the message still names the set
    hint = message[message.index("Embed it first: "):]
    argv = _hint_command(hint)
    region = argv[argv.index("--region") + 1]
    covered = {"region set": shapely.ops.unary_union([box(LON0, LAT0, LON0 + 4, LAT0 + 4)]), "polygon": triangle,
               "anywhere": box(LON0, LAT0, LON0 + GRID * STEP, LAT0 + GRID * STEP)}[case]
    from psm_db.geometry import parse_region

    assert parse_region(region).covers(covered), region  # the bbox covers what was ranked
    out, sent = embed_cli(argv)
    assert out.exit_code == 0, out.output
    job_id = out.stdout.strip().splitlines()[-1]
    assert sent == [job_id]
    with session.get_bind().connect() as c:
        params = c.execute(text("SELECT params FROM psm.jobs WHERE id = :id"), {"id": job_id}).scalar_one()
    assert params["model_version"] == MODEL and params["zooms"] == [1]
    assert params["conditions"] == [{"month": 7, "hour": None, "audio_source": "aporee", "caption_source": None}]


def test_hint_quotes_values_for_the_shell(conn):
    hint = conn.execute("SELECT psm.embed_hint('m1', NULL, NULL, 'it''s', NULL, 1, 'POLYGON((0 0, 1 0, 1 1, 0 0))')"
                        ).fetchone()[0]
    import shlex

    argv = shlex.split(hint.removeprefix("Embed it first: ").split("  (")[0])
    assert argv == ["psm", "embed-region", "--model", "m1", "--region", "POLYGON((0 0, 1 0, 1 1, 0 0))",
                    "--zoom", "1", "--audio-source", "it's"]
