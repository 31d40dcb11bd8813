"""The Gaussian forms of the SQL ranking (migration 0008) and the query-id forms that wrap them.

psm.rank_tiles_gaussian / psm.rank_regions_gaussian take (model_version, mu, var, ...) where
psm.rank_tiles / psm.rank_regions take the id of a stored query; the latter now look the query
up and call the former, and must behave exactly as they did at revision 0007.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

MODEL = "0123456789abcdef"
D = 12
A, B = 3.0, 5.0
GRID = 30                      # GRID x GRID tiles of 0.1 deg from (-100, 40)
LON0, LAT0, STEP = -100.0, 40.0, 0.1
REGION = "POLYGON((-99.5 40.5, -98.3 40.5, -98.3 41.9, -99.5 41.9, -99.5 40.5))"
WEST = "POLYGON((-100 40, -98.5 40, -98.5 43, -100 43, -100 40))"

TILE_COLS = "tile_id, geom::text, distance, probability, uncertainty"
REGION_COLS = "region_id, region_name, score, tile_count, uncertainty"
# (region, month, hour, audio_source, zoom, k, method): the exact and ANN paths, with and
# without a region, both conditions, a k larger than the region
TILE_CASES = [
    (None, 5, 6, None, 1, 25, "exact"),
    (None, 5, 6, None, 1, 40, "auto"),
    (None, 5, 6, None, 1, 40, "ann"),
    (REGION, 5, 6, None, 1, 10, "auto"),
    (REGION, 5, 6, None, 1, 10, "ann"),
    (REGION, None, None, "aporee", 1, 500, "auto"),
    (WEST, None, None, "aporee", 1, 7, "exact"),
]
REGION_CASES = [("mean", 0.5, 100), ("max", 0.5, 100), ("share", 0.3, 100), ("share", 0.9, 2),
                ("mean", 0.5, 1)]


@dataclass
class World:
    url: str
    query_id: int
    q_mu: np.ndarray
    q_var: np.ndarray
    mu: np.ndarray
    var: np.ndarray
    centroids: np.ndarray
    tile_ids: np.ndarray
    cond_a: int


def _seed(url: str) -> World:
    """A model, GRID x GRID tiles with embeddings under two conditions, four regions, a query."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(8, D))

    def gaussians(n: int) -> tuple[np.ndarray, np.ndarray]:
        mu = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.2, (n, D))
        mu /= np.linalg.norm(mu, axis=1, keepdims=True)
        return mu.astype(np.float32), np.exp(rng.normal(-4, 0.5, (n, D))).astype(np.float32)

    with psycopg.connect(url) as c:
        register_vector(c)
        c.execute("INSERT INTO psm.model_versions (version, name, preset, loss, embed_dim, feature_dim,"
                  " match_a, match_b, checkpoint_path) VALUES (%s, 't', 'tiny', 'pcmepp', %s, 8, %s, %s, '/x')",
                  (MODEL, D, A, B))
        cond_a = c.execute("SELECT psm.ensure_condition(5, 6, NULL, NULL)").fetchone()[0]
        cond_b = c.execute("SELECT psm.ensure_condition(NULL, NULL, 'aporee', NULL)").fetchone()[0]
        c.execute(
            "INSERT INTO psm.tiles (imagery_source, gsd, size_px, zoom, grid_row, grid_col, geom, centroid) "
            "SELECT 'bing', 0.6, 300, 1, r, k, "
            " ST_MakeEnvelope(%(x)s + k * %(s)s, %(y)s + r * %(s)s, %(x)s + (k + 1) * %(s)s, %(y)s + (r + 1) * %(s)s, 4326),"
            " ST_SetSRID(ST_MakePoint(%(x)s + (k + 0.5) * %(s)s, %(y)s + (r + 0.5) * %(s)s), 4326) "
            "FROM generate_series(0, %(g)s - 1) r, generate_series(0, %(g)s - 1) k ORDER BY r, k",
            {"x": LON0, "y": LAT0, "s": STEP, "g": GRID})
        rows = c.execute("SELECT id, ST_X(centroid), ST_Y(centroid) FROM psm.tiles ORDER BY id").fetchall()
        tile_ids = np.array([r[0] for r in rows])
        centroids = np.array([(r[1], r[2]) for r in rows])
        mu, var = gaussians(len(tile_ids))
        with c.cursor().copy("COPY psm.embeddings (model_version, condition_id, tile_id, dim, mu, var, var_sum)"
                             " FROM STDIN") as cp:
            for i, t in enumerate(tile_ids):
                row = (MODEL, cond_a, int(t), D, mu[i], var[i], float(var[i].sum(dtype=np.float64)))
                cp.write_row(row)
                if centroids[i, 0] < LON0 + GRID * STEP / 2:     # condition B: the west half only
                    cp.write_row((MODEL, cond_b, *row[2:]))
        c.execute("INSERT INTO psm.region_sets (name) VALUES ('squares')")
        for i in range(2):
            for j in range(2):
                x, y, s = LON0 + i * 1.5, LAT0 + j * 1.5, 1.5
                c.execute("INSERT INTO psm.regions (set_name, name, geom) VALUES ('squares', %s,"
                          " ST_Multi(ST_MakeEnvelope(%s, %s, %s, %s, 4326)))", (f"sq{i}{j}", x, y, x + s, y + s))
        q_mu, q_var = gaussians(1)
        query_id = c.execute(
            "INSERT INTO psm.queries (model_version, kind, text, dim, mu, var, var_sum) "
            "VALUES (%s, 'text', 'wind in reeds', %s, %s, %s, %s) RETURNING id",
            (MODEL, D, q_mu[0], q_var[0], float(q_var[0].sum(dtype=np.float64)))).fetchone()[0]
    return World(url, query_id, q_mu[0], q_var[0], mu, var, centroids, tile_ids, cond_a)


