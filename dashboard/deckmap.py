"""The interactive map's Deck: pydeck layers that work with the network closed.

Layers, bottom to top:

* ``scores``: the score raster (:mod:`psm_db.maps.raster`) as one BitmapLayer, whatever the
  number of tiles. deck.gl stretches a bitmap linearly in Web Mercator, so the lon/lat raster's
  rows are first resampled to equal Mercator steps (:func:`mercator_rows`). No layer is
  pickable: the page finds the tile under the pointer from the pointer's coordinate and the
  raster's cell-to-tile index (:mod:`dashboard.tilemap`), so nothing is drawn for picking and no
  layer holds one polygon per tile (on software WebGL, 100k polygons drawn for picking took
  seconds per frame);
* ``coast``: coastlines derived from the land mask the world uses (``psm_db/maps/coastlines.geojson``,
  written by ``scripts/make_coastlines.py``), clipped to the view;
* ``outlines``: the region (or region set) outlines.

The chosen tile's ring is drawn by the page (:mod:`dashboard.tilemap`), which rings a clicked
tile at once.

No basemap provider is used (``map_provider=None``), so nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydeck as pdk
import shapely
from matplotlib import colormaps
from matplotlib.colors import Normalize
from PIL import Image

import psm_db.maps
from psm_db.maps.raster import Raster
from psm_db.maps.scores import LAYERS, TileScores

COASTLINES = Path(psm_db.maps.__file__).resolve().parent / "coastlines.geojson"
MAX_LAT = 85.05112878
"""Web Mercator's latitude limit."""


class CompactDeck(pdk.Deck):  # type: ignore[misc]
    """A Deck whose JSON has no indentation: pydeck indents by two spaces, which more than doubles
    the size of what the page receives."""

    def to_json(self) -> str:
        from pydeck.bindings.json_tools import default_serialize

        return json.dumps(self, default=default_serialize, separators=(",", ":"))


def _significant(x: np.ndarray, digits: int = 3) -> list[float]:
    """Values rounded to ``digits`` significant digits (tiny probabilities stay readable)."""
    return [float(f"{v:.{digits}g}") for v in np.asarray(x, dtype=np.float64)]


def _mercator_y(lat: np.ndarray | float) -> np.ndarray:
    phi = np.radians(np.clip(lat, -MAX_LAT, MAX_LAT))
    return np.log(np.tan(np.pi / 4 + phi / 2))


def mercator_rows(values: np.ndarray, top: float, dy: float) -> tuple[np.ndarray, float, float]:
    """Resample a north-up lon/lat grid's rows to equal Web Mercator steps (nearest row).

    Returns:
        (resampled grid with as many rows, its north latitude, its south latitude), clipped to
        Web Mercator's latitude range.
    """
    h = values.shape[0]
    north = min(top, MAX_LAT)
    south = max(top - h * dy, -MAX_LAT)
    y0, y1 = _mercator_y(north), _mercator_y(south)
    yc = y0 + (np.arange(h) + 0.5) * (y1 - y0) / h
    lat = np.degrees(2 * np.arctan(np.exp(yc)) - np.pi / 2)
    src = np.clip(np.floor((top - lat) / dy).astype(np.int64), 0, h - 1)
    return values[src], north, south


def raster_image(raster: Raster, *, vmin: float, vmax: float, layer: str = "probability") -> tuple[str, list[float]]:
    """The raster coloured by the layer's colour map as a PNG data URL, and its bounds for deck.gl.

    Cells without a tile are transparent.
    """
    values, north, south = mercator_rows(raster.values, raster.top, raster.dy)
    norm = Normalize(vmin=vmin, vmax=vmax, clip=True)
    rgba = colormaps[LAYERS[layer][1]](norm(np.nan_to_num(values, nan=vmin)), bytes=True)
    rgba[~np.isfinite(values), 3] = 0
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", compress_level=1)
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    left, right, _, _ = raster.extent
    return url, [left, south, right, north]


@functools.lru_cache(maxsize=1)
def _coast() -> Any:
    data = json.loads(COASTLINES.read_text())
    return shapely.geometry.shape(data["geometry"])


def coastlines(bounds: Sequence[float], margin: float = 2.0) -> list[list[list[float]]]:
    """Coastline paths inside ``bounds`` (west, south, east, north) widened by ``margin`` degrees."""
    w, s, e, n = bounds
    clipped = shapely.clip_by_rect(_coast(), w - margin, s - margin, e + margin, n + margin)
    parts = getattr(clipped, "geoms", [clipped])
    return [np.asarray(g.coords).round(4).tolist() for g in parts if not g.is_empty and len(g.coords) > 1]


def _rings(geom: Any) -> list[list[list[float]]]:
    out = []
    for poly in getattr(geom, "geoms", [geom]):
        if hasattr(poly, "exterior"):
            out.append(np.asarray(poly.exterior.coords).round(5).tolist())
            out.extend(np.asarray(r.coords).round(5).tolist() for r in poly.interiors)
    return out


