"""The map component's pieces: its served folder, the tile grid file, the clicks it returns."""

from __future__ import annotations

import re

import numpy as np
import pytest

from dashboard import tilemap
from psm_db.maps.raster import rasterise_bounds
from psm_db.maps.scores import TileScores


def _scores(n_side: int = 12, step: float = 0.5, west: float = -100.0, south: float = 30.0) -> TileScores:
    xs, ys = np.meshgrid(np.arange(n_side), np.arange(n_side))
    x0, y0 = west + xs.ravel() * step, south + ys.ravel() * step
    n = n_side * n_side
    p = np.linspace(1e-9, 0.5, n)
    return TileScores(np.arange(n) * 3 + 5, x0 + step / 2, y0 + step / 2, x0, y0, x0 + step, y0 + step, p,
                      -np.log(p), np.linspace(2.0, 3.0, n))


def _read_grid(body: bytes) -> dict[str, np.ndarray | float]:
    """The layout tilemap.js reads, parsed independently of grid_bytes."""
    head = np.frombuffer(body, "<f8", 8)
    rows, cols, n = (int(v) for v in head[:3])
    at = 64
    out: dict[str, np.ndarray | float] = {"left": head[3], "top": head[4], "dx": head[5], "dy": head[6]}
    out["ids"] = np.frombuffer(body, "<f8", n, at)
    at += 8 * n
    for name in ("p", "u", "west", "south", "east", "north"):
        out[name] = np.frombuffer(body, "<f4", n, at)
        at += 4 * n
    out["index"] = np.frombuffer(body, "<i4", rows * cols, at).reshape(rows, cols)
    assert at + 4 * rows * cols == len(body), "the file ends where its index ends"
    return out


def _tile_at(g: dict, lon: float, lat: float) -> int:
    """tilemap.js's lookup, step for step."""
    while lon < g["left"]:
        lon += 360
    while lon >= g["left"] + 360:
        lon -= 360
    col, row = int(np.floor((lon - g["left"]) / g["dx"])), int(np.floor((g["top"] - lat) / g["dy"]))
    rows, cols = g["index"].shape
    return int(g["index"][row, col]) if 0 <= row < rows and 0 <= col < cols else -1


def test_the_grid_finds_every_tile_under_any_point_of_it():
    s = _scores()
    r = rasterise_bounds(s.xmin, s.ymin, s.xmax, s.ymax, s.probability)
    g = _read_grid(tilemap.grid_bytes(s, r))
    assert g["ids"].tolist() == s.tile_id.tolist()
    assert np.allclose(g["p"], s.probability, rtol=1e-6) and np.allclose(g["u"], s.var_sum, rtol=1e-6)
    assert np.allclose(g["west"], s.xmin) and np.allclose(g["north"], s.ymax)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(s), 40, replace=False):  # points all over each tile, near its edges too
        fx, fy = rng.uniform(0.01, 0.99, 2)
        lon = s.xmin[i] + fx * (s.xmax[i] - s.xmin[i])
        lat = s.ymin[i] + fy * (s.ymax[i] - s.ymin[i])
        assert _tile_at(g, lon, lat) == i, (i, lon, lat)
    assert _tile_at(g, -101.0, 31.0) == -1 and _tile_at(g, -95.0, 40.0) == -1  # off the map


def test_the_grid_of_a_map_across_the_antimeridian_takes_either_longitude():
    s = _scores(n_side=8, step=0.5, west=178.0, south=-20.0)  # 178 E to 182 E, i.e. to 178 W
    east = s.xmin >= 180.0
    for col in ("lon", "xmin", "xmax"):
        getattr(s, col)[east] -= 360.0  # stored as the database stores them: in [-180, 180]
    r = rasterise_bounds(s.xmin, s.ymin, s.xmax, s.ymax, s.probability)
    g = _read_grid(tilemap.grid_bytes(s, r))
    i = int(np.flatnonzero(east)[0])
    assert _tile_at(g, float(s.lon[i]), float(s.lat[i])) == i  # -179.75: west of the unwrapped raster's edge
    assert _tile_at(g, float(s.lon[i]) + 360.0, float(s.lat[i])) == i  # deck.gl's wrapped view: 180.25


def test_a_grid_needs_the_rasters_index():
    s = _scores(n_side=3)
    r = rasterise_bounds(s.xmin, s.ymin, s.xmax, s.ymax, s.probability)
    with pytest.raises(ValueError, match="no cell-to-tile index"):
        tilemap.grid_bytes(s, type(r)(r.values, r.left, r.top, r.dx, r.dy, None))
    with pytest.raises(ValueError, match="names tile 8 of a map of 4 tiles"):
        tilemap.grid_bytes(TileScores(*(np.asarray(getattr(s, c))[:4] for c in (
            "tile_id", "lon", "lat", "xmin", "ymin", "xmax", "ymax", "probability", "distance", "var_sum"))), r)


def test_the_component_folder_serves_the_page_its_script_and_pydecks_bundle(tmp_path):
    out = tilemap.frontend_dir(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["deck.js", "index.html", "tilemap.js"]
    assert (out / "deck.js").read_bytes() == tilemap.BUNDLE.read_bytes()
    page = (out / "index.html").read_text()
    assert re.findall(r'src="([^"]+)"', page) == ["tilemap.js"], "only the folder's own script"
    script = (out / "tilemap.js").read_text()
    assert 'bundle.src = "deck.js"' in script and "http" not in page + script
    assert tilemap.frontend_dir(tmp_path) == out  # reused
    assert len(list(tmp_path.iterdir())) == 1, "no temporary folder left behind"


def test_a_changed_page_gets_a_new_folder(tmp_path, monkeypatch):
    first = tilemap.frontend_dir(tmp_path)
    changed = tmp_path / "src"
    changed.mkdir()
    for name in ("index.html", "tilemap.js"):
        (changed / name).write_text((tilemap.FRONTEND / name).read_text() + "\n// changed\n")
    monkeypatch.setattr(tilemap, "FRONTEND", changed)
    second = tilemap.frontend_dir(tmp_path)
    assert second != first and (second / "tilemap.js").read_text().endswith("// changed\n")


def test_clicks_name_a_tile_of_this_map_and_count():
    s = _scores(n_side=3)
    assert tilemap.clicked_tile({"tile": float(s.tile_id[4]), "clicks": 2}, s) == (int(s.tile_id[4]), 2)
    assert tilemap.clicked_tile({"tile": 10_000, "clicks": 1}, s) is None  # another map's tile
    assert tilemap.clicked_tile(None, s) is None
    assert tilemap.clicked_tile({"tile": "x"}, s) is None
    assert tilemap.clicked_tile({"clicks": 3}, s) is None


def test_nothing_is_served_outside_a_running_app():
    assert tilemap.served_file(b"\0" * 8, "application/octet-stream", ".bin", tilemap.GRID_FILE_COORDINATES) is None
