"""Map exports: the score raster as a GeoTIFF (EPSG:4326) and the tiles with scores as GeoJSON."""

from __future__ import annotations

import json

import numpy as np
from affine import Affine
from rasterio.io import MemoryFile

from dashboard.mapview import Raster, TileScores


def geotiff_bytes(raster: Raster, *, description: str = "match probability", tags: dict | None = None) -> bytes:
    """A single-band float32 GeoTIFF of the raster in EPSG:4326; NaN marks cells without tiles."""
    h, w = raster.values.shape
    profile = {
        "driver": "GTiff", "height": h, "width": w, "count": 1, "dtype": "float32",
        "crs": "EPSG:4326", "transform": Affine(raster.dx, 0.0, raster.left, 0.0, -raster.dy, raster.top),
        "nodata": np.nan, "compress": "deflate",
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(raster.values.astype(np.float32), 1)
            dst.set_band_description(1, description)
            if tags:
                dst.update_tags(**{k: str(v) for k, v in tags.items()})
        return mem.read()


def read_geotiff(data: bytes) -> tuple[np.ndarray, dict]:
    """Read back a GeoTIFF made by :func:`geotiff_bytes` (for checks): (band 1, profile)."""
    with MemoryFile(data) as mem, mem.open() as src:
        return src.read(1), dict(src.profile) | {"bounds": src.bounds, "tags": src.tags()}


def geojson_text(scores: TileScores, *, properties: dict | None = None) -> str:
    """A GeoJSON FeatureCollection of the tiles (their bounding boxes) with their scores."""
    parts = []
    for i in range(len(scores)):
        x0, y0, x1, y1 = (float(scores.xmin[i]), float(scores.ymin[i]),
                          float(scores.xmax[i]), float(scores.ymax[i]))
        parts.append(
            '{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[['
            f"{x0:.7f},{y0:.7f}],[{x1:.7f},{y0:.7f}],[{x1:.7f},{y1:.7f}],[{x0:.7f},{y1:.7f}],"
            f"[{x0:.7f},{y0:.7f}]]]}},"
            f'"properties":{{"tile_id":{int(scores.tile_id[i])},'
            f'"probability":{_num(scores.probability[i])},"distance":{_num(scores.distance[i])},'
            f'"var_sum":{_num(scores.var_sum[i])}}}}}'
        )
    head = json.dumps({"type": "FeatureCollection", "properties": properties or {}})[:-1]
    return head + ',"features":[' + ",".join(parts) + "]}"


def _num(x: float) -> str:
    x = float(x)
    return repr(x) if np.isfinite(x) else "null"


__all__ = ["geojson_text", "geotiff_bytes", "read_geotiff"]
