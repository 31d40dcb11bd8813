"""Imagery readers, validation and chunk embedding as plain functions (no Celery)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import shapely
from worker_helpers import geotiff_region, write_geotiff

from psm_db.tiles import GridSpec, grid_tiles
from worker import embed, model_runner
from worker.embed import ConditionSpec, EmbedRequest, Limits
from worker.imagery import ImagerySpec, open_source

LIMITS = Limits(max_region_tiles=500, chunk_tiles=8, batch_size=16)
NEW_CONDITIONS = (ConditionSpec(month=5), ConditionSpec(hour=6, audio_source="aporee"))
"""A job after one at month 5 alone: one condition already embedded, one new."""


def _count(conn, sql: str, *args) -> int:
    return conn.execute(sql, args).fetchone()[0]


def test_geotiff_reader_reprojects_utm_to_tiles(geotiff):
    src = open_source(ImagerySpec(kind="geotiff", path=str(geotiff), size_px=32))
    assert src.gsd == pytest.approx(10.0)
    w, s, e, n = (float(v) for v in geotiff_region(geotiff).split(","))
    tiles = grid_tiles(shapely.box(w, s, e, n), GridSpec(src.name, src.gsd, 32, 1))
    imgs = src.read(tiles, 16)
    assert imgs.shape == (len(tiles), 3, 16, 16) and imgs.dtype == np.float32
    assert np.isfinite(imgs).all() and 0 <= imgs.min() and imgs.max() <= 1
    assert (imgs.reshape(len(tiles), -1).max(1) > 0).all()  # every tile inside the raster has data
    # the red band grows eastwards in the file: so does the mean red of the tiles along a row
    row0 = tiles.rows == tiles.rows[0]
    red = imgs[row0, 0].mean(axis=(1, 2))
    assert np.all(np.diff(red) > 0)


def test_folder_source_mosaics_tiles(tmp_path, geotiff):
    folder = tmp_path / "tiles"
    folder.mkdir()
    write_geotiff(folder / "a.tif", size=300, seed=1)
    write_geotiff(folder / "b.tif", size=300, west=303_000.0, seed=2)
    src = open_source(ImagerySpec(kind="folder", path=str(folder), size_px=32))
    w, s, e, n = (float(v) for v in geotiff_region(folder / "a.tif", 0.1).split(","))
    tiles = grid_tiles(shapely.box(w, s, e + (e - w), n), GridSpec(src.name, src.gsd, 32, 1))
    imgs = src.read(tiles, 8)
    assert (imgs.reshape(len(tiles), -1).max(1) > 0).mean() > 0.9


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda p: p / "missing.tif", FileNotFoundError, "does not exist"),
        (lambda p: (p / "junk.tif").write_bytes(b"not a tiff") and p / "junk.tif", ValueError, "cannot read"),
        (lambda p: write_geotiff(p / "nocrs.tif", crs=None, size=64), ValueError, "has no CRS"),
    ],
)
def test_bad_geotiffs_fail_clearly(tmp_path, make, error, message):
    with pytest.raises(error, match=message):
        open_source(ImagerySpec(kind="geotiff", path=str(make(tmp_path))))


@pytest.mark.parametrize(
    "region, message",
    [
        ("POLYGON((0 0, 1 1, 1 0, 0 1, 0 0))", "not valid: Self-intersection"),
        ("POLYGON((0 0, 1 0, 1 1, 0 0", "not valid WKT"),
        ("POLYGON EMPTY", "empty"),
        ("1,1,1,2", "empty"),
        ("", "empty"),
        ('{"type": "Point", "coordinates": [1, 2]}', "must be a Polygon"),
        ("0,0,200,10", "outside lon"),
        ("nowhere/at-all", "unknown stored region"),
    ],
)
def test_bad_regions(db, region, message):
    with pytest.raises(ValueError, match=message):
        embed.resolve_region(region, db)


def test_region_forms(tmp_path):
    bbox = embed.resolve_region("1,2,3,4")
    assert bbox.bounds == (1, 2, 3, 4)
    geojson = '{"type": "Polygon", "coordinates": [[[1, 2], [3, 2], [3, 4], [1, 4], [1, 2]]]}'
    assert embed.resolve_region(geojson).equals(bbox)
    f = tmp_path / "r.geojson"
    f.write_text('{"type": "Feature", "properties": {}, "geometry": ' + geojson + "}")
    assert embed.resolve_region(str(f)).equals(bbox)
    assert embed.resolve_region("POLYGON((1 2, 3 2, 3 4, 1 4, 1 2))").equals(bbox)


@pytest.mark.parametrize(
    "text, message",
    [("month=13", "month must be"), ("hour=24", "hour must be"), ("hour=-1", "hour must be"),
     ("audio=spotify", "unknown audio source"), ("caption=gpt", "unknown caption source"),
     ("weekday=3", "bad condition part"), ("month=may", "must be an integer")],
)
def test_bad_conditions(text, message):
    with pytest.raises(ValueError, match=message):
        ConditionSpec.parse(text)


def test_condition_parse():
    c = ConditionSpec.parse("month=5, hour=20, audio=iNaturalist")
    assert c == ConditionSpec(5, 20, "inaturalist", None)
    assert ConditionSpec.parse("") == ConditionSpec()


def test_plan_refuses_unknown_model_and_too_many_tiles(db, conn, model_version, geotiff):
    req = EmbedRequest(region=geotiff_region(geotiff), model_version="0123456789abcdef",
                       imagery=ImagerySpec(kind="geotiff", path=str(geotiff), size_px=32))
    with pytest.raises(LookupError, match="unknown model version"):
        embed.plan_job(db, req, LIMITS)
    db.rollback()
    big = EmbedRequest(region=geotiff_region(geotiff, 0.0), model_version=model_version.version,
                       imagery=ImagerySpec(kind="geotiff", path=str(geotiff), size_px=16))
    with pytest.raises(ValueError, match="more than the limit of 50"):
        embed.plan_job(db, big, Limits(max_region_tiles=50))


def test_new_conditions_over_the_world_do_not_render_stored_tiles_again(db, conn, model_version, monkeypatch):
    # every pixel of the world holds data, so a tile with stored features needs no new render
    from worker.imagery import WorldSource

    imagery = ImagerySpec(kind="world", gsd=100.0, size_px=32, name="world-reuse-test")
    region = "POLYGON((-93.80 41.50, -93.50 41.50, -93.50 41.65, -93.80 41.65, -93.80 41.50))"
    request = EmbedRequest(region=region, model_version=model_version.version, zooms=(1,), imagery=imagery)
    _, plan, _ = _run_job(db, replace(request, conditions=(ConditionSpec(month=5),)))
    n = plan.total
    assert n > LIMITS.chunk_tiles

    def no_render(*a, **k):
        raise AssertionError("a tile with stored features was rendered again")

    monkeypatch.setattr(WorldSource, "read_valid", no_render)
    job2, _, results = _run_job(db, replace(request, conditions=NEW_CONDITIONS))
    assert sum(r.features_reused for r in results) == n and sum(r.features_computed for r in results) == 0
    assert sum(r.embeddings_written for r in results) == n  # the new condition only
    assert conn.execute("SELECT status FROM psm.jobs WHERE id = %s", (job2,)).fetchone() == ("succeeded",)


def test_chunks_are_idempotent_and_new_conditions_reuse_features(db, conn, model_version, geotiff, monkeypatch):
    imagery = ImagerySpec(kind="geotiff", path=str(geotiff), size_px=64, name="reuse-test")
    region = geotiff_region(geotiff, 0.3)
    first = EmbedRequest(region=region, model_version=model_version.version, zooms=(1,), imagery=imagery)
    job, plan, _ = _run_job(db, replace(first, conditions=(ConditionSpec(month=5),)))
    n = plan.total
    assert n > LIMITS.chunk_tiles  # several chunks
    assert _count(conn, "SELECT count(*) FROM psm.tile_features WHERE model_version = %s", model_version.version) >= n
    # the uncertainty layer has something to show: sum sigma^2 depends on the tile (a log-variance
    # head whose hidden layer starts in GELU's flat range gave a CV of 0.03 %)
    cv = conn.execute("SELECT stddev(e.var_sum) / avg(e.var_sum) FROM psm.embeddings e JOIN psm.tiles t"
                      " ON t.id = e.tile_id WHERE t.imagery_source = 'reuse-test'").fetchone()[0]
    assert cv > 0.005, cv
    # re-running a finished chunk changes nothing
    before = conn.execute("SELECT count(*), sum(var_sum) FROM psm.embeddings").fetchone()
    assert embed.run_chunk(db, str(job), 0, LIMITS).skipped
    assert conn.execute("SELECT count(*), sum(var_sum) FROM psm.embeddings").fetchone() == before

    # a later condition: the stored features are reused; the image encoder must not run
    def no_images(*a, **k):
        raise AssertionError("image features were recomputed")

    monkeypatch.setattr(model_runner, "compute_features", no_images)
    second = replace(first, model_version=model_version.version[:10])
    job2, plan2, results = _run_job(db, replace(second, conditions=NEW_CONDITIONS))
    assert sum(r.features_reused for r in results) == n
    assert sum(r.features_computed for r in results) == 0
    assert sum(r.embeddings_written for r in results) == n  # only the new condition
    row = conn.execute("SELECT status, done, total FROM psm.jobs WHERE id = %s", (job2,)).fetchone()
    assert row == ("succeeded", n, n)
    cids = embed.ensure_conditions(db, plan2.conditions)
    for cid in cids:
        assert _count(conn, "SELECT count(*) FROM psm.embeddings e JOIN psm.tiles t ON t.id = e.tile_id"
                      " WHERE t.imagery_source = 'reuse-test' AND e.condition_id = %s", cid) == n
    conn.rollback()


def test_stored_region_by_set_and_name(db, conn):
    conn.execute("INSERT INTO psm.region_sets (name) VALUES ('worker-test') ON CONFLICT DO NOTHING")
    conn.execute("INSERT INTO psm.regions (set_name, name, geom) VALUES ('worker-test', 'square',"
                 " ST_Multi(ST_MakeEnvelope(1, 2, 3, 4, 4326))) ON CONFLICT DO NOTHING")
    geom = embed.resolve_region("worker-test/square", db)
    assert geom.bounds == (1, 2, 3, 4)
    conn.rollback()


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"region": "POLYGON((0 0, 1 1, 1 0, 0 1, 0 0))"}, ValueError, "Self-intersection"),
        ({"region": "POLYGON((0 0, 1 0, 0 0))"}, ValueError, "not valid|empty"),
        ({"region": "3,3,3,4"}, ValueError, "empty"),
        ({"region": "0,0,60,60"}, ValueError, "more than the limit"),
        ({"model_version": "0123456789abcdef"}, LookupError, "unknown model version"),
        ({"imagery": ImagerySpec(kind="geotiff", path="/nonexistent/x.tif")}, FileNotFoundError, "does not exist"),
        ({"imagery": "nocrs"}, ValueError, "has no CRS"),
        ({"imagery": "junk"}, ValueError, "cannot read"),
        ({"conditions": (ConditionSpec(month=5), ConditionSpec(month=5))}, ValueError, "the same condition"),
        ({"zooms": (0,)}, ValueError, "zoom levels must be"),
    ],
)
def test_bad_input_is_refused_before_anything_is_queued_or_written(db, conn, model_version, tmp_path, change,
                                                                   error, message):
    if change.get("imagery") == "nocrs":
        change["imagery"] = ImagerySpec(kind="geotiff", path=str(write_geotiff(tmp_path / "n.tif", crs=None, size=64)))
    elif change.get("imagery") == "junk":
        (tmp_path / "j.tif").write_bytes(b"GIF89a not a tiff")
        change["imagery"] = ImagerySpec(kind="geotiff", path=str(tmp_path / "j.tif"))
    request = EmbedRequest(**{"region": "0.0,51.0,0.05,51.05", "model_version": model_version.version,
                              "imagery": ImagerySpec(kind="world"), **change})
    sent = []
    before = conn.execute("SELECT (SELECT count(*) FROM psm.tiles), (SELECT count(*) FROM psm.embeddings),"
                          " (SELECT count(*) FROM psm.tile_features)").fetchone()
    with pytest.raises(error, match=message):
        embed.submit(db, request, LIMITS, sent.append)
    assert sent == []  # nothing queued
    row = conn.execute("SELECT status, error FROM psm.jobs ORDER BY created_at DESC LIMIT 1").fetchone()
    assert row[0] == "failed" and row[1].startswith("invalid request:")
    assert conn.execute("SELECT (SELECT count(*) FROM psm.tiles), (SELECT count(*) FROM psm.embeddings),"
                        " (SELECT count(*) FROM psm.tile_features)").fetchone() == before


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"month": 0}, r"month 0 is out of range: month must be in 1\.\.12"),
        ({"hour": 25}, r"hour 25 is out of range: hour must be in 0\.\.23"),
        ({"audio_source": "radio"}, "unknown audio source 'radio'"),
        ({"caption_source": "gpt"}, "unknown caption source 'gpt'"),
        ({"weekday": 3}, "unknown condition field"),
    ],
)
def test_bad_conditions_are_refused_before_a_request_exists(db, conn, model_version, fields, message):
    """A bad condition cannot be built; one in a stored job's params fails the job in the planner."""
    from psm_db import jobs

    if "weekday" not in fields:
        with pytest.raises(ValueError, match=message):
            ConditionSpec(**fields)
    params = EmbedRequest(region="0.0,51.0,0.05,51.05", model_version=model_version.version,
                          imagery=ImagerySpec(kind="world")).to_params()
    assert params["conditions"] == [{"month": None, "hour": None, "audio_source": None, "caption_source": None}]
    params["conditions"] = [fields]
    with pytest.raises(ValueError, match=message):
        EmbedRequest.from_params(params)
    before = _count(conn, "SELECT count(*) FROM psm.embeddings")
    job_id = jobs.create_job(db, "embed_region", params, model_version=model_version.version)
    db.commit()
    assert embed.prepare_job(db, str(job_id), LIMITS) == []
    row = conn.execute("SELECT status, error FROM psm.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row[0] == "failed" and row[1].startswith("invalid request:")
    assert _count(conn, "SELECT count(*) FROM psm.embeddings") == before


def test_job_params_keep_their_json_form():
    """Conditions are stored as they always were: an object of the four fields."""
    old = {"region": "0,0,1,1", "model_version": "x", "zooms": [1], "imagery": {"kind": "world"},
           "conditions": [{"month": 5, "hour": None, "audio_source": "iNaturalist", "caption_source": None}, {}],
           "chunk_tiles": 8}
    request = EmbedRequest.from_params(old)
    assert request.conditions == (ConditionSpec(month=5, audio_source="inaturalist"), ConditionSpec())
    assert request.to_params()["conditions"] == [
        {"month": 5, "hour": None, "audio_source": "inaturalist", "caption_source": None},
        {"month": None, "hour": None, "audio_source": None, "caption_source": None}]
    assert EmbedRequest.from_params(request.to_params()) == request


def test_limits_from_settings():
    from psm_db.settings import Settings

    s = Settings(max_region_tiles=123, chunk_tiles=45, embed_batch_size=6)
    assert Limits.from_settings(s) == Limits(max_region_tiles=123, chunk_tiles=45, batch_size=6)


EWKT_3857 = "SRID=3857;POLYGON((1 1,2 1,2 2,1 2,1 1))"


def test_ewkt_srid_is_transformed_before_planning(db, conn, model_version):
    """A square metre given in EPSG:3857 is planned as that square metre, not as a 1 x 1 degree box."""
    from psm_db.geometry import parse_region

    region = embed.resolve_region(EWKT_3857, db)
    assert region.wkb == parse_region(EWKT_3857).wkb  # the same polygon as every other path
    w, s, e, n = region.bounds
    assert 8e-6 < w < e < 2e-5 and 8e-6 < s < n < 2e-5
    request = EmbedRequest(region=EWKT_3857, model_version=model_version.version, imagery=ImagerySpec(kind="world"))
    plan = embed.plan_job(db, request, LIMITS)
    assert plan.region.wkb == region.wkb
    assert plan.total <= 4  # the tiles touching one square metre (was 97: a degree box)
    tw, ts, te, tn = (float(np.min(b)) if i < 2 else float(np.max(b)) for i, b in enumerate(plan.tiles(0).bounds()))
    side = plan.specs[0].dlat  # one tile, in degrees (about 0.02 here)
    assert tw <= w and ts <= s and te >= e and tn >= n  # the tiles cover the square metre...
    assert te - tw <= 2 * side + 1e-12 and tn - ts <= 2 * side + 1e-12  # ...and no more than it needs
    db.rollback()
    # a planned job re-reads its resolved region (WKT in lon/lat) to the same polygon
    assert embed.resolve_region(plan.region.wkt, db).equals_exact(region, 1e-15)


def test_model_prefix_is_matched_literally(db, conn, model_version):
    from psm_db.errors import UnknownModelError
    from psm_db.registry import get_model_version

    assert get_model_version(db, model_version.version[:10]).version == model_version.version
    for pattern in ("%%%%%%%%", "________", model_version.version[:4] + "%%%%", model_version.version[:7] + "_",
                    "\\\\\\\\\\\\\\\\"):
        with pytest.raises(UnknownModelError, match="unknown model version"):
            get_model_version(db, pattern)
    with pytest.raises(LookupError):  # callers catching LookupError (or ValueError) still work
        get_model_version(db, "%%%%%%%%")
    with pytest.raises(ValueError):
        get_model_version(db, "%%%%%%%%")


# --------------------------------------------------------------------------- real imagery: nodata and failures


def _nodata_border_tif(path):
    """A UTM GeoTIFF whose west half is the nodata border of a scene (value 0, declared nodata)."""
    import rasterio
    from rasterio.transform import from_origin

    data = np.full((3, 600, 600), 120, np.uint8)
    data += np.random.default_rng(3).integers(0, 60, data.shape, dtype=np.uint8)
    data[:, :, :300] = 0
    with rasterio.open(path, "w", driver="GTiff", width=600, height=600, count=3, dtype="uint8",
                       crs="EPSG:32631", transform=from_origin(300_000.0, 5_660_000.0, 10.0, 10.0),
                       nodata=0, tiled=True, blockxsize=256, blockysize=256) as ds:
        ds.write(data)
    return path


def _fraction_box(path, west: float, east: float) -> str:
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as ds:
        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    return f"{w + (e - w) * west},{s + (n - s) * 0.1},{w + (e - w) * east},{n - (n - s) * 0.1}"


def _source_rows(conn, source: str) -> tuple[int, int, int]:
    """(tiles, features, embeddings) rows of an imagery source."""
    return conn.execute(
        "SELECT (SELECT count(*) FROM psm.tiles WHERE imagery_source = %(s)s),"
        " (SELECT count(*) FROM psm.tile_features f JOIN psm.tiles t ON t.id = f.tile_id"
        "   WHERE t.imagery_source = %(s)s),"
        " (SELECT count(*) FROM psm.embeddings e JOIN psm.tiles t ON t.id = e.tile_id"
        "   WHERE t.imagery_source = %(s)s)", {"s": source}).fetchone()


def _run_job(db, request, limits=LIMITS):
    job, plan = embed.submit(db, request, limits, lambda j: "no-celery")
    results = [embed.run_chunk(db, str(job), c, limits) for c in embed.prepare_job(db, str(job), limits)]
    return str(job), plan, results


def test_a_region_in_the_nodata_border_embeds_nothing_and_says_why(db, conn, model_version, tmp_path):
    from psm_db import jobs

    tif = _nodata_border_tif(tmp_path / "border.tif")
    imagery = ImagerySpec(kind="geotiff", path=str(tif), size_px=32, name="nodata-border")
    request = EmbedRequest(region=_fraction_box(tif, 0.05, 0.45), model_version=model_version.version,
                           imagery=imagery)
    job, plan, results = _run_job(db, request, Limits(max_region_tiles=2000, chunk_tiles=64, batch_size=32))
    assert plan.total > 100
    assert _source_rows(conn, "nodata-border") == (0, 0, 0)  # was (n, n, n) with n identical features
    assert sum(r.tiles_skipped_nodata for r in results) == plan.total
    row = jobs.get_job(db, job)
    assert row["status"] == "succeeded"
    assert row["result"]["tiles_skipped_nodata"] == plan.total
    assert f"{plan.total} tile(s) skipped" in row["message"]
    events = " ".join(m for _, m in jobs.job_events(db, job))
    assert "under 50% of their pixels hold data" in events

    # across the edge of the data: only the tiles with enough data are embedded
    both = replace(request, region=_fraction_box(tif, 0.3, 0.7))
    job2, plan2, results2 = _run_job(db, both, Limits(max_region_tiles=2000, chunk_tiles=64, batch_size=32))
    skipped = sum(r.tiles_skipped_nodata for r in results2)
    tiles, feats, embs = _source_rows(conn, "nodata-border")
    assert 0 < skipped < plan2.total and tiles == feats == embs == plan2.total - skipped
    assert jobs.get_job(db, job2)["result"]["tiles_skipped_nodata"] == skipped
    # the stored tiles all lie east of the data edge (their features differ: real pixels)
    distinct = conn.execute("SELECT count(DISTINCT f.features::text) FROM psm.tile_features f JOIN psm.tiles t"
                            " ON t.id = f.tile_id WHERE t.imagery_source = 'nodata-border'").fetchone()[0]
    assert distinct == feats
    # min_valid 0 embeds everything, even tiles without a single pixel of data
    everything = replace(both, imagery=replace(imagery, name="nodata-all", min_valid=0.0))
    _, plan3, results3 = _run_job(db, everything, Limits(max_region_tiles=2000, chunk_tiles=64, batch_size=32))
    assert sum(r.tiles_skipped_nodata for r in results3) == 0
    assert _source_rows(conn, "nodata-all") == (plan3.total,) * 3


def _truncated_cog(tmp_path):
    import rasterio
    import rasterio.shutil

    local = write_geotiff(tmp_path / "scene.tif", size=1200)
    cog = tmp_path / "cog.tif"
    with rasterio.open(local) as ds:
        rasterio.shutil.copy(ds, str(cog), driver="COG", COMPRESS="DEFLATE")
    cog.write_bytes(cog.read_bytes()[: cog.stat().st_size // 2])
    return cog


def test_a_chunk_that_fails_on_a_truncated_cog_leaves_nothing_behind(db, conn, model_version, tmp_path):
    from psm_db import jobs

    cog = _truncated_cog(tmp_path)
    request = EmbedRequest(region=geotiff_region(cog, 0.02), model_version=model_version.version,
                           imagery=ImagerySpec(kind="geotiff", path=str(cog), size_px=32, name="truncated-cog"))
    limits = Limits(max_region_tiles=5000, chunk_tiles=400, batch_size=32)
    job, plan = embed.submit(db, request, limits, lambda j: "no-celery")
    chunks = embed.prepare_job(db, str(job), limits)
    before = conn.execute("SELECT (SELECT count(*) FROM psm.tiles), (SELECT count(*) FROM psm.tile_features),"
                          " (SELECT count(*) FROM psm.embeddings)").fetchone()
    failed = None
    for c in chunks:
        try:
            embed.run_chunk(db, str(job), c, limits)
        except ValueError as e:  # what psm.embed_chunk does with a permanent error
            jobs.fail_chunk(db, str(job), c, str(e), final=True)
            failed = c
            break
    assert failed is not None, "the truncated half of the file was read without an error"
    after = conn.execute("SELECT (SELECT count(*) FROM psm.tiles), (SELECT count(*) FROM psm.tile_features),"
                         " (SELECT count(*) FROM psm.embeddings)").fetchone()
    succeeded = sum(1 for s in jobs.chunk_states(db, str(job)) if s["status"] == "succeeded")
    written = sum(len(plan.tiles(c)) for c in range(succeeded))
    assert succeeded == failed  # chunks run in order: the ones before the failing one finished
    assert tuple(a - b for a, b in zip(after, before, strict=True)) == (written, written, written)
    failing = plan.tiles(failed)
    left = conn.execute("SELECT count(*) FROM psm.tiles WHERE imagery_source = 'truncated-cog'"
                        " AND zoom = 1 AND (grid_row, grid_col) IN (SELECT * FROM unnest(%s::int[], %s::int[]))",
                        (failing.rows.tolist(), failing.cols.tolist())).fetchone()[0]
    assert left == 0, f"{left} tiles of the failed chunk were left in psm.tiles"
    row = jobs.get_job(db, str(job))
    assert row["status"] == "failed"
    assert f"cannot read the imagery file {cog}" in row["error"] and "truncated" in row["error"]


def test_the_raster_of_stored_tiles_is_found_by_their_source_name(db, conn, db_url, model_version, tmp_path):
    """What the dashboard reads to show a tile's real imagery (psm_db.rasters, no worker code)."""
    from sqlalchemy.orm import Session

    from psm_db import rasters
    from psm_db.engine import make_engine

    tif = write_geotiff(tmp_path / "named.tif", size=200)
    region = geotiff_region(tif, 0.3)
    for name in ("my-scene", None):
        imagery = ImagerySpec(kind="geotiff", path=str(tif), size_px=32, name=name, bands=(3, 2, 1))
        _run_job(db, EmbedRequest(region=region, model_version=model_version.version, imagery=imagery))
    stored = {r[0] for r in conn.execute("SELECT DISTINCT imagery_source FROM psm.tiles WHERE imagery_source"
                                         " IN ('my-scene', %s)", (f"geotiff:{tif}",)).fetchall()}
    assert stored == {"my-scene", f"geotiff:{tif}"}
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            for name in stored:
                assert rasters.raster_of_source(name, s) == rasters.RasterRef("geotiff", str(tif), (3, 2, 1))
            assert rasters.raster_of_source("world-0-sentinel", s) is None
    finally:
        engine.dispose()
    assert rasters.raster_of_source(f"geotiff:{tif}") == rasters.RasterRef("geotiff", str(tif))
