"""The dashboard's map drawing: tile scores rasterised (psm_db.maps) and drawn as a PNG."""

from __future__ import annotations

import numpy as np

from psm_db.maps.raster import MAX_SIDE, Raster, rasterise_bounds
from psm_db.maps.render import render_png, shared_limits
from psm_db.maps.scores import LAYERS, TileScores


def rasterise(scores: TileScores, values: np.ndarray, max_side: int = MAX_SIDE) -> Raster:
    """Draw tile values onto a lon/lat raster where every tile covers its own cells.

    See :func:`psm_db.maps.raster.rasterise_bounds`: the cell is the narrowest tile, large regions
    are binned to ``max_side`` cells a side, and regions across the antimeridian are unwrapped.

    Raises:
        ValueError: If there are no tiles or the values do not match the tiles.
    """
    return rasterise_bounds(scores.xmin, scores.ymin, scores.xmax, scores.ymax, values, max_side)


__all__ = ["LAYERS", "MAX_SIDE", "Raster", "TileScores", "rasterise", "render_png", "shared_limits"]
