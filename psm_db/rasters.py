"""The real imagery behind stored tiles: which raster a tile came from, and its pixels for display.

Tiles record the name of their imagery source (``psm.tiles.imagery_source``). Sources of real
imagery are named ``geotiff:<file or URL>`` and ``folder:<folder>`` unless the job gave its own
name (``--source-name``); the embed job's parameters then say which file it was. This module
finds the raster of a source and reads an area of it in lon/lat as an RGB picture, with
rasterio only: the dashboard uses it, and it needs none of the workers' code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

RASTER_KINDS = ("geotiff", "folder")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt")
METRES_PER_DEGREE = 6_371_008.8 * math.pi / 180.0


@dataclass(frozen=True)
class RasterRef:
    """Where the pixels of an imagery source are: a GeoTIFF/COG (``geotiff``) or a folder of tiles."""

    kind: str
    path: str
    bands: tuple[int, ...] | None = None


def source_name(kind: str, location: str) -> str:
    """The name tiles of a raster source are stored under by default: ``<kind>:<location>``."""
    return f"{kind}:{location}"


def is_remote(path: str) -> bool:
    """Whether GDAL reads ``path`` over the network."""
    return path.startswith(("http://", "https://", "s3://", "gs://", "/vsi"))


def gdal_path(path: str) -> str:
    """The path GDAL opens: http(s) URLs through /vsicurl/."""
    return f"/vsicurl/{path}" if path.startswith(("http://", "https://")) else path


def parse_source_name(name: str) -> RasterRef | None:
    """The raster of a default source name (``geotiff:/data/scene.tif``), or None for other names."""
    kind, sep, location = str(name).partition(":")
    if not sep or kind not in RASTER_KINDS or not location:
        return None
    return RasterRef(kind, location)


def raster_of_source(name: str, session: Session | None = None) -> RasterRef | None:
    """The raster behind tiles stored under ``name``, or None when they are not real imagery.

    With a session, the newest embed job that wrote under that name says the file and the bands
    it read (that also finds sources given their own name); otherwise the name itself is parsed.
    """
    if session is not None:
        from psm_db.models import Job

        rows = session.execute(
            select(Job.params).where(Job.kind == "embed_region").order_by(Job.created_at.desc()).limit(500)
        ).scalars()
        for params in rows:
            imagery = (params or {}).get("imagery") or {}
            kind, path = imagery.get("kind"), imagery.get("path")
            if kind not in RASTER_KINDS or not path:
                continue
            if imagery.get("name") == name or (not imagery.get("name") and _default_name(kind, path) == name):
                bands = imagery.get("bands")
                return RasterRef(kind, str(path), tuple(int(b) for b in bands) if bands else None)
    return parse_source_name(name)


def _default_name(kind: str, path: str) -> str:
    if kind == "geotiff" and is_remote(path):
        return source_name(kind, path)
    return source_name(kind, str(Path(path).expanduser().resolve()))


def raster_files(ref: RasterRef) -> list[str]:
    """The raster files of a source.

    Raises:
        FileNotFoundError: When the file or folder is not on this machine.
    """
    if ref.kind == "geotiff":
        if not is_remote(ref.path) and not Path(ref.path).expanduser().is_file():
            raise FileNotFoundError(f"the imagery file {ref.path} is not on this machine")
        return [ref.path]
    folder = Path(ref.path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"the imagery folder {ref.path} is not on this machine")
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)


def area_bounds(lat: float, lon: float, side_m: float) -> tuple[float, float, float, float]:
    """(west, south, east, north) in degrees of a square of ``side_m`` metres centred on (lat, lon)."""
    dlat = side_m / METRES_PER_DEGREE
    dlon = dlat / max(0.01, math.cos(math.radians(lat)))
    return lon - dlon / 2, lat - dlat / 2, lon + dlon / 2, lat + dlat / 2


def read_area(ref: RasterRef, bounds: tuple[float, float, float, float], size: int = 128) -> tuple[np.ndarray, float]:
    """An RGB picture (size, size, 3) uint8 of ``bounds`` (lon/lat) from the source, and its share of data.

    Pixels without data (nodata, outside every file) are black. uint8 imagery is shown as it
    is; other types are stretched between the 2nd and 98th percentile of the area's values.

    Raises:
        FileNotFoundError: When the imagery is not on this machine.
        ValueError: When a file cannot be read (it is named).
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioError
    from rasterio.transform import from_bounds
    from rasterio.warp import reproject, transform_bounds
    from shapely.geometry import box

    dst = np.full((3, size, size), np.nan, dtype=np.float32)
    transform = from_bounds(*bounds, size, size)
    as_bytes = True
    for path in raster_files(ref):
        try:
            with rasterio.open(gdal_path(path)) as ds:
                if ds.crs is None:
                    continue
                if not box(*transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)).intersects(box(*bounds)):
                    continue
                bands = list(ref.bands) if ref.bands else ([1, 2, 3] if ds.count >= 3 else [1])
                bands = (bands * 3) if len(bands) == 1 else bands
                if max(bands) > ds.count:
                    raise ValueError(f"the imagery file {path} has {ds.count} band(s), not {max(bands)}")
                as_bytes = as_bytes and ds.dtypes[bands[0] - 1] == "uint8"
                part = np.full((3, size, size), np.nan, dtype=np.float32)
                reproject(rasterio.band(ds, bands), part, dst_transform=transform, dst_crs="EPSG:4326",
                          src_nodata=ds.nodata, dst_nodata=np.nan, resampling=Resampling.bilinear)
        except RasterioError as e:
            raise ValueError(f"cannot read the imagery file {path}: {e}") from e
        fill = np.isnan(dst).any(axis=0) & np.isfinite(part).all(axis=0)
        dst[:, fill] = part[:, fill]
    valid = np.isfinite(dst).all(axis=0)
    img = np.zeros((size, size, 3), dtype=np.uint8)
    if valid.any():
        values = dst[:, valid]
        if as_bytes:
            lo, hi = 0.0, 255.0
        else:
            lo, hi = (float(v) for v in np.percentile(values, [2, 98]))
            hi = hi if hi > lo else lo + 1.0
        scaled = np.clip((values - lo) / (hi - lo) * 255.0, 0, 255)
        img[valid] = np.round(scaled.T).astype(np.uint8)
    return img, float(valid.mean())


__all__ = ["RASTER_KINDS", "RasterRef", "area_bounds", "gdal_path", "is_remote", "parse_source_name", "raster_files", "raster_of_source",
           "read_area", "source_name"]