def _build_index(url: str, cond: int) -> None:
    """An HNSW index over one slice, registered as psm_db.ann.build_ann_index does."""
    from psm_db import ann
    from psm_db.engine import make_engine

    engine = make_engine(url)
    try:
        ann.build_ann_index(engine=engine, model_version=MODEL, condition_id=cond, concurrently=False)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def world(module_db_url) -> World:
    w = _seed(module_db_url)
    _build_index(w.url, w.cond_a)
    return w


@pytest.fixture
def conn(world):
    with psycopg.connect(world.url) as c:
        register_vector(c)
        yield c
        c.rollback()


RANK_TILES = f"SELECT {TILE_COLS} FROM psm.rank_tiles(%s, psm.region_from_text(%s), %s, %s, %s, NULL, %s, %s, %s)"
RANK_TILES_G = (f"SELECT {TILE_COLS} FROM psm.rank_tiles_gaussian(%s, %s, %s, psm.region_from_text(%s),"
                " %s, %s, %s, NULL, %s, %s, %s)")
RANK_REGIONS = (f"SELECT {REGION_COLS} FROM psm.rank_regions(%s, 'squares', 5, 6, NULL, NULL, 1, %s,"
                " %s, %s)")
RANK_REGIONS_G = (f"SELECT {REGION_COLS} FROM psm.rank_regions_gaussian(%s, %s, %s, 'squares', 5, 6,"
                  " NULL, NULL, 1, %s, %s, %s)")


def _csd(world: World) -> np.ndarray:
    mu, var = world.mu.astype(np.float64), world.var.astype(np.float64)
    return ((mu - world.q_mu) ** 2).sum(1) + var.sum(1) + world.q_var.astype(np.float64).sum()


@pytest.mark.parametrize("case", TILE_CASES, ids=lambda c: f"{'region' if c[0] else 'all'}-{c[3] or 'a'}-{c[6]}")
def test_rank_tiles_gaussian_is_the_query_id_ranking(world, conn, case):
    by_id = conn.execute(RANK_TILES, (world.query_id, *case)).fetchall()
    gaussian = conn.execute(RANK_TILES_G, (MODEL, world.q_mu, world.q_var, *case)).fetchall()
    assert by_id and gaussian == by_id
    # and it is the right ranking, not only the same one
    d = _csd(world)
    found = {r[0]: r[2] for r in gaussian}
    assert [r[2] for r in gaussian] == sorted(found.values())
    ids = world.tile_ids.tolist()
    np.testing.assert_allclose([found[t] for t in found], d[[ids.index(t) for t in found]], rtol=1e-5)


def test_rank_tiles_gaussian_exact_order_is_numpy_order(world, conn):
    rows = conn.execute(RANK_TILES_G, (MODEL, world.q_mu, world.q_var, None, 5, 6, None, 1, 30, "exact")).fetchall()
    d = _csd(world)
    order = np.argsort(d, kind="stable")[:30]
    assert [r[0] for r in rows] == world.tile_ids[order].tolist()
    np.testing.assert_allclose([r[3] for r in rows], 1 / (1 + np.exp(A * d[order] - B)), rtol=1e-4)


