"""Map rasterisation, exports and upload checks (no database)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

from dashboard import exports, mapview
from dashboard.uploads import UploadError, parse_bbox, parse_region_text, read_audio, read_geojson


def _grid_scores(nx: int = 4, ny: int = 3, step: float = 0.5) -> mapview.TileScores:
    xs, ys = np.meshgrid(np.arange(nx), np.arange(ny))
    x0 = 10.0 + xs.ravel() * step
    y0 = 50.0 + ys.ravel() * step
    n = nx * ny
    p = np.arange(n, dtype=np.float64) / n
    return mapview.TileScores(np.arange(n), x0 + step / 2, y0 + step / 2, x0, y0, x0 + step, y0 + step,
                              p, -np.log(p + 1e-9), np.full(n, 0.5))


def test_rasterise_places_each_tile_in_its_cell():
    s = _grid_scores()
    r = mapview.rasterise(s, s.probability)
    assert r.values.shape == (3, 4)
    assert r.extent == pytest.approx((10.0, 12.0, 50.0, 51.5))
    # row 0 is the north: tiles with ys == 2 (ids 8..11)
    np.testing.assert_allclose(r.values[0], s.probability[8:12])
    np.testing.assert_allclose(r.values[2], s.probability[0:4])


def test_rasterise_bins_large_regions_and_keeps_holes():
    s = _grid_scores(40, 30, 0.1)
    r = mapview.rasterise(s, s.probability, max_side=10)
    assert max(r.values.shape) <= 10
    assert np.isfinite(r.values).all()
    assert s.probability.min() <= np.nanmin(r.values) and np.nanmax(r.values) <= s.probability.max()
    np.testing.assert_allclose(np.nanmean(r.values), s.probability.mean(), rtol=0.1)
    keep = np.arange(len(s)) % 2 == 0
    sub = mapview.TileScores(*(getattr(s, f)[keep] for f in
                               ("tile_id", "lon", "lat", "xmin", "ymin", "xmax", "ymax", "probability",
                                "distance", "var_sum")))
    r2 = mapview.rasterise(sub, sub.probability)
    assert np.isnan(r2.values).sum() == r2.values.size - keep.sum(), "one cell per tile, holes stay NaN"


def test_rasterise_rejects_bad_input():
    s = _grid_scores()
    with pytest.raises(ValueError, match="expected 12 values"):
        mapview.rasterise(s, np.zeros(3))
    with pytest.raises(ValueError, match="unknown layer"):
        s.layer("nope")


def test_shared_limits_span_every_hour():
    assert mapview.shared_limits([np.array([0.1, 0.2]), np.array([0.05, np.nan, 0.6])]) == (0.05, 0.6)
    lo, hi = mapview.shared_limits([np.array([0.3, 0.3])])
    assert lo < 0.3 < hi
    assert mapview.shared_limits([np.array([np.nan])]) == (0.0, 1.0)


def test_render_png_is_an_image_with_colour_bar():
    from PIL import Image
    from shapely.geometry import box

    s = _grid_scores()
    png = mapview.render_png(mapview.rasterise(s, s.probability), vmin=0, vmax=1, title="t",
                             outlines=[("A", box(10, 50, 11, 51))], marker=(10.25, 50.25))
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and 500 <= img.width <= 900 and img.height >= 300
    right = np.asarray(img.convert("RGB"))[:, int(img.width * 0.8):].reshape(-1, 3).astype(int)
    yellow = np.abs(right - np.array([253, 231, 37])).sum(axis=1) < 30  # viridis at vmax: the colour bar
    assert yellow.sum() > 20


def test_geotiff_round_trip_in_epsg4326():
    s = _grid_scores()
    r = mapview.rasterise(s, s.probability)
    band, profile = exports.read_geotiff(exports.geotiff_bytes(r, tags={"query": "insects"}))
    assert profile["crs"].to_epsg() == 4326
    assert tuple(profile["bounds"]) == pytest.approx((10.0, 50.0, 12.0, 51.5))
    np.testing.assert_allclose(band, r.values.astype(np.float32))
    assert profile["tags"]["query"] == "insects"


def test_geojson_has_every_tile_with_scores():
    s = _grid_scores()
    data = json.loads(exports.geojson_text(s, properties={"query": "q"}))
    assert data["type"] == "FeatureCollection" and len(data["features"]) == len(s)
    f = data["features"][5]
    assert f["properties"]["tile_id"] == 5
    assert f["properties"]["probability"] == pytest.approx(s.probability[5])
    assert f["geometry"]["coordinates"][0][0] == pytest.approx([s.xmin[5], s.ymin[5]])


def _wav(seconds: float, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * rate), dtype=np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_audio_upload_checks():
    wave, sr = read_audio("ok.wav", _wav(1.5), max_seconds=600)
    assert sr == 8000 and wave.shape == (12000,)
    with pytest.raises(UploadError, match="is empty"):
        read_audio("empty.wav", b"", 600)
    with pytest.raises(UploadError, match="not an audio file"):
        read_audio("notes.txt", b"these are not samples\n" * 50, 600)
    two_hours = _wav(2 * 3600, rate=1000)  # 14 MB: refused from the header, never decoded
    with pytest.raises(UploadError, match=r"2:00:00 long; the limit is 10:00"):
        read_audio("field.wav", two_hours, 600)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_audio_is_decoded_block_by_block_to_the_channel_mean(fmt):
    """A stereo clip read from the upload object itself equals the whole-file channel mean."""
    from dashboard.uploads import _decode_mono

    rng = np.random.default_rng(3)
    stereo = (0.2 * rng.standard_normal((3 * 8000 + 123, 2))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, stereo, 8000, format=fmt)
    buf.seek(0)
    whole, _ = sf.read(io.BytesIO(buf.getvalue()), dtype="float32", always_2d=True)
    wave, sr = read_audio(f"stereo.{fmt.lower()}", buf, max_seconds=600)  # the file object, not its bytes
    assert sr == 8000 and wave.dtype == np.float32
    np.testing.assert_allclose(wave, whole.mean(axis=1), atol=1e-6)
    buf.seek(0)
    blocks, _ = _decode_mono(buf, block_frames=1000)  # 25 blocks, the last one short
    np.testing.assert_allclose(blocks, wave, atol=1e-6)


@pytest.mark.parametrize(("payload", "message"), [
    (b"", "is empty"),
    (b"{not json", "not valid JSON"),
    (b'{"a": 1}', "not GeoJSON"),
    (b'{"type": "Point", "coordinates": [1, 2]}', "must be a Polygon or MultiPolygon, got Point"),
    (b'{"type": "Feature", "properties": {}, "geometry": {"type": "LineString", "coordinates": [[0,0],[1,1]]}}',
     "must be a Polygon or MultiPolygon, got LineString"),
    (b'{"type": "Polygon", "coordinates": [[[0,0],[1,1],[1,0],[0,1],[0,0]]]}', "not valid: Self-intersection"),
    (b'{"type": "Polygon", "coordinates": [[[0,0],[500,0],[500,1],[0,1],[0,0]]]}', "outside lon/lat bounds"),
    (b'{"type": "FeatureCollection", "features": []}', "holds no geometry"),
])
def test_geojson_upload_checks(payload, message):
    with pytest.raises(UploadError, match=message):
        read_geojson("region.geojson", payload)


def test_geojson_feature_collection_is_unioned():
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[[2, 0], [3, 0], [3, 1], [2, 1], [2, 0]]]}},
    ]}
    geom = read_geojson("two.geojson", json.dumps(fc).encode())
    assert geom.geom_type == "MultiPolygon" and geom.area == pytest.approx(2.0)


def test_bbox_parsing():
    assert parse_bbox("-91, 40, -90, 41").bounds == (-91, 40, -90, 41)
    for bad, msg in (("1,2,3", "four numbers"), ("a,b,c,d", "four numbers"), ("5,0,1,1", "empty"),
                     ("0,0,200,1", "outside")):
        with pytest.raises(UploadError, match=msg):
            parse_bbox(bad)


def test_typed_and_uploaded_regions_in_other_srids_are_transformed():
    """The dashboard reads regions through psm_db.geometry: an EWKT SRID or a GeoJSON crs is transformed."""
    from psm_db.geometry import parse_region

    ewkt = "SRID=3857;POLYGON((1 1,2 1,2 2,1 2,1 1))"
    expected = parse_region(ewkt)
    typed = parse_region_text(ewkt)
    assert typed.wkb == expected.wkb
    w, s, e, n = typed.bounds
    assert 8e-6 < w < e < 2e-5 and 8e-6 < s < n < 2e-5  # a square metre near (0, 0), not a degree box
    upload = {"type": "Feature", "properties": {}, "crs": {"type": "name", "properties": {"name": "EPSG:3857"}},
              "geometry": {"type": "Polygon", "coordinates": [[[1, 1], [2, 1], [2, 2], [1, 2], [1, 1]]]}}
    assert read_geojson("metres.geojson", json.dumps(upload).encode()).wkb == expected.wkb
    assert parse_region_text("-91, 40, -90, 41").bounds == (-91, 40, -90, 41)
    for bad, msg in (("10, 20, 5", "four numbers"), ("SRID=999999;POLYGON((0 0,1 0,1 1,0 0))", "unknown SRID"),
                     ("/etc/passwd.json", "not read here"), ("POINT(1 2)", "got Point")):
        with pytest.raises(UploadError, match=msg):
            parse_region_text(bad)


# --------------------------------------------------------------------------- real imagery of tiles (psm_db.rasters)


def _utm_tif(path, *, dtype="uint8", nodata_west=False, west=300_000.0, size=600):
    """A UTM 31N GeoTIFF near 51 N: red grows eastwards, green is 60, blue 200 (x 100 for uint16)."""
    import rasterio
    from rasterio.transform import from_origin

    k = 1 if dtype == "uint8" else 100
    xx = np.tile(np.linspace(20, 230, size, dtype=np.float32), (size, 1))
    data = np.stack([xx, np.full_like(xx, 60), np.full_like(xx, 200)]) * k
    if nodata_west:
        data[:, :, : size // 2] = 0
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype=dtype,
                       crs="EPSG:32631", transform=from_origin(west, 5_660_000.0, 10.0, 10.0),
                       nodata=0 if nodata_west else None) as ds:
        ds.write(data.astype(dtype))
    return path


def _centre(path):
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as ds:
        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    return (s + n) / 2, (w + e) / 2, (w, s, e, n)


def test_read_area_shows_the_raster_in_lon_lat(tmp_path):
    from psm_db import rasters

    tif = _utm_tif(tmp_path / "scene.tif")
    lat, lon, _ = _centre(tif)
    ref = rasters.parse_source_name(f"geotiff:{tif}")
    assert ref == rasters.RasterRef("geotiff", str(tif))
    img, share = rasters.read_area(ref, rasters.area_bounds(lat, lon, 2_000.0), 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and share == 1.0
    assert abs(float(img[..., 1].mean()) - 60) < 2 and abs(float(img[..., 2].mean()) - 200) < 2
    assert img[32, 50, 0] > img[32, 10, 0] + 10, "red grows eastwards, as in the file"
    # half outside the raster: those pixels are black and counted out
    _, _, (w, s, e, n) = _centre(tif)
    img, share = rasters.read_area(ref, (e - 0.01, lat - 0.005, e + 0.01, lat + 0.005), 64)
    assert 0.3 < share < 0.7 and img[:, -5:].max() == 0
    # 16-bit reflectance is stretched to the picture's range
    img16, _ = rasters.read_area(rasters.RasterRef("geotiff", str(_utm_tif(tmp_path / "u16.tif", dtype="uint16"))),
                                 rasters.area_bounds(lat, lon, 2_000.0), 32)
    assert img16.max() >= 250 and img16.min() <= 5
    with pytest.raises(FileNotFoundError, match="not on this machine"):
        rasters.read_area(rasters.RasterRef("geotiff", str(tmp_path / "gone.tif")), (0, 0, 1, 1))
    assert rasters.parse_source_name("world-0-sentinel") is None and rasters.parse_source_name("sentinel") is None


def test_read_area_mosaics_a_folder_and_keeps_nodata_black(tmp_path):
    from psm_db import rasters

    folder = tmp_path / "tiles"
    folder.mkdir()
    a = _utm_tif(folder / "a.tif", nodata_west=True)
    _utm_tif(folder / "b.tif", west=306_000.0)
    lat, _, (w, s, e, n) = _centre(a)
    ref = rasters.RasterRef("folder", str(folder))
    img, share = rasters.read_area(ref, (w + (e - w) * 0.1, lat - 0.005, w + (e - w) * 0.4, lat + 0.005), 32)
    assert share == 0.0 and img.max() == 0, "the nodata half of a.tif is black"
    img, share = rasters.read_area(ref, (e - 0.02, lat - 0.005, e + 0.02, lat + 0.005), 32)
    assert share > 0.95 and abs(float(img[..., 2].mean()) - 200) < 3, "a.tif and b.tif side by side"


# --------------------------------------------------------------------------- metadata widgets


def test_meta_holds_one_condition():
    from dashboard.widgets import Meta, meta_from_widgets
    from psm_model.condition import Condition

    meta = meta_from_widgets(5, 20, "inaturalist", None, 1)
    assert meta == Meta(Condition(5, 20, "inaturalist"), 1)
    assert (meta.month, meta.hour, meta.audio_source, meta.caption_source, meta.zoom) == (5, 20, "inaturalist", None, 1)
    assert meta.label() == "May · 20:00 · inaturalist · caption source left out · zoom 1"
    assert meta.with_hour(6) == Meta(Condition(5, 6, "inaturalist"), 1)
    assert meta.with_hour(None).label().startswith("May · hour left out")
    assert meta_from_widgets(None, None, None, None, 2).label() == (
        "month left out · hour left out · audio source left out · caption source left out · zoom 2")


@pytest.mark.parametrize("values, message", [
    ((13, 20, "inaturalist", None), "month 13 is out of range: month must be in 1..12, or leave it out"),
    ((5, 24, "inaturalist", None), "hour 24 is out of range: hour must be in 0..23, or leave it out"),
    ((5, 20, "spotify", None), "unknown audio source 'spotify'; expected one of yfcc"),
    ((5, 20, None, "gpt"), "unknown caption source 'gpt'"),
])
def test_widget_values_are_checked_as_a_condition(values, message):
    from dashboard.widgets import meta_from_widgets

    with pytest.raises(ValueError, match=message):
        meta_from_widgets(*values, 1)
    if values[1] == 24:
        with pytest.raises(ValueError, match=message):
            meta_from_widgets(5, 20, "inaturalist", None, 1).with_hour(24)


@pytest.mark.parametrize("suffix", [".gpkg", ".fgb", ".parquet", ".zip"])
def test_region_uploads_in_other_formats_are_reprojected(tmp_path, suffix):
    import zipfile

    import pyarrow as pa
    import pyogrio
    import shapely
    from pyproj import Transformer

    from dashboard.uploads import read_region_file

    # a 0.5-degree square near Des Moines, written in Web Mercator
    to_3857 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    lonlat = shapely.box(-93.9, 41.4, -93.4, 41.9)
    square = shapely.transform(lonlat, lambda xy: np.column_stack(to_3857.transform(xy[:, 0], xy[:, 1])))
    table = pa.table({"name": ["polk"], "geometry": pa.array([shapely.to_wkb(square)], pa.binary())})
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        from pyproj import CRS

        geo = {"version": "1.1.0", "primary_column": "geometry",
               "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"],
                                        "crs": json.loads(CRS.from_epsg(3857).to_json())}}}
        path = tmp_path / "r.parquet"
        pq.write_table(table.replace_schema_metadata({b"geo": json.dumps(geo).encode()}), path)
    elif suffix == ".zip":
        shp = tmp_path / "r.shp"
        pyogrio.write_arrow(table, str(shp), driver="ESRI Shapefile", geometry_name="geometry",
                            geometry_type="Polygon", crs="EPSG:3857")
        path = tmp_path / "r.zip"
        with zipfile.ZipFile(path, "w") as z:
            for part in tmp_path.glob("r.*"):
                if part.suffix != ".zip":
                    z.write(part, part.name)
    else:
        path = tmp_path / f"r{suffix}"
        pyogrio.write_arrow(table, str(path), driver={".gpkg": "GPKG", ".fgb": "FlatGeobuf"}[suffix],
                            geometry_name="geometry", geometry_type="Polygon", crs="EPSG:3857")
    geom = read_region_file(f"upload{suffix}", path.read_bytes())
    assert geom.bounds == pytest.approx(lonlat.bounds, abs=1e-6)


def test_region_uploads_refuse_what_they_cannot_read():
    from dashboard.uploads import read_region_file

    with pytest.raises(UploadError, match="not a region file the dashboard reads"):
        read_region_file("roads.kml", b"<kml/>")
    with pytest.raises(UploadError, match="is empty"):
        read_region_file("r.gpkg", b"")
    with pytest.raises(UploadError, match="The region in 'r.gpkg'"):
        read_region_file("r.gpkg", b"not a geopackage at all")


def test_the_uncertainty_colour_range_is_read_as_match_odds():
    from dashboard.views.map import odds_note

    pcme = {"loss": "pcmepp", "match_a": 5.0}
    assert "2.72-fold" in odds_note("var_sum", pcme, 2.6, 2.8)
    assert odds_note("probability", pcme, 0.0, 1.0) == ""
    assert odds_note("var_sum", {"loss": "infonce", "match_a": 7.0}, 2.6, 2.8) == ""
