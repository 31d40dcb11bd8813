"""The tile grid and the COPY bulk writer against the real database."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from psm_db import bulk
from psm_db.engine import driver_connection
from psm_db.tiles import METRES_PER_DEGREE, GridSpec, count_tiles, grid_tiles, upsert_tiles


def test_tile_side_follows_gsd_size_and_zoom():
    for gsd, size, zoom in [(10.0, 256, 1), (10.0, 256, 3), (0.6, 300, 5)]:
        spec = GridSpec("s", gsd, size, zoom)
        assert spec.side_m == gsd * size * zoom
        tiles = grid_tiles(shapely.box(2.0, 48.0, 2.05, 48.05), spec)
        w, s, e, n = tiles.bounds()
        lat = (s + n) / 2
        height_m = (n - s) * METRES_PER_DEGREE
        width_m = (e - w) * METRES_PER_DEGREE * np.cos(np.radians(lat))
        assert np.allclose(height_m, spec.side_m)
        assert np.all(np.abs(width_m / spec.side_m - 1) < 0.01)


def test_grid_covers_region_without_overlap_and_is_deterministic():
    region = shapely.Polygon([(0, 51), (0.3, 51.0), (0.15, 51.25)])
    spec = GridSpec("s", 10.0, 256, 1)
    a, b = grid_tiles(region, spec), grid_tiles(region, spec)
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.cols, b.cols)
    boxes = shapely.box(*a.bounds())
    union = shapely.union_all(boxes)
    assert region.difference(union).area < 1e-9 * region.area  # covered (up to float slivers)
    assert sum(shapely.area(boxes)) == pytest.approx(union.area, rel=1e-9)  # no overlaps
    assert all(shapely.intersects(region, boxes)) and not any(shapely.touches(region, boxes))
    assert len({(r, c) for r, c in zip(a.rows, a.cols, strict=True)}) == len(a)


def test_tile_limit_is_enforced_with_a_clear_message():
    spec = GridSpec("s", 10.0, 256, 1)
    with pytest.raises(ValueError, match="more than the limit of 10"):
        count_tiles(shapely.box(0, 50, 0.5, 50.5), spec, limit=10)


def _setup(db, dim=8):
    conn = driver_connection(db)
    conn.execute("INSERT INTO psm.model_versions (version, name, preset, loss, embed_dim, feature_dim,"
                 " match_a, match_b, checkpoint_path) VALUES ('feedbeef', 't', 't', 'pcmepp', %s, %s, 5, 5, '-')"
                 " ON CONFLICT DO NOTHING", (dim, dim))
    cid = conn.execute("SELECT psm.ensure_condition(3, 4, NULL, NULL)").fetchone()[0]
    ids = upsert_tiles(db, grid_tiles(shapely.box(5, 5, 5.1, 5.1), GridSpec("bulk-test", 10.0, 256, 1)))
    return cid, ids


def test_write_embeddings_round_trip_and_idempotent(db, conn):
    cid, ids = _setup(db)
    rng = np.random.default_rng(1)
    mu = rng.standard_normal((len(ids), 8)).astype(np.float32)
    var = np.exp(rng.normal(-4, 1, (len(ids), 8))).astype(np.float32)
    assert bulk.write_embeddings(db, "feedbeef", cid, ids, mu, var, 8) == len(ids)
    assert bulk.write_embeddings(db, "feedbeef", cid, ids, mu + 1, var, 8) == 0  # nothing changes
    rows = conn.execute("SELECT tile_id, mu, var, var_sum FROM psm.embeddings WHERE model_version = 'feedbeef'"
                        " ORDER BY tile_id").fetchall()
    order = np.argsort(ids)
    assert len(rows) == len(ids)
    got_mu = np.array([r[1].to_numpy() for r in rows])
    assert np.array_equal(got_mu, mu[order])
    assert np.array_equal(np.array([r[2].to_numpy() for r in rows]), var[order])
    assert np.allclose([r[3] for r in rows], var[order].sum(1, dtype=np.float64))
    # the tiles upsert is idempotent too: same ids back
    again = upsert_tiles(db, grid_tiles(shapely.box(5, 5, 5.1, 5.1), GridSpec("bulk-test", 10.0, 256, 1)))
    assert np.array_equal(again, ids)


def test_write_embeddings_over_some_existing_rows_adds_the_rest_in_the_same_transaction(db, conn):
    """The direct COPY hits the existing keys; its savepoint goes, the upsert adds only the new rows."""
    cid, ids = _setup(db)
    rng = np.random.default_rng(2)
    mu = rng.standard_normal((len(ids), 8)).astype(np.float32)
    var = np.exp(rng.normal(-4, 1, (len(ids), 8))).astype(np.float32)
    half = len(ids) // 2
    assert bulk.write_embeddings(db, "feedbeef", cid, ids[:half], mu[:half], var[:half], 8) == half
    before_fallback = conn.execute("SELECT psm.ensure_condition(7, 8, NULL, NULL)").fetchone()[0]
    assert bulk.write_embeddings(db, "feedbeef", cid, ids, mu + 1, var, 8) == len(ids) - half
    rows = dict(conn.execute("SELECT tile_id, mu FROM psm.embeddings WHERE model_version = 'feedbeef'").fetchall())
    assert len(rows) == len(ids)
    assert all(np.array_equal(rows[int(t)].to_numpy(), mu[i]) for i, t in enumerate(ids[:half]))  # kept
    assert all(np.array_equal(rows[int(t)].to_numpy(), mu[half + i] + 1) for i, t in enumerate(ids[half:]))
    # what the transaction did before the fallback is still there
    assert conn.execute("SELECT count(*) FROM psm.conditions WHERE id = %s", (before_fallback,)).fetchone()[0] == 1


@pytest.mark.parametrize(
    "bad, message",
    [
        ("nan", "NaN"),
        ("dim", "shape"),
        ("zero_var", "sigma\\^2 <= 0"),
        ("neg_var", "sigma\\^2 <= 0"),
        ("inf_var", "infinity"),
    ],
)
def test_write_embeddings_refuses_bad_rows_and_writes_nothing(db, conn, bad, message):
    cid, ids = _setup(db)
    n = len(ids)
    mu = np.ones((n, 8), np.float32)
    var = np.full((n, 8), 0.01, np.float32)
    if bad == "nan":
        mu[3, 2] = np.nan
    elif bad == "dim":
        mu, var = np.ones((n, 7), np.float32), np.full((n, 7), 0.01, np.float32)
    elif bad == "zero_var":
        var[1, 1] = 0.0
    elif bad == "neg_var":
        var[0, 0] = -1.0
    else:
        var[2, 2] = np.inf
    with pytest.raises(bulk.EmbeddingValidationError, match=message):
        bulk.write_embeddings(db, "feedbeef", cid, ids, mu, var, 8)
    assert conn.execute("SELECT count(*) FROM psm.embeddings WHERE model_version = 'feedbeef'").fetchone()[0] == 0


def test_write_features_once_per_tile(db, conn):
    _, ids = _setup(db)
    f = np.arange(len(ids) * 8, dtype=np.float32).reshape(-1, 8)
    assert bulk.write_features(db, "feedbeef", ids, f, 8) == len(ids)
    assert bulk.write_features(db, "feedbeef", ids, f * 2, 8) == 0
    with pytest.raises(bulk.EmbeddingValidationError, match="NaN"):
        bulk.write_features(db, "feedbeef", ids, f * np.nan, 8)
    got = conn.execute("SELECT features FROM psm.tile_features WHERE tile_id = %s", (int(ids[0]),)).fetchone()[0]
    assert np.array_equal(got.to_numpy(), f[0])


def _rows_of(db, source: str) -> tuple[int, int]:
    from sqlalchemy import func, select

    from psm_db.models import Tile, TileFeature

    tiles = db.scalar(select(func.count()).select_from(Tile).where(Tile.imagery_source == source))
    feats = db.scalar(select(func.count()).select_from(TileFeature).join(Tile, Tile.id == TileFeature.tile_id)
                      .where(Tile.imagery_source == source))
    return tiles, feats


@pytest.mark.parametrize("kind", ["connection", "session"])
def test_copy_and_core_writes_are_one_transaction(db, kind):
    """The COPY runs on the caller's connection: a rollback leaves no row, a commit keeps them all."""
    from sqlalchemy import delete, insert
    from sqlalchemy.orm import Session

    from psm_db.models import ModelVersion, Tile

    source, version = f"one-transaction-{kind}", {"connection": "0e0e0001", "session": "0e0e0002"}[kind]
    region, spec = shapely.box(6, 6, 6.05, 6.05), GridSpec(source, 10.0, 256, 1)
    db.execute(insert(ModelVersion).values(version=version, name="t", preset="t", loss="pcmepp", embed_dim=8,
                                           feature_dim=8, match_a=5, match_b=5, checkpoint_path="-"))
    db.commit()
    unit = db if kind == "connection" else Session(db.engine)
    try:
        ids = upsert_tiles(unit, grid_tiles(region, spec))
        bulk.write_features(unit, version, ids, np.ones((len(ids), 8), np.float32), 8)
        unit.rollback()
        assert _rows_of(db, source) == (0, 0)
        ids = upsert_tiles(unit, grid_tiles(region, spec))
        bulk.write_features(unit, version, ids, np.ones((len(ids), 8), np.float32), 8)
        unit.commit()
        db.rollback()
        assert _rows_of(db, source) == (len(ids), len(ids)) and len(ids) > 1
    finally:
        if isinstance(unit, Session):
            unit.close()
        db.rollback()
        db.execute(delete(Tile).where(Tile.imagery_source == source))
        db.execute(delete(ModelVersion).where(ModelVersion.version == version))
        db.commit()
