"""The global tile grid (side = gsd * size_px * zoom metres) and idempotent tile upserts.

The grid is defined on the sphere so that a tile key ``(imagery_source, gsd, size_px, zoom,
grid_row, grid_col)`` means the same footprint in every region and every job:

* rows are latitude bands of ``side`` metres, counted from the south pole;
* each band is split into ``n_cols`` equal longitude steps, ``n_cols`` chosen so that a
  tile is ``side`` metres wide at the band's centre latitude (and at least one column).

Tiles are thus close to square in metres everywhere, and two regions that overlap share
their tiles (and so their stored features and embeddings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import (
    Column,
    Double,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.schema import CreateTable

from psm_db.engine import Db, driver_connection
from psm_db.models import Tile, table_of
from psm_db.pgbinary import copy_bytes, copy_payload

EARTH_RADIUS_M = 6_371_008.8
"""Mean Earth radius (IUGG), used to turn metres into degrees on the grid's sphere."""
METRES_PER_DEGREE = EARTH_RADIUS_M * math.pi / 180.0


@dataclass(frozen=True)
class GridSpec:
    """One tile grid: an imagery source at a GSD, a tile size in pixels and a zoom level."""

    imagery_source: str
    gsd: float
    size_px: int
    zoom: int

    def __post_init__(self) -> None:
        if not (isinstance(self.gsd, int | float) and math.isfinite(self.gsd) and self.gsd > 0):
            raise ValueError(f"gsd must be a positive number of metres per pixel, got {self.gsd!r}")
        if int(self.size_px) != self.size_px or self.size_px < 1:
            raise ValueError(f"size_px must be a positive integer, got {self.size_px!r}")
        if int(self.zoom) != self.zoom or self.zoom < 1:
            raise ValueError(f"zoom must be an integer >= 1, got {self.zoom!r}")
        if not self.imagery_source:
            raise ValueError("imagery_source must be a non-empty name")

    @property
    def side_m(self) -> float:
        """Tile side in metres: gsd * size_px * zoom."""
        return float(self.gsd) * int(self.size_px) * int(self.zoom)

    @property
    def dlat(self) -> float:
        """Tile height in degrees of latitude."""
        return self.side_m / METRES_PER_DEGREE

    @property
    def n_rows(self) -> int:
        """Latitude bands from pole to pole."""
        return max(1, math.ceil(180.0 / self.dlat))

    def n_cols(self, rows: np.ndarray) -> np.ndarray:
        """Columns in each latitude band ``rows``."""
        lat_c = -90.0 + (np.asarray(rows, dtype=np.float64) + 0.5) * self.dlat
        lat_c = np.clip(lat_c, -89.999999, 89.999999)
        width_deg = self.dlat / np.cos(np.radians(lat_c))
        return np.maximum(1, np.floor(360.0 / width_deg)).astype(np.int64)

    def bounds(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
        """(west, south, east, north) in degrees of the tiles (rows, cols)."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        dlon = 360.0 / self.n_cols(rows)
        south = -90.0 + rows * self.dlat
        north = np.minimum(90.0, south + self.dlat)
        west = -180.0 + cols * dlon
        east = west + dlon
        return west, south, east, north


@dataclass(frozen=True)
class TileSet:
    """Grid cells of one GridSpec, in a fixed (row, col) order."""

    spec: GridSpec
    rows: np.ndarray
    cols: np.ndarray

    def __len__(self) -> int:
        return int(len(self.rows))

    def slice(self, start: int, stop: int) -> TileSet:
        """The tiles ``start:stop`` of this set."""
        return TileSet(self.spec, self.rows[start:stop], self.cols[start:stop])

    def bounds(self) -> tuple[np.ndarray, ...]:
        """(west, south, east, north) arrays."""
        return self.spec.bounds(self.rows, self.cols)

    def centroids(self) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lon) of the tile centres, degrees."""
        w, s, e, n = self.bounds()
        return (s + n) / 2.0, (w + e) / 2.0


def _row_range(spec: GridSpec, south: float, north: float) -> np.ndarray:
    r0 = max(0, math.floor((south + 90.0) / spec.dlat))
    r1 = min(spec.n_rows - 1, math.floor((north + 90.0) / spec.dlat - 1e-12))
    return np.arange(r0, max(r0, r1) + 1, dtype=np.int64)


def bbox_tile_count(region: BaseGeometry, spec: GridSpec) -> int:
    """Grid cells in the region's bounding box: an upper bound, computed without geometry."""
    w, s, e, n = region.bounds
    rows = _row_range(spec, s, n)
    ncols = spec.n_cols(rows)
    dlon = 360.0 / ncols
    c0 = np.floor((w + 180.0) / dlon)
    c1 = np.floor((e + 180.0) / dlon - 1e-12)
    return int(np.maximum(0, c1 - c0 + 1).sum())


def count_tiles(region: BaseGeometry, spec: GridSpec, limit: int | None = None) -> int:
    """Count grid cells intersecting ``region`` (cheap upper bound first, exact when small).

    Raises:
        ValueError: when ``limit`` is given and the count exceeds it (the error says by how much).
    """
    upper = bbox_tile_count(region, spec)
    if limit is not None and upper > 4 * limit:
        raise ValueError(
            f"the region covers about {upper:,} tiles at zoom {spec.zoom} (its bounding box), more "
            f"than the limit of {limit:,}; use a smaller region, a higher zoom, or raise "
            "PSM_MAX_REGION_TILES"
        )
    count = len(grid_tiles(region, spec))
    if limit is not None and count > limit:
        raise ValueError(
            f"the region covers {count:,} tiles at zoom {spec.zoom}, more than the limit of "
            f"{limit:,}; use a smaller region, a higher zoom, or raise PSM_MAX_REGION_TILES"
        )
    return count


def grid_tiles(region: BaseGeometry, spec: GridSpec) -> TileSet:
    """Every grid cell of ``spec`` whose footprint intersects ``region`` (lon/lat degrees).

    The order is deterministic (row, then column), so a chunk index always means the same
    tiles.
    """
    w, s, e, n = region.bounds
    rows_all = _row_range(spec, s, n)
    ncols = spec.n_cols(rows_all)
    dlon = 360.0 / ncols
    c0 = np.maximum(0, np.floor((w + 180.0) / dlon)).astype(np.int64)
    c1 = np.minimum(ncols - 1, np.floor((e + 180.0) / dlon - 1e-12)).astype(np.int64)
    counts = np.maximum(0, c1 - c0 + 1)
    rows = np.repeat(rows_all, counts)
    starts = np.repeat(c0, counts)
    offsets = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = starts + offsets
    if len(rows) == 0:
        return TileSet(spec, rows, cols)
    bw, bs, be, bn = spec.bounds(rows, cols)
    boxes = shapely.box(bw, bs, be, bn)
    shapely.prepare(region)
    keep = shapely.intersects(region, boxes)
    # A tile that only touches the region's boundary (an edge or a corner) is not part of it.
    idx = np.flatnonzero(keep)
    keep[idx[shapely.touches(region, boxes[idx])]] = False
    return TileSet(spec, rows[keep], cols[keep])


def _tile_rows_payload(tiles: TileSet) -> bytes:
    """COPY BINARY rows (grid_row int4, grid_col int4, west, south, east, north float8) of ``tiles``."""
    w, s, e, n = tiles.bounds()
    return copy_payload([("int4", tiles.rows), ("int4", tiles.cols), ("float8", w), ("float8", s),
                         ("float8", e), ("float8", n)], len(tiles))


_STAGE = Table(
    "psm_stage_tiles", MetaData(),
    Column("grid_row", Integer), Column("grid_col", Integer),
    Column("west", Double), Column("south", Double), Column("east", Double), Column("north", Double),
    prefixes=["TEMPORARY"], postgresql_on_commit="DELETE ROWS",
)
"""The session's staging table of :func:`upsert_tiles` (filled by binary COPY, emptied at commit)."""


def upsert_tiles(db: Db, tiles: TileSet) -> np.ndarray:
    """Insert the tiles that are missing and return the ids of all of them, in ``tiles`` order.

    Concurrent callers with overlapping tiles are safe: keys are inserted in sorted order
    (no deadlock between two jobs) with ``ON CONFLICT DO NOTHING``. Runs in the caller's
    transaction (a SQLAlchemy connection or session; the COPY runs on its psycopg connection).
    """
    if len(tiles) == 0:
        return np.empty(0, dtype=np.int64)
    spec = tiles.spec
    db.execute(CreateTable(_STAGE, if_not_exists=True))
    pg = driver_connection(db)
    pg.execute("TRUNCATE psm_stage_tiles")
    copy_bytes(pg, "COPY psm_stage_tiles FROM STDIN (FORMAT BINARY)", _tile_rows_payload(tiles))
    tiles_t = table_of(Tile)
    t, s = tiles_t.c, _STAGE.c
    key = (literal(spec.imagery_source, Text), literal(float(spec.gsd), Double),
           literal(int(spec.size_px), Integer), literal(int(spec.zoom), SmallInteger))
    rows = select(
        *key, s.grid_row, s.grid_col, func.ST_MakeEnvelope(s.west, s.south, s.east, s.north, 4326),
        func.ST_SetSRID(func.ST_MakePoint((s.west + s.east) / 2, (s.south + s.north) / 2), 4326),
    ).order_by(s.grid_row, s.grid_col)
    db.execute(pg_insert(tiles_t).from_select(
        ["imagery_source", "gsd", "size_px", "zoom", "grid_row", "grid_col", "geom", "centroid"], rows,
    ).on_conflict_do_nothing(constraint="tiles_grid_key"))
    found = db.execute(select(s.grid_row, s.grid_col, t.id).join_from(_STAGE, tiles_t, (
        (t.imagery_source == key[0]) & (t.gsd == key[1]) & (t.size_px == key[2]) & (t.zoom == key[3])
        & (t.grid_row == s.grid_row) & (t.grid_col == s.grid_col)
    ))).all()
    ids = {(r, c): i for r, c, i in found}
    out = np.fromiter((ids[(int(r), int(c))] for r, c in zip(tiles.rows, tiles.cols, strict=True)),
                      dtype=np.int64, count=len(tiles))
    pg.execute("TRUNCATE psm_stage_tiles")
    return out
