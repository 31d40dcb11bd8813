"""`psm_db.maps.export`: every format opened again with rasterio, pyogrio or pyarrow."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pyogrio
import pytest
import rasterio
import shapely
from PIL import Image
from shapely.geometry import box

from psm_db.maps.export import map_format, rasters, write_map
from psm_db.maps.scores import TileScores
from psm_db.tiles import GridSpec, grid_tiles


def _scores(region=box(-30.0, 60.0, -10.0, 72.0), zoom: int = 1) -> TileScores:
    ts = grid_tiles(region, GridSpec("synthetic", 100.0, 48, zoom))
    w, s, e, n = ts.bounds()
    lat, lon = ts.centroids()
    k = len(ts)
    rng = np.random.default_rng(0)
    p = rng.random(k)
    return TileScores(np.arange(k) + 100, lon, lat, w, s, e, n, p, -np.log(p), 2.0 + rng.random(k))


def test_cog_has_two_bands_tiles_overviews_nodata_and_epsg4326(tmp_path):
    s = _scores()
    out = write_map(tmp_path / "m.tif", s, tags={"query": "insects"})
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 4326 and src.count == 2
        assert src.driver == "GTiff" and src.profile["tiled"] and src.block_shapes[0] == (256, 256)
        assert src.overviews(1), "a COG of this size has overviews"
        assert np.isnan(src.nodata)
        assert src.descriptions == ("match probability", "uncertainty: sum of sigma^2")
        assert src.tags()["query"] == "insects"
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        prob, unc = src.read(1), src.read(2)
        want = rasters(s)
        np.testing.assert_allclose(prob, want["probability"].values.astype(np.float32))
        np.testing.assert_allclose(unc, want["var_sum"].values.astype(np.float32))
        # the value at a tile's centre is that tile's score, in both bands
        for i in (0, len(s) // 2, len(s) - 1):
            row, col = src.index(s.lon[i], s.lat[i])
            assert prob[row, col] == pytest.approx(s.probability[i], rel=1e-6)
            assert unc[row, col] == pytest.approx(s.var_sum[i], rel=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name != "m.tif"], "temporary files left behind"


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg", ".fgb"])
def test_vector_formats_have_one_valid_polygon_per_tile(tmp_path, suffix):
    s = _scores(zoom=5)
    out = write_map(tmp_path / f"m{suffix}", s)
    info = pyogrio.read_info(out)
    assert info["features"] == len(s) and info["geometry_type"] == "Polygon"
    assert "4326" in info["crs"]
    meta, table = pyogrio.read_arrow(out)
    geoms = shapely.from_wkb(table[meta["geometry_name"] or "wkb_geometry"].to_numpy(zero_copy_only=False))
    assert shapely.is_valid(geoms).all()
    ids = table["tile_id"].to_numpy()
    order = np.argsort(ids)
    np.testing.assert_array_equal(ids[order], s.tile_id)
    np.testing.assert_allclose(table["probability"].to_numpy()[order], s.probability)
    np.testing.assert_allclose(table["var_sum"].to_numpy()[order], s.var_sum)
    np.testing.assert_allclose(shapely.bounds(geoms[order]), np.c_[s.xmin, s.ymin, s.xmax, s.ymax])


def test_geoparquet_metadata_and_geometry(tmp_path):
    s = _scores(zoom=5)
    out = write_map(tmp_path / "m.parquet", s, tags={"condition": "month=5"})
    t = pq.read_table(out)
    geo = json.loads(t.schema.metadata[b"geo"])
    col = geo["columns"][geo["primary_column"]]
    assert geo["version"].startswith("1.") and col["encoding"] == "WKB" and col["geometry_types"] == ["Polygon"]
    assert col["crs"]["id"] == {"authority": "EPSG", "code": 4326}
    assert col["bbox"] == pytest.approx([s.xmin.min(), s.ymin.min(), s.xmax.max(), s.ymax.max()])
    geoms = shapely.from_wkb(t["geometry"].to_numpy(zero_copy_only=False))
    assert shapely.is_valid(geoms).all() and len(geoms) == len(s)
    np.testing.assert_allclose(t["probability"].to_numpy(), s.probability)
    assert json.loads(t.schema.metadata[b"psm"]) == {"condition": "month=5"}


def test_png_is_a_picture(tmp_path):
    out = write_map(tmp_path / "m.png", _scores(), layer="var_sum", title="t")
    img = Image.open(out)
    assert img.format == "PNG" and img.width >= 500


def test_bad_requests_write_nothing(tmp_path):
    s = _scores()
    with pytest.raises(ValueError, match=r"suffix must be one of \.tif"):
        write_map(tmp_path / "m.jpeg", s)
    with pytest.raises(ValueError, match="unknown layer"):
        write_map(tmp_path / "m.png", s, layer="nope")
    empty = TileScores(*(np.array([]) for _ in range(10)))
    with pytest.raises(ValueError, match="no tiles"):
        write_map(tmp_path / "m.tif", empty)
    assert list(tmp_path.iterdir()) == []
    assert map_format("x.TIFF") == "tif" and map_format("a/b.geojson") == "geojson"
