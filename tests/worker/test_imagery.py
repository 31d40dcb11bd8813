"""Real imagery: nodata and masks, band choice, scale and offset, remote COGs, unreadable files."""

from __future__ import annotations

import http.server
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import shapely
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from worker_helpers import geotiff_region, write_geotiff

from psm_db.tiles import GridSpec, grid_tiles
from worker.imagery import ImagerySpec, open_source

WEST, NORTH, RES, SIZE = 300_000.0, 5_660_000.0, 10.0, 600


def _write(path: Path, data: np.ndarray, *, nodata=None, driver="GTiff", scales=None, offsets=None) -> Path:
    profile = {"driver": driver, "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": str(data.dtype), "crs": "EPSG:32631", "transform": from_origin(WEST, NORTH, RES, RES)}
    if driver == "GTiff":
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        if scales is not None:
            ds.scales, ds.offsets = scales, offsets
    return path


def _tiles(path: Path, west_frac: float, east_frac: float, size_px: int = 32):
    with rasterio.open(path) as ds:
        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    box = shapely.box(w + (e - w) * west_frac, s + (n - s) * 0.3, w + (e - w) * east_frac, n - (n - s) * 0.3)
    return grid_tiles(box, GridSpec("t", RES, size_px, 1))


def test_nodata_border_marks_tiles_without_data(tmp_path):
    data = np.full((3, SIZE, SIZE), 120, np.uint8)
    data[:, :, : SIZE // 2] = 0  # the west half is the nodata border of a scene
    path = _write(tmp_path / "border.tif", data, nodata=0)
    src = open_source(ImagerySpec(kind="geotiff", path=str(path), size_px=32))
    border = _tiles(path, 0.12, 0.38)
    inner = _tiles(path, 0.62, 0.88)
    _, valid_border = src.read_valid(border, 16)
    imgs, valid_inner = src.read_valid(inner, 16)
    assert len(border) > 4 and valid_border.max() == 0.0, "tiles in the nodata border hold no data"
    assert valid_inner.min() > 0.99
    np.testing.assert_allclose(imgs, 120 / 255, atol=1e-5)


def test_a_mask_band_counts_like_nodata(tmp_path):
    data = np.full((3, SIZE, SIZE), 200, np.uint8)
    path = _write(tmp_path / "masked.tif", data)
    with rasterio.open(path, "r+") as ds:
        mask = np.full((SIZE, SIZE), 255, np.uint8)
        mask[:, SIZE // 2 :] = 0  # the east half is masked out
        ds.write_mask(mask)
    src = open_source(ImagerySpec(kind="geotiff", path=str(path), size_px=32))
    _, east = src.read_valid(_tiles(path, 0.62, 0.88), 16)
    _, west = src.read_valid(_tiles(path, 0.12, 0.38), 16)
    assert east.max() == 0.0 and west.min() > 0.99


def test_bands_pick_the_channels_and_scale_offset_are_applied(tmp_path):
    data = np.stack([np.full((SIZE, SIZE), v, np.uint16) for v in (1000, 2000, 3000, 4000)])
    path = _write(tmp_path / "four.tif", data, scales=(2e-5,) * 4, offsets=(0.1,) * 4)
    tiles = _tiles(path, 0.3, 0.7)
    imgs = open_source(ImagerySpec(kind="geotiff", path=str(path), size_px=32, bands=(4, 3, 2))).read(tiles, 8)
    # reflectance = raw * scale + offset: band 4 -> 0.18, band 3 -> 0.16, band 2 -> 0.14
    np.testing.assert_allclose(imgs[:, :, 4, 4].mean(axis=0), [0.18, 0.16, 0.14], atol=1e-4)
    single = open_source(ImagerySpec(kind="geotiff", path=str(path), size_px=32, bands=(1,))).read(tiles, 8)
    np.testing.assert_allclose(single[:, :, 4, 4].mean(axis=0), [0.12] * 3, atol=1e-4)
    with pytest.raises(ValueError, match="has 4 band"):
        open_source(ImagerySpec(kind="geotiff", path=str(path), bands=(5, 3, 2)))
    with pytest.raises(ValueError, match="one or three"):
        ImagerySpec(kind="geotiff", path=str(path), bands=(1, 2))
    with pytest.raises(ValueError, match="min_valid"):
        ImagerySpec(min_valid=1.5)


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that answers HTTP range requests, as a COG host does."""

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def do_HEAD(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start_s, _, end_s = rng[6:].partition("-")
            start, end = int(start_s), min(int(end_s) if end_s else len(body) - 1, len(body) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
            body = body[start : end + 1]
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(folder: str, port_queue) -> None:
    handler = lambda *a, **k: _RangeHandler(*a, directory=folder, **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port_queue.put(server.server_address[1])
    server.serve_forever()


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on 127.0.0.1 by another process.

    GDAL holds the interpreter lock while it reads, so a server thread in this process would
    never answer.
    """
    folder = tmp_path / "www"
    folder.mkdir()
    ctx = multiprocessing.get_context("fork")
    ports = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(str(folder), ports), daemon=True)
    proc.start()
    try:
        yield folder, f"http://127.0.0.1:{ports.get(timeout=20)}"
    finally:
        proc.terminate()
        proc.join(10)


def test_a_remote_cog_reads_like_the_local_file(tmp_path, http_folder):
    folder, url = http_folder
    local = write_geotiff(tmp_path / "scene.tif")
    with rasterio.open(local) as ds:
        rasterio.shutil.copy(ds, str(folder / "scene.tif"), driver="COG")
    w, s, e, n = (float(v) for v in geotiff_region(local).split(","))
    tiles = grid_tiles(shapely.box(w, s, e, n), GridSpec("t", RES, 32, 1))
    remote = open_source(ImagerySpec(kind="geotiff", path=f"{url}/scene.tif", size_px=32))
    here = open_source(ImagerySpec(kind="geotiff", path=str(folder / "scene.tif"), size_px=32))
    got, valid = remote.read_valid(tiles, 16)
    np.testing.assert_allclose(got, here.read(tiles, 16))
    assert valid.min() > 0.99 and got.max() > 0
    assert remote.name == f"geotiff:{url}/scene.tif"
    with pytest.raises(ValueError, match="cannot read"):
        open_source(ImagerySpec(kind="geotiff", path=f"{url}/missing.tif"))


def test_a_truncated_cog_names_the_file(tmp_path):
    local = write_geotiff(tmp_path / "scene.tif", size=1200)
    cog = tmp_path / "cog.tif"
    with rasterio.open(local) as ds:
        rasterio.shutil.copy(ds, str(cog), driver="COG", COMPRESS="DEFLATE")
    cog.write_bytes(cog.read_bytes()[: cog.stat().st_size // 2])
    src = open_source(ImagerySpec(kind="geotiff", path=str(cog), size_px=32))
    w, s, e, n = (float(v) for v in geotiff_region(cog, 0.02).split(","))
    tiles = grid_tiles(shapely.box(w, s, e, n), GridSpec("t", RES, 32, 1))
    with pytest.raises(ValueError, match=rf"cannot read the imagery file {cog}.*truncated"):
        src.read_valid(tiles, 16)


def test_world_source_renders_each_tile_as_the_world_does():
    # the source renders a batch in one vectorised call; each tile must be the world's own render
    from psm_model.world.world import World

    tiles = grid_tiles(shapely.box(-105.02, 39.70, -104.96, 39.74), GridSpec("w", 100.0, 16, 2))
    src = open_source(ImagerySpec(kind="world", seed=0, gsd=100.0, size_px=16))
    imgs = src.read(tiles, 8)
    assert imgs.shape == (len(tiles), 3, 8, 8) and imgs.dtype == np.float32 and len(tiles) >= 4
    world, (lat, lon) = World(0), tiles.centroids()
    for i in range(len(tiles)):
        one = world.render_tile(float(lat[i]), float(lon[i]), gsd=200.0, size=8, zoom=2, imagery="sentinel")
        np.testing.assert_allclose(imgs[i], one.transpose(2, 0, 1) / 255.0, atol=1e-6)
    assert not np.allclose(imgs[0], imgs[-1])  # different places, different pixels
