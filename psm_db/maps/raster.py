"""Tile scores onto a north-up lon/lat raster, with every tile covering its own cells.

The tile grid (:mod:`psm_db.tiles`) changes its column width with each latitude band, so no
single cell width fits every tile. The raster takes the narrowest tile of the region as its cell
width and the tile height as its cell height; a tile then paints every cell whose centre lies in
its footprint. Because the tiles of a band sit edge to edge, every cell centre inside a fully
embedded area lies in exactly one tile, and the raster has no holes there.

When a region would need more than ``max_side`` cells a side, cells grow by a common factor.
A cell then holds the mean of the tiles whose centres fall in it, or, where none does, the value
of the tile under its centre.

Regions that cross the antimeridian are unwrapped: tiles east of the widest gap in longitude are
shifted by 360 degrees, so the raster runs continuously past 180 E (GDAL and QGIS read such
EPSG:4326 extents).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_SIDE = 1600
"""Largest raster side in cells; bigger regions are binned."""

_EPS = 1e-9


@dataclass(frozen=True)
class Raster:
    """A north-up lon/lat raster: ``values[row, col]``, row 0 at ``top``; NaN where no tile.

    Attributes:
        values: Cell values.
        left: West edge (degrees; may exceed 180 for a region unwrapped across the antimeridian).
        top: North edge.
        dx: Cell width in degrees.
        dy: Cell height in degrees.
        index: For each cell, the position (in the input arrays) of the tile under its centre, or -1.
    """

    values: np.ndarray
    left: float
    top: float
    dx: float
    dy: float
    index: np.ndarray | None = None

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top), as matplotlib's imshow wants it."""
        h, w = self.values.shape
        return (self.left, self.left + w * self.dx, self.top - h * self.dy, self.top)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north), as rasterio wants it."""
        left, right, bottom, top = self.extent
        return (left, bottom, right, top)

    def cell(self, lon: float, lat: float) -> tuple[int, int] | None:
        """(row, col) of the cell holding (lon, lat), or None outside the raster."""
        h, w = self.values.shape
        x = float(lon)
        if x < self.left:
            x += 360.0  # a point west of an unwrapped raster's left edge may lie past 180 E
        col = math.floor((x - self.left) / self.dx)
        row = math.floor((self.top - float(lat)) / self.dy)
        if 0 <= row < h and 0 <= col < w:
            return row, col
        return None

    def tile_at(self, lon: float, lat: float) -> int | None:
        """Position of the tile drawn at (lon, lat), or None where no tile is drawn."""
        if self.index is None:
            return None
        rc = self.cell(lon, lat)
        if rc is None:
            return None
        i = int(self.index[rc])
        return i if i >= 0 else None


def unwrap_longitudes(west: np.ndarray, east: np.ndarray) -> np.ndarray:
    """The shift (0 or 360 per tile) that makes a set of tiles contiguous across the antimeridian.

    The widest stretch of longitude without a tile centre is found; when it is not the one that
    crosses 180 E, the tiles east of it move by +360 degrees.
    """
    centre = 0.5 * (np.asarray(west, dtype=np.float64) + np.asarray(east, dtype=np.float64))
    shift = np.zeros_like(centre)
    u = np.unique(centre)
    if u.size < 2:
        return shift
    gaps = np.diff(u)
    k = int(np.argmax(gaps))
    wrap_gap = u[0] + 360.0 - u[-1]
    if gaps[k] > wrap_gap:
        shift[centre <= u[k]] = 360.0
    return shift


def _check(west: np.ndarray, south: np.ndarray, east: np.ndarray, north: np.ndarray, values: np.ndarray) -> int:
    n = int(west.shape[0])
    if n == 0:
        raise ValueError("no tiles to draw")
    for name, arr in (("south", south), ("east", east), ("north", north)):
        if arr.shape != (n,):
            raise ValueError(f"tile bounds disagree: {n} west edges but {name} has shape {arr.shape}")
    if values.shape != (n,):
        raise ValueError(f"expected {n} values, got shape {values.shape}")
    if not all(np.isfinite(a).all() for a in (west, south, east, north)):
        raise ValueError("tile bounds must be finite numbers")
    if np.any(east <= west) or np.any(north <= south):
        raise ValueError("every tile needs east > west and north > south")
    return n


def rasterise_bounds(
    west: np.ndarray,
    south: np.ndarray,
    east: np.ndarray,
    north: np.ndarray,
    values: np.ndarray,
    max_side: int = MAX_SIDE,
) -> Raster:
    """Draw tile values (one per tile, NaN allowed) onto a raster (see the module docstring).

    Raises:
        ValueError: On no tiles, mismatched arrays, non-finite or empty tile bounds, or max_side < 1.
    """
    west, south, east, north = (np.asarray(a, dtype=np.float64) for a in (west, south, east, north))
    values = np.asarray(values, dtype=np.float64)
    n = _check(west, south, east, north, values)
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    shift = unwrap_longitudes(west, east)
    west, east = west + shift, east + shift
    dx = float((east - west).min())
    dy = float((north - south).min())
    left, right = float(west.min()), float(east.max())
    bottom, top = float(south.min()), float(north.max())
    width = max(1, math.ceil((right - left) / dx - 1e-6))
    height = max(1, math.ceil((top - bottom) / dy - 1e-6))
    scale = max(1.0, width / max_side, height / max_side)
    if scale > 1.0:
        dx, dy = dx * scale, dy * scale
        width = min(max_side, max(1, math.ceil((right - left) / dx - 1e-6)))
        height = min(max_side, max(1, math.ceil((top - bottom) / dy - 1e-6)))

    # Cells whose centre lies in a tile: columns [c0, c1), rows [r0, r1) (half-open footprints).
    c0 = np.clip(np.ceil((west - left) / dx - 0.5 - _EPS), 0, width).astype(np.int64)
    c1 = np.clip(np.ceil((east - left) / dx - 0.5 - _EPS), 0, width).astype(np.int64)
    r0 = np.clip(np.ceil((top - north) / dy - 0.5 - _EPS), 0, height).astype(np.int64)
    r1 = np.clip(np.ceil((top - south) / dy - 0.5 - _EPS), 0, height).astype(np.int64)
    ncol, nrow = np.maximum(c1 - c0, 0), np.maximum(r1 - r0, 0)
    count = ncol * nrow
    index = np.full(height * width, -1, dtype=np.int64)
    tile = np.repeat(np.arange(n), count)
    if tile.size:
        k = np.arange(tile.size) - np.repeat(np.cumsum(count) - count, count)
        rows = r0[tile] + k // ncol[tile]
        cols = c0[tile] + k % ncol[tile]
        index[rows * width + cols] = tile
    grid = np.where(index >= 0, values[np.maximum(index, 0)], np.nan)

    # Cells that hold tile centres take their mean (binned maps, or tiles smaller than a cell).
    cc = np.clip(((0.5 * (west + east) - left) / dx).astype(np.int64), 0, width - 1)
    rc = np.clip(((top - 0.5 * (south + north)) / dy).astype(np.int64), 0, height - 1)
    flat = rc * width + cc
    ok = np.isfinite(values)
    total = np.bincount(flat[ok], weights=values[ok], minlength=width * height)
    hits = np.bincount(flat[ok], minlength=width * height)
    held = hits > 0
    grid[held] = total[held] / hits[held]
    # a tile too small to cover any cell centre still answers a click on the cell holding its centre
    centre_index = np.full(height * width, -1, dtype=np.int64)
    centre_index[flat] = np.arange(n)
    index = np.where(index >= 0, index, centre_index)
    return Raster(grid.reshape(height, width), left, top, dx, dy, index.reshape(height, width))


__all__ = ["MAX_SIDE", "Raster", "rasterise_bounds", "unwrap_longitudes"]