@pytest.mark.parametrize("agg, threshold, k", REGION_CASES)
def test_rank_regions_gaussian_is_the_query_id_ranking_for_every_aggregate(world, conn, agg, threshold, k):
    by_id = conn.execute(RANK_REGIONS, (world.query_id, k, agg, threshold)).fetchall()
    gaussian = conn.execute(RANK_REGIONS_G, (MODEL, world.q_mu, world.q_var, k, agg, threshold)).fetchall()
    assert len(by_id) == min(k, 4) and gaussian == by_id
    # the aggregate over each square's tiles, from numpy
    p = 1 / (1 + np.exp(A * _csd(world) - B))
    fn = {"mean": np.mean, "max": np.max, "share": lambda x: np.mean(x >= threshold)}[agg]
    for _, name, score, count, _ in gaussian:
        i, j = int(name[2]), int(name[3])
        x, y = LON0 + i * 1.5, LAT0 + j * 1.5
        inside = ((world.centroids[:, 0] > x) & (world.centroids[:, 0] < x + 1.5)
                  & (world.centroids[:, 1] > y) & (world.centroids[:, 1] < y + 1.5))
        assert count == inside.sum() == 225
        assert score == pytest.approx(fn(p[inside]), rel=1e-4, abs=1e-12)


def test_the_gaussian_forms_check_the_query_gaussian(world, conn):
    bad_var = world.q_var.copy()
    bad_var[3] = 0
    cases = [
        (("ffffffffffffffff", world.q_mu, world.q_var), "unknown model version 'ffffffffffffffff'"),
        ((None, world.q_mu, world.q_var), "unknown model version NULL"),
        ((MODEL, world.q_mu[:8], world.q_var), r"the query has 8 dimensions \(mu\) and 12 \(var\) but model "
                                               + MODEL + " embeds in 12"),
        ((MODEL, world.q_mu, world.q_var[:5]), r"12 dimensions \(mu\) and 5 \(var\)"),
        ((MODEL, world.q_mu, bad_var), r"var is sigma\^2 and must be > 0 in every dimension"),
        ((MODEL, world.q_mu, -world.q_var), "must be > 0"),
        ((MODEL, None, world.q_var), "needs both mu and var.*mu is NULL"),
        ((MODEL, world.q_mu, None), "var is NULL"),
    ]
    for gaussian, message in cases:
        for sql in ("SELECT * FROM psm.rank_tiles_gaussian(%s, %s::vector, %s::vector, NULL, 5, 6)",
                    "SELECT * FROM psm.rank_regions_gaussian(%s, %s::vector, %s::vector, 'squares', 5, 6)"):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
                conn.execute(sql, gaussian)
            conn.rollback()


def test_the_gaussian_forms_check_their_other_arguments_as_the_query_id_forms(world, conn):
    g = (MODEL, world.q_mu, world.q_var)
    cases = [
        ("SELECT * FROM psm.rank_tiles_gaussian(%s, %s, %s, NULL, 13)", r"month must be in 1\.\.12"),
        ("SELECT * FROM psm.rank_tiles_gaussian(%s, %s, %s, NULL, 5, 6, 'bogus')", "unknown audio source"),
        ("SELECT * FROM psm.rank_tiles_gaussian(%s, %s, %s, p_k => 0)", r"k must be in 1\.\.10000"),
        ("SELECT * FROM psm.rank_tiles_gaussian(%s, %s, %s, p_method => 'fast')", "method must be auto, exact or ann"),
        ("SELECT * FROM psm.rank_regions_gaussian(%s, %s, %s, 'nope')", "unknown region set 'nope'"),
        ("SELECT * FROM psm.rank_regions_gaussian(%s, %s, %s, 'squares', p_agg => 'median')",
         "agg must be mean, max or share"),
        ("SELECT * FROM psm.rank_regions_gaussian(%s, %s, %s, 'squares', p_threshold => 2)",
         r"threshold must be a probability in \[0, 1\]"),
    ]
    for sql, message in cases:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
            conn.execute(sql, g)
        conn.rollback()
    # nothing embedded for month 7: the same PSM01 error and hint as the query-id form
    for sql in ("SELECT * FROM psm.rank_tiles_gaussian(%s, %s, %s, NULL, 7)",
                "SELECT * FROM psm.rank_regions_gaussian(%s, %s, %s, 'squares', 7)"):
        with pytest.raises(psycopg.Error) as info:
            conn.execute(sql, g)
        conn.rollback()
        assert info.value.sqlstate == "PSM01" and "psm embed-region --model " + MODEL in info.value.diag.message_hint


def test_the_reader_ranks_an_unstored_gaussian(world, as_role):
    with psycopg.connect(as_role(world.url, "psm_reader")) as c:
        register_vector(c)
        tiles = c.execute("SELECT count(*) FROM psm.rank_tiles_gaussian(%s, %s, %s, NULL, 5, 6, p_k => 9)",
                          (MODEL, world.q_mu, world.q_var)).fetchone()[0]
        regions = c.execute("SELECT count(*) FROM psm.rank_regions_gaussian(%s, %s, %s, 'squares', 5, 6)",
                            (MODEL, world.q_mu, world.q_var)).fetchone()[0]
    assert (tiles, regions) == (9, 4)


