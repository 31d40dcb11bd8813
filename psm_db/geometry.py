"""Regions: the one parser of every region argument, its checks, and the region as a SQL value.

Every entry point (the ranking API, ``psm embed-region`` / ``celery -A worker embed_region``,
the worker's planner and the dashboard) reads a region through :func:`parse_region`, so a
region means the same polygon wherever it is given. The forms:

* a bbox ``W,S,E,N`` (degrees; commas, semicolons or spaces between the numbers);
* WKT, or EWKT with its SRID (``SRID=3857;POLYGON((...))``), transformed to EPSG:4326;
* GeoJSON text or a ``.geojson`` / ``.json`` / ``.wkt`` file (a geometry, Feature or
  FeatureCollection; a ``crs`` member is honoured and transformed to EPSG:4326);
* a GeoPackage (``.gpkg``), Shapefile (``.shp`` or a zipped ``.zip``), FlatGeobuf (``.fgb``) or
  GeoParquet (``.parquet``) file, read by :mod:`psm_db.vectorfiles` and reprojected from the
  file's CRS; its features are unioned into one region;
* a stored region ``set/name`` (needs a database connection or session);
* a shapely geometry or a GeoJSON dict (from Python).

The result is a non-empty, valid (Multi)Polygon in lon/lat; anything else raises ValueError
saying what is wrong and how to fix it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, TypeAlias, overload

import shapely
import shapely.errors
import shapely.geometry
from geoalchemy2 import Geometry
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Connection, LargeBinary, func, literal, select
from sqlalchemy.orm import Session

from psm_db.vectorfiles import VECTOR_SUFFIXES, is_vector_file, read_vector_file, unknown_format

RegionLike: TypeAlias = BaseGeometry | str | dict[str, Any] | None
"""A region: a shapely geometry, text in one of the forms above, a GeoJSON dict, or None (anywhere)."""
Db: TypeAlias = Session | Connection
"""Where stored regions are read from: a SQLAlchemy session or connection."""

FORMS = ("a bbox W,S,E,N (degrees), a WKT or EWKT polygon (e.g. SRID=3857;POLYGON(...)), GeoJSON "
         "(text or a .geojson/.json/.wkt file), a GeoPackage/Shapefile/FlatGeobuf/GeoParquet file "
         "(.gpkg, .shp, .fgb, .parquet), or a stored region set/name")
EXAMPLE = "POLYGON((-94 41, -93 41, -93 42, -94 42, -94 41))"
FILE_SUFFIXES = (".geojson", ".json", ".wkt")
TOLERANCE = 1e-7
"""Degrees a transformed region may overshoot lon/lat bounds by (rounding)."""

_EWKT = re.compile(r"(?is)^SRID=(\d+)\s*;(.*)$")
_WKT = re.compile(r"(?i)^(multi)?[a-z]+\s*(z|m|zm)?\s*(\(|empty\b)")
_BBOX_SPLIT = re.compile(r"[,;\s]+")


# --------------------------------------------------------------------------- parsing


@overload
def parse_region(region: None, *, srid: int = ..., db: Db | None = ..., files: bool = ...) -> None: ...
@overload
def parse_region(region: BaseGeometry | str | dict[str, Any], *, srid: int = ..., db: Db | None = ...,
                 files: bool = ...) -> BaseGeometry: ...


def parse_region(region: RegionLike, *, srid: int = 4326, db: Db | None = None,
                 files: bool = True) -> BaseGeometry | None:
    """Turn a region argument into a valid (Multi)Polygon in EPSG:4326.

    Args:
        region: One of the forms of the module docstring, or None for "anywhere".
        srid: The SRID of the coordinates when the region does not say (EWKT and a GeoJSON
            ``crs`` member do); anything but 4326 is transformed.
        db: Where to read a stored region ``set/name`` from.
        files: Whether a file name may be given (False where the text comes from a web page).

    Returns:
        The geometry in lon/lat, or None for None.

    Raises:
        ValueError: On text in none of the forms, an empty, non-polygonal or invalid geometry,
            an unknown SRID or crs, a bad bbox, coordinates outside lon/lat bounds, or an
            unknown stored region.
        FileNotFoundError: For a region file that does not exist.
    """
    if region is None:
        return None
    if isinstance(region, BaseGeometry):
        return check_region(region, srid=srid)
    if isinstance(region, dict):
        geom, srid = _from_geojson(region, srid)
        return check_region(geom, srid=srid)
    if not isinstance(region, str):
        raise ValueError(f"cannot read a region from a {type(region).__name__}; give {FORMS}")
    raw = region.strip()
    if not raw:
        raise ValueError(f"the region is empty; give {FORMS}")
    if files and is_vector_file(raw):
        geom, _ = _from_geojson(read_vector_file(raw), 4326)  # in lon/lat already
        return check_region(geom)
    if files and (unknown := unknown_format(raw)):
        raise ValueError(unknown)
    if raw.lower().endswith((*FILE_SUFFIXES, *VECTOR_SUFFIXES)):
        if not files:
            raise ValueError(f"region files are not read here ({raw}); upload the file, or paste its contents")
        path = Path(raw).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"region file {raw} does not exist")
        raw = path.read_text(encoding="utf-8-sig").strip()
        if not raw:
            raise ValueError(f"the region file {region} is empty; give {FORMS}")
    if raw.startswith("{"):
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"cannot read the region as WKT or GeoJSON (not valid JSON: {e}); "
                             f"example: {EXAMPLE}") from e
        geom, srid = _from_geojson(obj, srid)
    elif _EWKT.match(raw) or _WKT.match(raw):
        geom, srid = _from_wkt(raw, srid)
    elif _looks_like_bbox(raw):
        return parse_bbox(raw, srid=srid)
    elif "/" in raw:
        return stored_region(raw, db)
    else:
        raise ValueError(f"cannot read the region as WKT or GeoJSON: {region!r}; give {FORMS}; "
                         f"example: {EXAMPLE}")
    return check_region(geom, srid=srid)


def _from_wkt(raw: str, srid: int) -> tuple[BaseGeometry, int]:
    match = _EWKT.match(raw)
    if match:
        srid, raw = int(match.group(1)), match.group(2).strip()
    try:
        return shapely.from_wkt(raw), srid
    except (shapely.errors.ShapelyError, ValueError) as e:
        raise ValueError(f"cannot read the region as WKT or GeoJSON (not valid WKT: {e}); "
                         f"example: {EXAMPLE}") from e


def _from_geojson(obj: Any, srid: int) -> tuple[BaseGeometry, int]:
    """A GeoJSON geometry, Feature or FeatureCollection (unioned) and the SRID its crs names."""
    if not isinstance(obj, dict) or "type" not in obj:
        raise ValueError("cannot read the region as WKT or GeoJSON (JSON but not GeoJSON: it has no "
                         '"type" member); give a Polygon, MultiPolygon, Feature or FeatureCollection')
    if obj.get("crs") is not None:
        srid = geojson_crs_srid(obj["crs"])
    kind = obj["type"]
    if kind == "FeatureCollection":
        geoms = [f.get("geometry") for f in obj.get("features") or [] if isinstance(f, dict)]
    elif kind == "Feature":
        geoms = [obj.get("geometry")]
    else:
        geoms = [obj]
    geoms = [g for g in geoms if g]
    if not geoms:
        raise ValueError("the GeoJSON region holds no geometry; give a Polygon or MultiPolygon")
    parts = []
    for g in geoms:
        try:
            part = shapely.geometry.shape(g)
        except (shapely.errors.ShapelyError, ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            raise ValueError(f"cannot read the region as WKT or GeoJSON (a GeoJSON geometry cannot be read: "
                             f"{e}); example: {EXAMPLE}") from e
        _check_polygonal(part)
        parts.append(part)
    return (shapely.union_all(parts) if len(parts) > 1 else parts[0]), srid


def geojson_crs_srid(crs: Any) -> int:
    """The EPSG code of a GeoJSON ``crs`` member (``EPSG:3857``, ``urn:ogc:def:crs:EPSG::3857``, CRS84).

    Raises:
        ValueError: For a crs member that names no EPSG code.
    """
    name: Any = None
    if isinstance(crs, dict):
        props = crs.get("properties") or {}
        name = props.get("name") if crs.get("type") == "name" else props.get("code")
        if crs.get("type") == "EPSG" and name is not None:
            name = f"EPSG:{name}"
    text = str(name or "").strip()
    if re.fullmatch(r"(?i)(urn:ogc:def:crs:OGC:1\.3:)?CRS84", text):
        return 4326
    match = re.fullmatch(r"(?i)(?:urn:ogc:def:crs:)?EPSG:(?:[\d.]*:)?(\d+)", text)
    if match is None:
        raise ValueError(
            f"cannot read the GeoJSON crs member {crs!r}; use "
            '{"type": "name", "properties": {"name": "EPSG:3857"}}, or leave it out for lon/lat (EPSG:4326)'
        )
    return int(match.group(1))


def _looks_like_bbox(raw: str) -> bool:
    parts = [p for p in _BBOX_SPLIT.split(raw) if p]
    try:
        [float(p) for p in parts]
    except ValueError:
        return False
    return bool(parts)


def parse_bbox(text: str, *, srid: int = 4326) -> BaseGeometry:
    """A box from ``W,S,E,N`` (four numbers; commas, semicolons or spaces between them).

    Raises:
        ValueError: When it is not four finite numbers, west >= east or south >= north, or
            (in EPSG:4326) a longitude outside -180..180 or a latitude outside -90..90.
    """
    parts = [p for p in _BBOX_SPLIT.split(text.strip()) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise ValueError(f"a bbox is four numbers west, south, east, north (W,S,E,N), got {text!r}")
    w, s, e, n = values
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"the bbox coordinates must be finite numbers, got {text!r}")
    if w >= e or s >= n:
        raise ValueError(
            f"the bbox {text.strip()!r} is empty: west ({w:g}) must be < east ({e:g}) and south ({s:g}) < "
            f"north ({n:g}); give it as W,S,E,N"
        )
    if srid == 4326 and (w < -180 or e > 180 or s < -90 or n > 90):
        raise ValueError(
            f"the bbox {text.strip()!r} lies outside lon/lat bounds: longitudes must be in -180..180 and "
            "latitudes in -90..90 (degrees, EPSG:4326), as W,S,E,N"
        )
    return check_region(shapely.box(w, s, e, n), srid=srid)


def stored_region(name: str, db: Db | None) -> BaseGeometry:
    """The geometry of the stored region ``set/name``.

    Raises:
        ValueError: Without a database to read it from, or when no such region is stored.
    """
    from psm_db.models import Region

    set_name, _, region_name = name.strip().partition("/")
    if db is None:
        raise ValueError(f"the stored region {name!r} needs a database connection")
    wkb = db.scalar(select(func.ST_AsBinary(Region.geom, type_=LargeBinary))
                    .where(Region.set_name == set_name, Region.name == region_name))
    if wkb is None:
        raise ValueError(
            f"unknown stored region {name!r}: no region {region_name!r} in set {set_name!r} "
            "(list them with `psm regions list`)"
        )
    return shapely.from_wkb(bytes(wkb))


# --------------------------------------------------------------------------- checks


def _check_polygonal(geom: BaseGeometry) -> None:
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise ValueError(
            f"the region must be a Polygon or MultiPolygon, got {geom.geom_type}; buffer a point or line "
            "to make an area around it"
        )


def check_region(geom: BaseGeometry, *, srid: int = 4326) -> BaseGeometry:
    """``geom`` (in ``srid``) in EPSG:4326, checked: a non-empty, valid polygon in lon/lat range.

    Raises:
        ValueError: Saying what is wrong (GEOS's reason for invalid geometries) and how to fix it.
    """
    _check_polygonal(geom)
    if geom.is_empty:
        raise ValueError("the region geometry is empty; give a polygon with an interior")
    if srid != 4326:
        geom = to_4326(geom, srid)
    xmin, ymin, xmax, ymax = geom.bounds
    if (xmin < -180 - TOLERANCE or xmax > 180 + TOLERANCE or ymin < -90 - TOLERANCE
            or ymax > 90 + TOLERANCE):
        raise ValueError(
            f"the region lies outside lon/lat bounds ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}); regions are in "
            "degrees (EPSG:4326), lon first. If it is in another coordinate system, say which: EWKT "
            "(SRID=3857;POLYGON(...)), a GeoJSON crs member, or srid=..."
        )
    if not geom.is_valid:
        raise ValueError(
            f"the region geometry is not valid: {shapely.is_valid_reason(geom)}; repair it with "
            "shapely.make_valid (or ST_MakeValid) and try again"
        )
    if geom.area == 0:
        raise ValueError("the region is empty (no area); give a polygon with an interior")
    return geom


def to_4326(geom: BaseGeometry, srid: int) -> BaseGeometry:
    """``geom`` transformed from EPSG:``srid`` to lon/lat (pyproj, x = longitude).

    Raises:
        ValueError: For an SRID that PROJ does not know.
    """
    from pyproj import Transformer
    from pyproj.exceptions import CRSError

    if srid == 4326:
        return geom
    try:
        transformer = Transformer.from_crs(int(srid), 4326, always_xy=True)
    except CRSError as e:
        raise ValueError(f"unknown SRID {srid}; give the region in EPSG:4326 or a known EPSG code") from e
    return shapely.transform(geom, transformer.transform, interleaved=False)


# --------------------------------------------------------------------------- SQL values


def geometry_arg(geom: BaseGeometry | None) -> Any:
    """A checked lon/lat geometry as a bound SQL value (WKB, SRID 4326); NULL for None."""
    if geom is None:
        return literal(None, Geometry(srid=4326))
    return func.ST_GeomFromWKB(literal(shapely.to_wkb(geom), LargeBinary), 4326, type_=Geometry(srid=4326))


def region_arg(region: RegionLike, *, srid: int = 4326, db: Db | None = None) -> Any:
    """:func:`parse_region` then :func:`geometry_arg`."""
    return geometry_arg(parse_region(region, srid=srid, db=db))


__all__ = [
    "FORMS", "Db", "RegionLike", "check_region", "geojson_crs_srid", "geometry_arg", "parse_bbox", "parse_region",
    "region_arg", "stored_region", "to_4326",
]
