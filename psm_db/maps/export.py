"""Map files a GIS reads: a Cloud-Optimized GeoTIFF, vector tiles with scores, GeoParquet, a PNG.

:func:`write_map` picks the format from the file's suffix:

* ``.tif`` / ``.tiff``: a Cloud-Optimized GeoTIFF in EPSG:4326, tiled 256 x 256 with overviews,
  float32 with NaN as nodata; band 1 is the match probability, band 2 the uncertainty (sum of
  sigma^2);
* ``.geojson``, ``.gpkg``, ``.fgb``: one polygon feature per tile (written by pyogrio),
  with ``tile_id``, ``lon``, ``lat``, ``probability``, ``var_sum`` and ``distance``;
* ``.parquet``: GeoParquet 1.1 (WKB geometry, the ``geo`` metadata with its CRS and bbox);
* ``.png``: the picture of one layer with its colour bar.

A file is written beside its final path and moved into place, so a failed export leaves nothing
half-written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from affine import Affine

from psm_db.maps.raster import MAX_SIDE, Raster, rasterise_bounds
from psm_db.maps.render import render_png, shared_limits
from psm_db.maps.scores import LAYERS, TileScores
from psm_model.files import atomic_write

VECTOR_DRIVERS = {".geojson": "GeoJSON", ".gpkg": "GPKG", ".fgb": "FlatGeobuf"}
RASTER_SUFFIXES = (".tif", ".tiff")
FORMATS = (*RASTER_SUFFIXES, *VECTOR_DRIVERS, ".parquet", ".png")
"""File suffixes :func:`write_map` knows."""

COG_BLOCK = 256
BANDS = ("probability", "var_sum")
BAND_DESCRIPTIONS = {"probability": "match probability", "var_sum": "uncertainty: sum of sigma^2"}

# GeoParquet's "crs" member is PROJJSON; pyproj writes it for EPSG:4326 once.
_WGS84_PROJJSON: dict[str, Any] | None = None


def map_format(path: str | os.PathLike) -> str:
    """The export format of ``path`` by its suffix (``tif``, ``geojson``, ``parquet``, ...).

    Raises:
        ValueError: On a suffix no writer handles, naming the ones that are.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot write a map to {str(path)!r}: the file suffix must be one of {', '.join(FORMATS)}")
    return "tif" if suffix in RASTER_SUFFIXES else suffix[1:]


def _atomic(path: Path, write: Callable[[Path], object]) -> Path:
    with atomic_write(path, suffix=path.suffix) as tmp:  # the suffix picks the GDAL driver
        try:
            write(tmp)
        finally:
            for leftover in tmp.parent.glob(f"{tmp.stem}*"):  # any GDAL sidecar of the temporary file
                if leftover != tmp:
                    leftover.unlink(missing_ok=True)
    return path


def rasters(scores: TileScores, max_side: int = MAX_SIDE) -> dict[str, Raster]:
    """One raster per band (probability, var_sum) on the same cells."""
    return {b: rasterise_bounds(scores.xmin, scores.ymin, scores.xmax, scores.ymax, scores.layer(b), max_side)
            for b in BANDS}


def write_cog(path: str | os.PathLike, scores: TileScores, *, tags: Mapping[str, Any] | None = None,
              max_side: int = MAX_SIDE) -> Path:
    """A two-band Cloud-Optimized GeoTIFF of the scores (see the module docstring)."""
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile

    layers = rasters(scores, max_side)
    first = layers[BANDS[0]]
    h, w = first.values.shape
    profile = {
        "driver": "GTiff", "height": h, "width": w, "count": len(BANDS), "dtype": "float32",
        "crs": "EPSG:4326", "transform": Affine(first.dx, 0.0, first.left, 0.0, -first.dy, first.top),
        "nodata": float("nan"),
    }

    def write(tmp: Path) -> None:
        with MemoryFile() as mem:
            with mem.open(**profile) as dst:
                for i, band in enumerate(BANDS, start=1):
                    dst.write(layers[band].values.astype(np.float32), i)
                    dst.set_band_description(i, BAND_DESCRIPTIONS[band])
                if tags:
                    dst.update_tags(**{k: str(v) for k, v in tags.items()})
            with mem.open() as src, rasterio.Env():
                rasterio.shutil.copy(src, str(tmp), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=COG_BLOCK,
                                     OVERVIEWS="AUTO", OVERVIEW_RESAMPLING="AVERAGE", PREDICTOR="YES")

    return _atomic(Path(path), write)


