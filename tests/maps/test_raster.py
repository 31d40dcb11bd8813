"""The map rasteriser on real grid tiles: no holes far north or across the antimeridian."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, box

from psm_db.maps.raster import rasterise_bounds, unwrap_longitudes
from psm_db.tiles import GridSpec, grid_tiles

SPEC = GridSpec("synthetic", 100.0, 48, 5)  # 24 km tiles


def _tiles(region):
    ts = grid_tiles(region, SPEC)
    return ts, [np.asarray(a) for a in ts.bounds()]


def _cell_centres(r):
    h, w = r.values.shape
    lon = r.left + (np.arange(w) + 0.5) * r.dx
    lat = r.top - (np.arange(h) + 0.5) * r.dy
    return np.meshgrid(lon, lat)


def _inside(region, lon, lat):
    return shapely.contains_xy(region, lon, lat)


def test_far_north_region_has_no_empty_cell_inside_and_every_tile_shows():
    region = box(-30.0, 66.0, -10.0, 74.0)  # bands from 66 to 74 N: tile widths in degrees differ by 40 %
    ts, (w, s, e, n) = _tiles(region)
    widths = np.unique(np.round(e - w, 9))
    assert widths.size > 5  # the grid really changes its column width from band to band
    values = np.arange(len(ts), dtype=np.float64)
    r = rasterise_bounds(w, s, e, n, values)
    lon, lat = _cell_centres(r)
    inside = _inside(shapely.union_all(shapely.box(w, s, e, n)), lon, lat)
    assert inside.sum() > 1000
    assert np.isfinite(r.values[inside]).all(), "an empty cell inside the embedded area"
    assert set(np.unique(r.index[r.index >= 0])) == set(range(len(ts))), "a tile with no cell of its own"
    # each cell shows the tile under its centre
    rows, cols = np.nonzero(inside)
    pick = np.random.default_rng(0).choice(rows.size, 200, replace=False)
    for i in pick:
        t = int(r.index[rows[i], cols[i]])
        x, y = lon[rows[i], cols[i]], lat[rows[i], cols[i]]
        assert w[t] - 1e-9 <= x <= e[t] + 1e-9 and s[t] - 1e-9 <= y <= n[t] + 1e-9
        assert r.values[rows[i], cols[i]] == values[t]


def test_a_region_across_the_antimeridian_is_drawn_as_one_narrow_raster():
    region = MultiPolygon([box(176.0, -20.0, 180.0, -14.0), box(-180.0, -20.0, -176.0, -14.0)])
    ts, (w, s, e, n) = _tiles(region)
    assert (w < 0).any() and (e > 0).any()
    r = rasterise_bounds(w, s, e, n, np.ones(len(ts)))
    left, right, bottom, top = r.extent
    assert 175.0 < left < 176.5 and 183.5 < right < 185.0, "unwrapped past 180 E, not spread over the globe"
    lon, lat = _cell_centres(r)
    shifted = shapely.box(w + unwrap_longitudes(w, e), s, e + unwrap_longitudes(w, e), n)
    inside = _inside(shapely.union_all(shifted), lon, lat)
    assert inside.sum() > 100 and np.isfinite(r.values[inside]).all()
    # a click west of 180 and one east of it (as -179) both find their tiles
    for x in (178.0, -178.0):
        t = r.tile_at(x, -17.0)
        assert t is not None and w[t] <= x <= e[t]


def test_binned_large_region_keeps_its_mean_and_has_no_holes():
    region = box(-100.0, 30.0, -80.0, 50.0)
    ts, (w, s, e, n) = _tiles(region)
    values = np.random.default_rng(1).random(len(ts))
    r = rasterise_bounds(w, s, e, n, values, max_side=50)
    assert max(r.values.shape) <= 50
    lon, lat = _cell_centres(r)
    inside = _inside(shapely.union_all(shapely.box(w, s, e, n)), lon, lat)
    assert np.isfinite(r.values[inside]).all()
    assert np.nanmean(r.values) == pytest.approx(values.mean(), abs=0.02)


def test_missing_tiles_stay_empty_and_nan_values_draw_nothing():
    region = box(10.0, 40.0, 14.0, 42.0)
    ts, (w, s, e, n) = _tiles(region)
    keep = np.arange(len(ts)) % 3 != 0
    values = np.where(np.arange(len(ts)) % 7 == 0, np.nan, 1.0)
    r = rasterise_bounds(w[keep], s[keep], e[keep], n[keep], values[keep])
    for t in np.flatnonzero(~keep)[:20]:  # the centre of a tile that is not there is empty
        rc = r.cell(0.5 * (w[t] + e[t]), 0.5 * (s[t] + n[t]))
        assert rc is None or np.isnan(r.values[rc])
    assert np.nanmin(r.values) == 1.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no tiles"):
        rasterise_bounds(np.array([]), np.array([]), np.array([]), np.array([]), np.array([]))
    one = np.array([0.0])
    with pytest.raises(ValueError, match="expected 1 values"):
        rasterise_bounds(one, one, one + 1, one + 1, np.zeros(2))
    with pytest.raises(ValueError, match="east > west"):
        rasterise_bounds(one, one, one, one + 1, np.zeros(1))
    with pytest.raises(ValueError, match="finite"):
        rasterise_bounds(one * np.nan, one, one + 1, one + 1, np.zeros(1))
