"""The interactive map: a pydeck Deck that works with the network closed.

Layers, bottom to top:

* ``scores``: the score raster (:mod:`psm_db.maps.raster`) as one BitmapLayer, whatever the
  number of tiles. deck.gl stretches a bitmap linearly in Web Mercator, so the lon/lat raster's
  rows are first resampled to equal Mercator steps (:func:`mercator_rows`);
* ``coast``: coastlines derived from the land mask the world uses (``psm_db/maps/coastlines.geojson``,
  written by ``scripts/make_coastlines.py``), clipped to the view;
* ``outlines``: the region (or region set) outlines;
* ``tiles``: one invisible (opacity 0), pickable polygon per tile (its footprint), carrying its
  id, probability, uncertainty and position: hovering shows them, and a click selects the tile
  (``st.pydeck_chart(on_select=...)`` reports the index into this layer's data). In a running
  app its rows are not in the Deck's JSON but a JSON file the Streamlit server serves beside it
  (:func:`served_tiles`): the browser parses the Deck's JSON with a JSON5 parser written in
  JavaScript, about 0.3 s per MB on these machines, while deck.gl loads a data URL with the
  browser's own ``JSON.parse``, and the bitmap is drawn before the rows arrive. The layer has
  no hover highlight: on software WebGL, redrawing 100k polygons per hover took seconds;
* ``chosen``: a ring around the chosen tile.

Once a selection exists, Streamlit's map component restyles every layer of the types it knows
(SolidPolygonLayer, PathLayer, ScatterplotLayer and others) that sets a colour accessor
(``getFillColor``, ``getColor``): the selected object is drawn opaque and every other one at
40 % opacity at most, recomputed for every object on every click. So the tile, coast and
outline layers set no colour accessor and take their look from the layer's ``opacity``, which
Streamlit leaves alone: a click changes nothing on the map but the ring.

No basemap provider is used (``map_provider=None``), so nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
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
TOOLTIP = {
    "html": "<b>tile {id}</b><br/>probability {p}<br/>uncertainty (sum σ²) {u}<br/>{s} to {n}°N, {w} to {e}°E",
    "style": {"backgroundColor": "#1f2430", "color": "white", "fontSize": "12px"},
}
TILE_LAYER = "tiles"
"""Id of the pickable tile layer: ``selection["indices"][TILE_LAYER]`` holds the clicked tile."""
TILE_FILE_COORDINATES = "psm.deckmap.tiles"
"""Where the served tile file is registered in the session's media files (one map per page: a new
map's file replaces the last one, which Streamlit then deletes)."""


class CompactDeck(pdk.Deck):  # type: ignore[misc]
    """A Deck whose JSON has no indentation: pydeck indents by two spaces, which more than doubles
    the size of a large tile layer (what Streamlit sends to the browser)."""

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


def tile_frame(scores: TileScores) -> pd.DataFrame:
    """The pickable tiles' data: id, footprint (which the tooltip shows as its place) and scores.

    Short names and rounded numbers: this is most of what the browser receives for a large map.
    """
    return pd.DataFrame({
        "id": scores.tile_id.astype(np.int64),
        "w": np.round(scores.xmin, 4), "s": np.round(scores.ymin, 4),
        "e": np.round(scores.xmax, 4), "n": np.round(scores.ymax, 4),
        "p": _significant(scores.probability), "u": _significant(scores.var_sum, 4),
    })


def tile_json(scores: TileScores) -> bytes:
    """The tile layer's rows (:func:`tile_frame`) as the JSON that :func:`served_tiles` serves."""
    return tile_frame(scores).to_json(orient="records").encode()


def served_tiles(body: bytes) -> str | None:
    """Serve the tile rows' JSON (:func:`tile_json`) from the running Streamlit server and return
    its URL; None outside a running app (then the rows go inline).

    The file lives in the session's media files, as an ``st.image`` does: it stays while a run
    draws it and is deleted once no run of the session does.
    """
    from streamlit import config, runtime

    if not runtime.exists():
        return None
    # the media store names large files by sampling their bytes; the digest makes the name cover all of them
    name = f"tiles-{hashlib.sha256(body).hexdigest()[:32]}.json"
    url = str(runtime.get_instance().media_file_mgr.add(body, "application/json", TILE_FILE_COORDINATES,
                                                        file_name=name))
    base = str(config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}{url}" if base and url.startswith("/") else url


