"""The interactive map as a Streamlit component of our own: deck.gl in a frame, tiles found through the grid.

``st.pydeck_chart`` reports a click only as the index of a picked object, so every tile had to be
a pickable polygon: 100k polygons that software WebGL drew for picking on every frame, seconds on
a CPU-only machine. This component draws the same Deck (:func:`dashboard.deckmap.deck`: the score
bitmap, coastlines, outlines) with deck.gl's standalone bundle, the one
that pydeck ships for offline HTML, and finds the tile under the pointer from its coordinate and
the score raster's cell-to-tile index (:func:`grid_bytes`, served as a binary file beside the
page). Hover shows the tile's tooltip in the page itself; a click rings the tile in the page at
once and returns ``{"tile": id, "clicks": n}`` to the script (the count makes a second click on
the same tile a new value), whose run then names the same tile as the chosen one.

Nothing is fetched from outside the Streamlit server: the page, its script and the bundle are
served from :func:`frontend_dir`, the grid from the session's media files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pydeck

from psm_db.maps.raster import Raster
from psm_db.maps.scores import TileScores

FRONTEND = Path(__file__).resolve().parent / "frontend"
"""The component's own page and script."""
BUNDLE = Path(pydeck.__file__).resolve().parent / "nbextension" / "static" / "index.js"
"""deck.gl's standalone bundle as pydeck ships it (``createDeck``, ``updateDeck``)."""
GRID_FILE_COORDINATES = "psm.tilemap.grid"
"""Where the served grid file is registered in the session's media files (one map per page)."""
HEADER_FLOATS = 8


def frontend_dir(root: Path | None = None) -> Path:
    """A folder holding the component's page, its script and deck.gl's bundle.

    Streamlit serves a component only from inside its folder, and the bundle belongs to the
    installed pydeck, so the three are copied together into a folder named by their digest
    (under the system's temporary folder unless ``root`` is given). An existing folder of the
    same digest is reused; a new one is written under a temporary name and renamed into place.

    Raises:
        FileNotFoundError: When the installed pydeck has no offline bundle.
    """
    if not BUNDLE.is_file():
        raise FileNotFoundError(f"pydeck's offline deck.gl bundle is missing ({BUNDLE}); reinstall pydeck")
    sources = {"index.html": FRONTEND / "index.html", "tilemap.js": FRONTEND / "tilemap.js", "deck.js": BUNDLE}
    digest = hashlib.sha256()
    for name, path in sources.items():
        digest.update(name.encode() + b"\0" + path.read_bytes())
    base = Path(root) if root is not None else Path(tempfile.gettempdir())
    out = base / f"psm-tilemap-{digest.hexdigest()[:16]}"
    if all((out / name).is_file() for name in sources):
        return out
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=base))
    try:
        for name, path in sources.items():
            shutil.copyfile(path, tmp / name)
        os.chmod(tmp, 0o755)
        try:
            os.replace(tmp, out)
        except OSError:
            if not all((out / name).is_file() for name in sources):  # not another process's copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def grid_bytes(scores: TileScores, raster: Raster) -> bytes:
    """The grid file the page reads (its layout is documented in ``frontend/tilemap.js``).

    Args:
        scores: Every tile of the map.
        raster: Their raster (:func:`psm_db.maps.raster.rasterise_bounds`), with its cell index.

    Raises:
        ValueError: When the raster has no cell index or its index names tiles ``scores`` lacks.
    """
    if raster.index is None:
        raise ValueError("the raster has no cell-to-tile index; build it with psm_db.maps.raster.rasterise_bounds")
    n = len(scores)
    index = np.asarray(raster.index)
    if index.size and int(index.max()) >= n:
        raise ValueError(f"the raster's index names tile {int(index.max())} of a map of {n} tiles")
    rows, cols = index.shape
    head = np.array([rows, cols, n, raster.left, raster.top, raster.dx, raster.dy, 0.0], dtype="<f8")
    parts = [head, np.asarray(scores.tile_id, dtype="<f8")]
    for column in (scores.probability, scores.var_sum, scores.xmin, scores.ymin, scores.xmax, scores.ymax):
        parts.append(np.asarray(column, dtype="<f4"))
    parts.append(index.astype("<i4"))
    return b"".join(p.tobytes() for p in parts)


def served_file(body: bytes, mimetype: str, suffix: str, coordinates: str) -> str | None:
    """Serve ``body`` from the running Streamlit server and return its URL; None outside a running app.

    The file lives in the session's media files, as an ``st.image`` does: it stays while a run
    draws it and is deleted once no run of the session does.
    """
    from streamlit import config, runtime

    if not runtime.exists():
        return None
    # the media store names large files by sampling their bytes; the digest makes the name cover all of them
    name = f"{hashlib.sha256(body).hexdigest()[:32]}{suffix}"
    url = str(runtime.get_instance().media_file_mgr.add(body, mimetype, coordinates, file_name=name))
    base = str(config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}{url}" if base and url.startswith("/") else url


_component: Any = None


def _declared() -> Any:
    global _component
    if _component is None:
        import streamlit.components.v1 as components

        _component = components.declare_component("psm_tilemap", path=str(frontend_dir()))
    return _component


def tilemap(deck_json: str | None, grid: bytes | None, *, chosen: tuple[int, float, float] | None = None,
            height: int = 520, note: str = "", warmup: str | None = None, key: str = "deck_map") -> Any:
    """Draw the map and return the last click's ``{"tile": id, "clicks": n}`` (None before one).

    Args:
        deck_json: The Deck's JSON (:func:`dashboard.deckmap.deck`, ``.to_json()``); None for a
            frame with no map yet, which loads deck.gl's bundle meanwhile (``height=0`` hides it).
        grid: :func:`grid_bytes` of the same map (None with no map).
        chosen: (tile id, lon, lat) of the tile to ring, or None. The page rings a clicked tile
            itself at once; a run that names the same tile leaves the map as it is.
        height: Frame height in pixels.
        note: A line shown in a frame with no map.
        warmup: With no map, the JSON of a Deck that shows nothing but has the map's layers
            (:func:`dashboard.deckmap.warmup_json`): the page draws it once, so that the first
            map's first frame is a redraw.
        key: Widget key; ``st.session_state[key]`` then holds the last click too.
    """
    url = None if grid is None else served_file(grid, "application/octet-stream", ".bin", GRID_FILE_COORDINATES)
    ring = None if chosen is None else {"tile": int(chosen[0]), "lon": float(chosen[1]), "lat": float(chosen[2])}
    return _declared()(deck=deck_json, grid_url=url, chosen=ring, height=int(height), note=str(note),
                       warmup=None if deck_json is not None else warmup, key=key, default=None)


def clicked_tile(value: Any, scores: TileScores) -> tuple[int, int] | None:
    """(tile id, click count) of a click the component returned, when that tile is on this map."""
    if not isinstance(value, dict) or "tile" not in value:
        return None
    try:
        tile, clicks = int(value["tile"]), int(value.get("clicks") or 0)
    except (TypeError, ValueError):
        return None
    return (tile, clicks) if bool(np.any(scores.tile_id == tile)) else None


__all__ = ["BUNDLE", "FRONTEND", "clicked_tile", "frontend_dir", "grid_bytes", "served_file", "tilemap"]
