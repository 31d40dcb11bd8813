"""The interactive map's Deck: Mercator rows, the view, the layers, offline JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shapely.geometry import box

from dashboard import deckmap
from psm_db.maps.raster import rasterise_bounds
from psm_db.maps.scores import TileScores


def _scores(n_side: int = 20, step: float = 0.5, south: float = 30.0) -> TileScores:
    xs, ys = np.meshgrid(np.arange(n_side), np.arange(n_side))
    x0, y0 = -100 + xs.ravel() * step, south + ys.ravel() * step
    n = n_side * n_side
    p = np.linspace(1e-9, 0.5, n)
    return TileScores(np.arange(n) + 7, x0 + step / 2, y0 + step / 2, x0, y0, x0 + step, y0 + step, p,
                      -np.log(p), np.full(n, 2.5))


def test_mercator_rows_put_each_latitude_where_web_mercator_draws_it():
    s = _scores(n_side=40, step=1.0, south=20.0)  # 20 to 60 N: Mercator stretches the north
    r = rasterise_bounds(s.xmin, s.ymin, s.xmax, s.ymax, s.lat)  # each cell holds its latitude
    rows, north, south = deckmap.mercator_rows(r.values, r.top, r.dy)
    assert (north, south) == (60.0, 20.0) and rows.shape == r.values.shape
    # the row at a given height of the bitmap holds the latitude deck.gl puts there
    y = deckmap._mercator_y(np.array([north, south]))
    for frac in (0.1, 0.5, 0.9):
        lat = np.degrees(2 * np.arctan(np.exp(y[0] + frac * (y[1] - y[0]))) - np.pi / 2)
        got = rows[int(frac * rows.shape[0]), 0]
        assert abs(got - lat) <= 1.0, (frac, got, lat)
    assert rows[0, 0] > 59 and rows[-1, 0] < 21


def test_view_fits_the_bounds():
    v = deckmap.view_state((-100.0, 30.0, -90.0, 40.0), width_px=900, height_px=520)
    assert v.longitude == pytest.approx(-95.0) and 34.0 < v.latitude < 35.5
    # at that zoom (deck.gl: 512 px for 360 degrees at zoom 0) the 10 degrees span at most 900 px
    assert 512 * 2 ** v.zoom * 10 / 360 <= 900
    assert deckmap.view_state((-180.0, -80.0, 180.0, 80.0)).zoom < 1.0


def test_the_deck_is_offline_compact_and_holds_no_layer_per_tile():
    s = _scores()
    r = rasterise_bounds(s.xmin, s.ymin, s.xmax, s.ymax, s.probability)
    deck = deckmap.deck(s, r, layer="probability", vmin=0.0, vmax=0.5, outlines=[("A", box(-100, 30, -95, 35))])
    text = deck.to_json()
    spec = json.loads(text)
    assert "http" not in text and spec.get("mapProvider") is None, "nothing may be fetched from the network"
    assert "\n" not in text, "no indentation"
    layers = {layer["id"]: layer for layer in spec["layers"]}
    assert set(layers) == {"scores", "coast", "outlines"}  # the page draws the chosen tile's ring
    assert layers["scores"]["image"].startswith("data:image/png;base64,")
    assert layers["scores"]["bounds"] == pytest.approx([-100.0, 30.0, -90.0, 40.0])
    # nothing is drawn for picking: the page finds the tile from the pointer's coordinate
    assert not [i for i, layer in layers.items() if layer.get("pickable")]
    assert all(len(layer.get("data") or []) < len(s) for layer in layers.values()), "no layer may hold every tile"
    assert [-100.0, 30.0] in layers["outlines"]["data"][0]["path"]


def test_coastlines_are_shipped_and_clipped_to_the_view():
    paths = deckmap.coastlines((-125.0, 30.0, -115.0, 40.0))  # California's coast
    pts = np.array([p for path in paths for p in path])
    assert len(paths) >= 1 and len(pts) > 20
    assert pts[:, 0].min() >= -127.0 and pts[:, 0].max() <= -113.0
    assert deckmap.coastlines((-45.0, 30.0, -40.0, 35.0), margin=0.0) == []  # open Atlantic