def deck(
    scores: TileScores,
    raster: Raster,
    *,
    layer: str,
    vmin: float,
    vmax: float,
    outlines: Sequence[tuple[str, Any]] = (),
    chosen: int | None = None,
    height_px: int = 520,
    rows_json: bytes | None = None,
) -> pdk.Deck:
    """The interactive map of one layer (see the module docstring).

    Args:
        scores: Every tile of the map.
        raster: Their raster for ``layer`` (:func:`psm_db.maps.raster.rasterise_bounds`).
        layer: ``probability``, ``var_sum`` or ``distance``.
        vmin: Bottom of the colour scale.
        vmax: Top of the colour scale.
        outlines: (name, shapely geometry) pairs drawn as outlines.
        chosen: Index (into ``scores``) of the chosen tile, ringed.
        height_px: Chart height.
        rows_json: The tiles' :func:`tile_json`, when the caller keeps it cached (reruns of the
            same map then skip serialising it); built here when None.
    """
    url, bounds = raster_image(raster, vmin=vmin, vmax=vmax, layer=layer)
    w, s, e, n = bounds[0], bounds[1], bounds[2], bounds[3]
    tiles: pd.DataFrame | str | None = served_tiles(tile_json(scores) if rows_json is None else rows_json)
    if tiles is None:
        tiles = tile_frame(scores)
    layers = [
        # quoted: pydeck would otherwise read the data URL as an accessor expression
        pdk.Layer("BitmapLayer", id="scores", image=f"'{url}'", bounds=bounds, opacity=0.95,
                  texture_parameters={"minFilter": "nearest", "magFilter": "nearest"}),
        # No colour accessors on these three layers (see the module docstring): lines in deck.gl's
        # default black, toned by the layer's opacity
        pdk.Layer("PathLayer", id="coast", data=[{"path": p} for p in coastlines((w, s, e, n))],
                  get_path="path", opacity=0.5, width_min_pixels=1, width_units="'pixels'", get_width=1),
        pdk.Layer("PathLayer", id="outlines",
                  data=[{"path": r, "name": name} for name, g in outlines for r in _rings(g)],
                  get_path="path", opacity=0.9, width_min_pixels=1.5, width_units="'pixels'", get_width=1.5),
        # each tile's exact footprint, so hovering anywhere on a tile finds that tile; opacity 0: drawn
        # only into deck.gl's picking buffer's colours, never onto the map
        pdk.Layer("SolidPolygonLayer", id=TILE_LAYER, data=tiles, get_polygon="[[w, s], [e, s], [e, n], [w, n]]",
                  opacity=0, pickable=True),
    ]
    if chosen is not None:
        layers.append(pdk.Layer(
            "ScatterplotLayer", id="chosen",
            data=[{"lon": float(scores.lon[chosen]), "lat": float(scores.lat[chosen])}],
            get_position=["lon", "lat"], get_radius=9, radius_units="'pixels'", stroked=True, filled=False,
            get_line_color=[230, 30, 30], line_width_min_pixels=3))
    return CompactDeck(layers=layers, initial_view_state=view_state((w, s, e, n), height_px=height_px),
                       map_provider=None, map_style=None, tooltip=TOOLTIP)


def selection(state: Any) -> dict[str, Any]:
    """The ``selection`` of what a selectable chart or table returns, or of its widget state in
    ``st.session_state`` (a mapping); empty before the first event."""
    if isinstance(state, Mapping):
        return dict(state.get("selection") or {})
    return dict(getattr(state, "selection", None) or {})


def picked_tile(event: Any, scores: TileScores) -> int | None:
    """The tile id a click on the map chose, or None (``event``: as for :func:`selection`)."""
    indices = (selection(event).get("indices") or {}).get(TILE_LAYER) or []
    if not indices:
        return None
    i = int(indices[0])
    return int(scores.tile_id[i]) if 0 <= i < len(scores) else None


__all__ = ["TILE_LAYER", "coastlines", "deck", "mercator_rows", "picked_tile", "raster_image", "selection",
           "served_tiles", "tile_frame", "tile_json", "view_state"]
