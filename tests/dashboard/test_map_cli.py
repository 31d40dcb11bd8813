"""`psm map` on the known-answer database: every format read back, the answer in the right place."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pyogrio
import pytest
import rasterio
import shapely
from typer.testing import CliRunner


def _seed_facts():  # type: ignore[no-untyped-def]
    """The seed's constants, from this folder's conftest (the name "conftest" is shared by every folder)."""
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("dashboard_seed_facts", Path(__file__).with_name("conftest.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_SEED = _seed_facts()
HOURS, INSECTS, MONTH, REGIONS, SOURCE = _SEED.HOURS, _SEED.INSECTS, _SEED.MONTH, _SEED.REGIONS, _SEED.SOURCE

CONDITION = ["--month", str(MONTH), "--hour", str(HOURS[1]), "--audio-source", SOURCE]
REGION = "-91,40,-88,41"


@pytest.fixture
def psm(dash_env):
    from worker.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["map", *args])


def _centre(name: str) -> tuple[float, float]:
    w, s, e, n = REGIONS[name]
    return (w + e) / 2, (s + n) / 2


def test_cog_of_a_stored_query_has_the_answer_where_the_world_put_it(psm, seeded, tmp_path):
    out = tmp_path / "insects.tif"
    r = psm("--query", str(seeded.query_id), "--region", REGION, *CONDITION, "--out", str(out))
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as src:
        assert src.count == 2 and src.crs.to_epsg() == 4326
        assert src.tags()["month"] == str(MONTH) and src.tags()["query"] == f"query {seeded.query_id}"
        prob, unc = src.read(1), src.read(2)
        assert np.isfinite(prob).sum() == 300, "one cell per 0.1-degree tile, none empty"
        at = {k: src.index(*_centre(k)) for k in REGIONS}
        assert prob[at["Marsh"]] > prob[at["City"]] and prob[at["Marsh"]] > prob[at["Farm"]]
        assert unc[at["Farm"]] > unc[at["City"]]  # the seed doubled sigma^2 on Farm


def test_text_query_to_geojson_and_geoparquet(psm, seeded, tmp_path):
    args = ["--text", INSECTS, "--model", seeded.version, "--region", REGION, *CONDITION]
    gj = tmp_path / "m.geojson"
    r = psm(*args, "--out", str(gj))
    assert r.exit_code == 0, r.output
    assert pyogrio.read_info(gj)["features"] == 300
    meta, table = pyogrio.read_arrow(gj)
    geoms = shapely.from_wkb(table[meta["geometry_name"] or "wkb_geometry"].to_numpy(zero_copy_only=False))
    best = int(np.argmax(table["probability"].to_numpy()))
    w, s, e, n = REGIONS["Marsh"]
    assert shapely.within(geoms[best].centroid, shapely.box(w, s, e, n))
    pq_path = tmp_path / "m.parquet"
    assert psm(*args, "--out", str(pq_path)).exit_code == 0
    t = pq.read_table(pq_path)
    assert json.loads(t.schema.metadata[b"geo"])["primary_column"] == "geometry" and t.num_rows == 300
    np.testing.assert_allclose(np.sort(t["probability"].to_numpy()), np.sort(table["probability"].to_numpy()))
    png = tmp_path / "m.png"
    assert psm(*args, "--layer", "var_sum", "--out", str(png)).exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--query", "1", "--text", "x"], "either --query"),
    (["--text", "x"], "needs --model"),
    (["--query", "{q}", "--out-format-typo"], "No such option"),
    (["--query", "999999"], "999999"),
    (["--query", "{q}", "--month", "7"], "embedded"),
    (["--query", "{q}", "--month", "13"], "month"),
])
def test_bad_requests_write_no_file(psm, seeded, tmp_path, args, message):
    out = tmp_path / "m.tif"
    args = [a.replace("{q}", str(seeded.query_id)) for a in args]
    r = psm(*args, "--region", REGION, "--out", str(out))
    assert r.exit_code != 0 and message in r.output, r.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_an_unknown_suffix_is_refused(psm, seeded, tmp_path):
    r = psm("--query", str(seeded.query_id), "--region", REGION, "--out", str(tmp_path / "m.jpg"))
    assert r.exit_code == 1 and "suffix must be one of" in r.output


def test_query_rank_and_list_speak_json(dash_env, seeded):
    from worker.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["query", "rank", str(seeded.query_id), *CONDITION, "-k", "5", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [x["rank"] for x in rows] == [1, 2, 3, 4, 5]
    assert all(REGIONS["Marsh"][0] <= x["lon"] < REGIONS["Marsh"][2] for x in rows)
    assert rows[0]["probability"] >= rows[-1]["probability"] and len(rows[0]["bounds"]) == 4
    r = runner.invoke(app, ["query", "rank", str(seeded.query_id), *CONDITION, "--set", "test-counties", "--json"])
    regions = json.loads(r.stdout)
    assert regions[0]["region"] == "Marsh" and {x["region"] for x in regions} == set(REGIONS)
    r = runner.invoke(app, ["query", "list", "--json"])
    listed = json.loads(r.stdout)
    assert seeded.query_id in {q["id"] for q in listed} and all("model_version" in q for q in listed)


def test_qgis_path_map_tiles_as_the_reader(seeded, as_role):
    """psm.map_tiles: valid SRID-4326 polygons with the scores psm map writes, callable by psm_reader."""
    import psycopg
    from sqlalchemy.orm import Session

    from psm_db.engine import make_engine
    from psm_db.ranking import map_scores
    from psm_model import Condition

    reader = as_role(seeded.db_url, "psm_reader")
    with psycopg.connect(reader) as c:
        rows = c.execute(
            "SELECT tile_id, ST_IsValid(geom), ST_SRID(geom), GeometryType(geom), probability, uncertainty,"
            " distance, ST_XMin(geom), ST_YMax(geom) FROM psm.map_tiles(%s, p_month => %s, p_hour => %s,"
            " p_audio_source => %s)", (seeded.query_id, MONTH, HOURS[1], SOURCE)).fetchall()
        with pytest.raises(psycopg.errors.NoDataFound, match="no stored query 999999"):
            c.execute("SELECT * FROM psm.map_tiles(999999)")
        c.rollback()
        with pytest.raises(psycopg.Error, match="embed"):
            c.execute("SELECT * FROM psm.map_tiles(%s, p_month => 7)", (seeded.query_id,))
    assert len(rows) == 300 and all(r[1] and r[2] == 4326 and r[3] == "POLYGON" for r in rows)
    engine = make_engine(seeded.db_url)
    try:
        with Session(engine) as s:
            m = map_scores(session=s, query_id=seeded.query_id,
                           condition=Condition(month=MONTH, hour=HOURS[1], audio_source=SOURCE))
    finally:
        engine.dispose()
    assert [r[0] for r in rows] == m.tile_id.tolist()
    np.testing.assert_allclose([r[4] for r in rows], m.probability, rtol=1e-9)
    np.testing.assert_allclose([r[5] for r in rows], m.var_sum, rtol=1e-9)
    np.testing.assert_allclose([r[6] for r in rows], m.distance, rtol=1e-9)
    np.testing.assert_allclose([(r[7], r[8]) for r in rows], m.bounds[:, [0, 3]])