def view_state(bounds: Sequence[float], width_px: int = 900, height_px: int = 520) -> pdk.ViewState:
    """A view that fits ``bounds`` (west, south, east, north) in a chart of the given size."""
    w, s, e, n = bounds
    lon_span = max(e - w, 1e-6)
    y_span = max(float(_mercator_y(n) - _mercator_y(s)), 1e-9)
    zoom_x = math.log2(width_px * 360.0 / (512.0 * lon_span))  # deck.gl: a 512-pixel world at zoom 0
    zoom_y = math.log2(height_px * 2 * math.pi / (512.0 * y_span))
    zoom = max(0.0, min(zoom_x, zoom_y) - 0.15)
    mid_y = (_mercator_y(n) + _mercator_y(s)) / 2
    lat = float(np.degrees(2 * np.arctan(np.exp(mid_y)) - np.pi / 2))
    return pdk.ViewState(longitude=(w + e) / 2, latitude=lat, zoom=round(zoom, 2), min_zoom=0, max_zoom=16)


def deck(
    scores: TileScores,
    raster: Raster,
    *,
    layer: str,
    vmin: float,
    vmax: float,
    outlines: Sequence[tuple[str, Any]] = (),
    height_px: int = 520,
) -> pdk.Deck:
    """The interactive map of one layer (see the module docstring).

    Args:
        scores: Every tile of the map.
        raster: Their raster for ``layer`` (:func:`psm_db.maps.raster.rasterise_bounds`).
        layer: ``probability``, ``var_sum`` or ``distance``.
        vmin: Bottom of the colour scale.
        vmax: Top of the colour scale.
        outlines: (name, shapely geometry) pairs drawn as outlines.
        height_px: Chart height.
    """
    url, bounds = raster_image(raster, vmin=vmin, vmax=vmax, layer=layer)
    w, s, e, n = bounds[0], bounds[1], bounds[2], bounds[3]
    layers = _layers(url, bounds, coastlines((w, s, e, n)), [(name, r) for name, g in outlines for r in _rings(g)])
    return CompactDeck(layers=layers, initial_view_state=view_state((w, s, e, n), height_px=height_px),
                       map_provider=None, map_style=None)


def _layers(image_url: str, bounds: Sequence[float], coast: list[list[list[float]]],
            rings: list[tuple[str, list[list[float]]]], line_color: Sequence[int] = (0, 0, 0, 255)) -> list[pdk.Layer]:
    """The map's layers, bottom to top (see the module docstring); lines in ``line_color``, toned by
    each layer's opacity (deck.gl's default black)."""
    return [
        # quoted: pydeck would otherwise read the data URL as an accessor expression
        pdk.Layer("BitmapLayer", id="scores", image=f"'{image_url}'", bounds=list(bounds), opacity=0.95,
                  texture_parameters={"minFilter": "nearest", "magFilter": "nearest"}),
        pdk.Layer("PathLayer", id="coast", data=[{"path": p} for p in coast], get_path="path", opacity=0.5,
                  get_color=list(line_color), width_min_pixels=1, width_units="'pixels'", get_width=1),
        pdk.Layer("PathLayer", id="outlines", data=[{"path": r, "name": name} for name, r in rings], get_path="path", opacity=0.9,
                  get_color=list(line_color), width_min_pixels=1.5, width_units="'pixels'", get_width=1.5),
    ]


@functools.lru_cache(maxsize=1)
def warmup_json() -> str:
    """The Deck's JSON of a map that shows nothing, with the layers of :func:`deck`.

    A transparent 2 x 2 image and a transparent path one pixel long. The map's frame draws it
    before the first map (:mod:`dashboard.tilemap`): software WebGL spent about a second on the
    first frame of these layer types, and the real map's first frame is then a redraw.
    """
    buf = io.BytesIO()
    Image.new("RGBA", (2, 2), (0, 0, 0, 0)).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    dot = [[0.0, 0.0], [0.001, 0.0]]
    layers = _layers(url, [-1.0, -1.0, 1.0, 1.0], [dot], [("", dot)], line_color=(0, 0, 0, 0))
    return str(CompactDeck(layers=layers, initial_view_state=pdk.ViewState(longitude=0, latitude=0, zoom=1),
                           map_provider=None, map_style=None).to_json())


def selection(state: Any) -> dict[str, Any]:
    """The ``selection`` of what a selectable chart or table returns, or of its widget state in
    ``st.session_state`` (a mapping); empty before the first event."""
    if isinstance(state, Mapping):
        return dict(state.get("selection") or {})
    return dict(getattr(state, "selection", None) or {})


__all__ = ["CompactDeck", "coastlines", "deck", "mercator_rows", "raster_image", "selection", "view_state"]
