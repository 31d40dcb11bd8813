"""psm.region_tiles: which tiles each region holds, kept exact by triggers whatever arrives first."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import shapely.geometry
from shapely.geometry import box
from sqlalchemy import text
from sqlalchemy.orm import Session

from psm_db import migrate
from psm_db.engine import make_engine
from psm_db.regions import load_regions
from psm_db.tiles import GridSpec, grid_tiles, upsert_tiles

TRUTH = """
    SELECT r.id, t.zoom, t.id FROM psm.regions r JOIN psm.tiles t ON ST_Intersects(r.geom, t.centroid)
"""


def _fc(*geoms_and_names):
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": n}, "geometry": shapely.geometry.mapping(g)}
        for g, n in geoms_and_names]}


def _pairs(session: Session, sql: str) -> set[tuple[int, int, int]]:
    return {tuple(r) for r in session.execute(text(sql))}


def _assert_exact(session: Session) -> int:
    stored = _pairs(session, "SELECT region_id, zoom, tile_id FROM psm.region_tiles")
    truth = _pairs(session, TRUTH)
    assert stored == truth, (f"{len(stored - truth)} stored rows no region holds, "
                             f"{len(truth - stored)} memberships missing")
    return len(stored)


@pytest.fixture
def session(module_db_url):
    engine = make_engine(module_db_url)
    with Session(engine) as s:
        yield s
        s.rollback()
    engine.dispose()


def test_membership_follows_tiles_and_regions_in_either_order(session):
    rng = np.random.default_rng(7)
    # regions first, then tiles at two zooms: the tile trigger finds the regions
    squares = [box(x, y, x + w, y + h) for x, y, w, h in zip(
        rng.uniform(-96, -94, 6), rng.uniform(40, 42, 6), rng.uniform(0.2, 1.5, 6), rng.uniform(0.2, 1.5, 6),
        strict=True)]
    multi = shapely.MultiPolygon([box(-95.5, 40.2, -95.0, 40.6), box(-94.2, 41.4, -93.6, 41.9)])
    load_regions(session=session, source=_fc(*[(g, f"sq{i}") for i, g in enumerate(squares)], (multi, "two")),
                 region_set="first")
    assert _assert_exact(session) == 0  # no tiles yet
    area = box(-96.2, 39.8, -92.8, 43.6)
    for zoom in (1, 3):
        upsert_tiles(session, grid_tiles(area, GridSpec("member-a", 100.0, 48, zoom)))
    n_first = _assert_exact(session)
    assert n_first > 100
    # regions after the tiles (the region trigger finds the tiles), overlapping the first set
    load_regions(session=session, source=_fc((box(-95.2, 40.5, -94.1, 41.3), "late"),
                                             (box(-100, 10, -99, 11), "empty")), region_set="second")
    late = session.execute(text(
        "SELECT count(*) FROM psm.region_tiles m JOIN psm.regions r ON r.id = m.region_id "
        "WHERE r.name = 'late'")).scalar()
    assert late > 0
    _assert_exact(session)
    # the same tiles again (the worker's upsert on a re-run) add nothing twice
    before = session.execute(text("SELECT count(*) FROM psm.region_tiles")).scalar()
    upsert_tiles(session, grid_tiles(area, GridSpec("member-a", 100.0, 48, 1)))
    assert session.execute(text("SELECT count(*) FROM psm.region_tiles")).scalar() == before
    # a reshaped region and a moved tile are redone; an update that moves nothing changes nothing
    session.execute(text("UPDATE psm.regions SET geom = ST_Multi(ST_MakeEnvelope(-96, 39.9, -95.4, 40.3, 4326))"
                         " WHERE name = 'sq0'"))
    session.execute(text("UPDATE psm.tiles SET centroid = ST_SetSRID(ST_MakePoint(-99.5, 10.5), 4326), zoom = 2"
                         " WHERE id = (SELECT min(id) FROM psm.tiles)"))
    session.execute(text("UPDATE psm.regions SET properties = '{\"k\": 1}'"))
    moved = session.execute(text(
        "SELECT r.name, m.zoom FROM psm.region_tiles m JOIN psm.regions r ON r.id = m.region_id "
        "WHERE m.tile_id = (SELECT min(id) FROM psm.tiles)")).all()
    assert [tuple(m) for m in moved] == [("empty", 2)]
    _assert_exact(session)
    # deleting tiles, one region, and a whole set takes their rows with them
    session.execute(text("DELETE FROM psm.tiles WHERE zoom = 3"))
    _assert_exact(session)
    session.execute(text("DELETE FROM psm.regions WHERE name = 'two'"))
    _assert_exact(session)
    load_regions(session=session, source=_fc((box(-95, 40, -94, 41), "again")), region_set="first", replace=True)
    assert _assert_exact(session) > 0
    session.execute(text("DELETE FROM psm.region_sets WHERE name = 'second'"))
    _assert_exact(session)


def test_upgrade_fills_membership_for_what_is_stored_and_downgrade_drops_it(fresh_db_url):
    engine = make_engine(fresh_db_url)
    try:
        migrate.upgrade(fresh_db_url, "0010")
        with Session(engine) as s:
            upsert_tiles(s, grid_tiles(box(-94, 41, -93, 42), GridSpec("member-b", 100.0, 48, 2)))
            load_regions(session=s, source=_fc((box(-93.8, 41.2, -93.1, 41.7), "r")), region_set="old")
            s.commit()
        migrate.upgrade(fresh_db_url, "0011")
        with Session(engine) as s:
            assert _assert_exact(s) > 10
        migrate.downgrade(fresh_db_url, "0010")
        with Session(engine) as s:
            assert s.execute(text("SELECT to_regclass('psm.region_tiles')")).scalar() is None
            triggers = s.execute(text("SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%region_members%'")).scalar()
            assert triggers == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("first", ["regions", "tiles"])
def test_a_region_load_and_a_tile_write_in_flight_together_miss_nothing(module_db_url, first):
    """Each transaction's trigger would not see the other's uncommitted rows; the lock orders them."""
    import threading

    name, source = f"racing-{first}", f"member-race-{first}"

    def regions(s: Session) -> None:
        load_regions(session=s, source=_fc((box(10.1, 50.1, 10.9, 50.9), name)), region_set=name)

    def tiles(s: Session) -> None:
        upsert_tiles(s, grid_tiles(box(10, 50, 11, 51), GridSpec(source, 100.0, 48, 4)))

    steps = (regions, tiles) if first == "regions" else (tiles, regions)
    engine = make_engine(module_db_url)
    try:
        with Session(engine) as a, Session(engine) as b:
            steps[0](a)  # in flight, not committed
            done = threading.Event()

            def second() -> None:
                steps[1](b)
                b.commit()
                done.set()

            thread = threading.Thread(target=second)
            thread.start()
            assert not done.wait(1.0), "the second write did not wait for the first to commit"
            a.commit()
            thread.join(30)
            assert done.is_set()
        with Session(engine) as s:
            held = s.execute(text(
                "SELECT count(*) FROM psm.region_tiles m JOIN psm.regions r ON r.id = m.region_id"
                " WHERE r.name = :n"), {"n": name}).scalar()
            assert held > 10
            _assert_exact(s)
    finally:
        engine.dispose()