def _query_id_results(url: str, world: World) -> dict[str, object]:
    """Everything the query-id forms return for the cases, and their error messages."""
    out: dict[str, object] = {}
    with psycopg.connect(url) as c:
        for case in TILE_CASES:
            out[f"tiles{case}"] = c.execute(RANK_TILES, (world.query_id, *case)).fetchall()
        for agg, threshold, k in REGION_CASES:
            out[f"regions{agg, threshold, k}"] = c.execute(
                RANK_REGIONS, (world.query_id, k, agg, threshold)).fetchall()
        for sql, args in [
            ("SELECT * FROM psm.rank_tiles(%s)", (999_999,)),
            ("SELECT * FROM psm.rank_tiles(%s, NULL, 13)", (999_999,)),
            ("SELECT * FROM psm.rank_tiles(%s, NULL, 5, 6, p_k => 0)", (world.query_id,)),
            ("SELECT * FROM psm.rank_tiles(%s, p_method => 'fast')", (999_999,)),
            ("SELECT * FROM psm.rank_tiles(%s, NULL, 7)", (world.query_id,)),
            ("SELECT * FROM psm.rank_tiles(NULL)", ()),
            ("SELECT * FROM psm.rank_regions(%s, 'squares')", (999_999,)),
            ("SELECT * FROM psm.rank_regions(%s, 'nope')", (world.query_id,)),
            ("SELECT * FROM psm.rank_regions(%s, 'nope', p_agg => 'median')", (999_999,)),
            ("SELECT * FROM psm.rank_regions(%s, 'squares', 7)", (world.query_id,)),
        ]:
            try:
                c.execute(sql, args)
                out[sql + str(args)] = "no error"
            except psycopg.Error as e:
                out[sql + str(args)] = (e.sqlstate, e.diag.message_primary, e.diag.message_detail,
                                        e.diag.message_hint)
            c.rollback()
    return out


def test_the_query_id_forms_return_what_they_returned_at_0007(fresh_db_url):
    """Rank at 0007, upgrade to 0008, rank again: the same rows, the same errors."""
    from psm_db import migrate

    url = fresh_db_url
    migrate.upgrade(url, "0007")
    world = _seed(url)
    _build_index(url, world.cond_a)
    before = _query_id_results(url, world)
    migrate.upgrade(url, "0008")
    assert migrate.current(url) == "0008"
    after = _query_id_results(url, world)
    assert before.keys() == after.keys()
    for key, old in before.items():
        new = after[key]
        if isinstance(old, list):
            assert old, key
            # ids, geometry, order and counts exactly; the query's sum sigma^2 is now added up in
            # SQL from its var rather than read from psm.queries.var_sum: the same to float8 rounding
            assert [r[:2] for r in new] == [r[:2] for r in old], key
            np.testing.assert_allclose(np.array([r[2:] for r in new], dtype=float),
                                       np.array([r[2:] for r in old], dtype=float), rtol=1e-12, atol=0)
        else:
            assert new == old, key


def test_sqlalchemy_wrappers_of_the_gaussian_forms(world, conn):
    from pgvector.sqlalchemy import Vector
    from sqlalchemy import bindparam, select
    from sqlalchemy.orm import Session

    from psm_db.engine import make_engine
    from psm_db.functions import rank_regions_gaussian_table, rank_tiles_gaussian_table

    mu = bindparam("mu", world.q_mu, type_=Vector(D))
    var = bindparam("var", world.q_var, type_=Vector(D))
    engine = make_engine(world.url)
    try:
        with Session(engine) as s:
            tiles = rank_tiles_gaussian_table(MODEL, mu, var, None, 5, 6, None, None, 1, 12, "exact")
            got = s.execute(select(tiles.c.tile_id, tiles.c.distance)).all()
            regions = rank_regions_gaussian_table(MODEL, mu, var, "squares", 5, 6, None, None, 1, 100, "max", 0.5)
            got_regions = s.execute(select(regions.c.region_name, regions.c.score)).all()
    finally:
        engine.dispose()
    want = conn.execute("SELECT tile_id, distance FROM psm.rank_tiles(%s, NULL, 5, 6, NULL, NULL, 1, 12, 'exact')",
                        (world.query_id,)).fetchall()
    assert [tuple(r) for r in got] == want
    want = conn.execute("SELECT region_name, score FROM psm.rank_regions(%s, 'squares', 5, 6, p_agg => 'max')",
                        (world.query_id,)).fetchall()
    assert [tuple(r) for r in got_regions] == want