def _table(scores: TileScores) -> pa.Table:
    boxes = shapely.box(scores.xmin, scores.ymin, scores.xmax, scores.ymax)
    return pa.table({
        "tile_id": pa.array(np.asarray(scores.tile_id, dtype=np.int64)),
        "lon": pa.array(np.asarray(scores.lon, dtype=np.float64)),
        "lat": pa.array(np.asarray(scores.lat, dtype=np.float64)),
        "probability": pa.array(np.asarray(scores.probability, dtype=np.float64)),
        "var_sum": pa.array(np.asarray(scores.var_sum, dtype=np.float64)),
        "distance": pa.array(np.asarray(scores.distance, dtype=np.float64)),
        "geometry": pa.array(shapely.to_wkb(boxes), type=pa.binary()),
    })


def write_vector(path: str | os.PathLike, scores: TileScores, *, tags: Mapping[str, Any] | None = None) -> Path:
    """One polygon feature per tile, in the format of the suffix (GeoJSON, GeoPackage, FlatGeobuf)."""
    import pyogrio

    path = Path(path)
    driver = VECTOR_DRIVERS[path.suffix.lower()]

    def write(tmp: Path) -> None:
        meta = {k: str(v) for k, v in (tags or {}).items()} or None
        pyogrio.write_arrow(_table(scores), str(tmp), driver=driver, layer="tiles", geometry_name="geometry",
                            geometry_type="Polygon", crs="EPSG:4326", dataset_metadata=meta if driver == "GPKG" else None)

    return _atomic(path, write)


def _wgs84_projjson() -> dict[str, Any]:
    global _WGS84_PROJJSON
    if _WGS84_PROJJSON is None:
        from pyproj import CRS

        _WGS84_PROJJSON = json.loads(CRS.from_epsg(4326).to_json())
    return _WGS84_PROJJSON


def write_geoparquet(path: str | os.PathLike, scores: TileScores, *, tags: Mapping[str, Any] | None = None) -> Path:
    """GeoParquet 1.1: the tile polygons as WKB with the ``geo`` file metadata (CRS, bbox, types)."""
    table = _table(scores)
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {"geometry": {
            "encoding": "WKB", "geometry_types": ["Polygon"], "crs": _wgs84_projjson(),
            "bbox": [float(np.min(scores.xmin)), float(np.min(scores.ymin)),
                     float(np.max(scores.xmax)), float(np.max(scores.ymax))],
        }},
    }
    meta = {b"geo": json.dumps(geo).encode()}
    if tags:
        meta[b"psm"] = json.dumps({k: str(v) for k, v in tags.items()}).encode()
    table = table.replace_schema_metadata(meta)
    return _atomic(Path(path), lambda tmp: pq.write_table(table, str(tmp), compression="zstd"))


def write_png(path: str | os.PathLike, scores: TileScores, *, layer: str = "probability", title: str = "",
              max_side: int = MAX_SIDE) -> Path:
    """The picture of one layer (:data:`psm_db.maps.scores.LAYERS`) with its colour bar."""
    values = scores.layer(layer)
    raster = rasterise_bounds(scores.xmin, scores.ymin, scores.xmax, scores.ymax, values, max_side)
    lo, hi = shared_limits([values])
    png = render_png(raster, vmin=lo, vmax=hi, layer=layer, title=title)
    return _atomic(Path(path), lambda tmp: tmp.write_bytes(png))


def write_map(path: str | os.PathLike, scores: TileScores, *, tags: Mapping[str, Any] | None = None,
              layer: str = "probability", title: str = "", max_side: int = MAX_SIDE) -> Path:
    """Write the map in the format of ``path``'s suffix (see the module docstring).

    Raises:
        ValueError: On an unknown suffix, an unknown layer, or no tiles.
    """
    fmt = map_format(path)
    if len(scores) == 0:
        raise ValueError("the map has no tiles to write: embed the region under this condition first")
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; choose one of {', '.join(LAYERS)}")
    if fmt == "tif":
        return write_cog(path, scores, tags=tags, max_side=max_side)
    if fmt == "parquet":
        return write_geoparquet(path, scores, tags=tags)
    if fmt == "png":
        return write_png(path, scores, layer=layer, title=title, max_side=max_side)
    return write_vector(path, scores, tags=tags)


__all__ = ["FORMATS", "map_format", "rasters", "write_cog", "write_geoparquet", "write_map", "write_png",
           "write_vector"]
