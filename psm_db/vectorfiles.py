"""Region files in the formats people have: GeoPackage, Shapefile, FlatGeobuf (pyogrio) and GeoParquet (pyarrow).

Every reader returns the file's features as a GeoJSON FeatureCollection in lon/lat (EPSG:4326),
reprojected from the file's own CRS, so that the one region parser
(:func:`psm_db.geometry.parse_region`, the features unioned into one region) and the region-set
loader (:func:`psm_db.regions.load_regions`, one region per feature) treat them exactly as they
treat GeoJSON. pyogrio's GDAL has no Parquet driver here, so GeoParquet is read with pyarrow
(its ``geo`` metadata: WKB geometries, the CRS as PROJJSON).

GeoJSON files (``.geojson``, ``.json``) keep their own reader, which honours a ``crs`` member.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import shapely.geometry

OGR_FORMATS = {
    ".gpkg": "GeoPackage",
    ".shp": "Shapefile",
    ".zip": "zipped Shapefile",
    ".fgb": "FlatGeobuf",
}
"""Suffixes read with pyogrio (GDAL/OGR), and the format's name."""
PARQUET_SUFFIXES = (".parquet", ".geoparquet")
VECTOR_SUFFIXES = (*OGR_FORMATS, *PARQUET_SUFFIXES)
"""Every suffix this module reads."""
TEXT_SUFFIXES = (".geojson", ".json", ".wkt")
"""Region files read as text by :func:`psm_db.geometry.parse_region` (GeoJSON, WKT)."""
OTHER_VECTOR_SUFFIXES = (".kml", ".kmz", ".gml", ".csv", ".gdb", ".tab", ".mif", ".dxf", ".gpx", ".topojson",
                         ".osm", ".pbf", ".sqlite", ".xlsx", ".shx", ".dbf", ".prj")
"""Suffixes of vector formats that are not read (refused with the list of those that are)."""
FORMATS_TEXT = "GeoJSON (.geojson, .json), GeoPackage (.gpkg), Shapefile (.shp, or zipped .zip), " \
               "FlatGeobuf (.fgb), GeoParquet (.parquet) or WKT (.wkt)"

POLYGONAL = ("Polygon", "MultiPolygon")


def is_vector_file(text: str) -> bool:
    """Whether ``text`` names a file this module reads (by its suffix)."""
    return text.strip().lower().endswith(VECTOR_SUFFIXES)


def unknown_format(text: str) -> str | None:
    """A message when ``text`` names a region file in a format that is not read; else None.

    A name counts as a file when it exists or ends in a known vector suffix that is not read
    (``.kml``, ``.csv``, ...), so a stored region ``set/name`` is never mistaken for one.
    """
    raw = text.strip()
    suffix = Path(raw).suffix.lower()
    if not suffix or not suffix[1:].isalnum() or suffix in (*VECTOR_SUFFIXES, *TEXT_SUFFIXES):
        return None
    if suffix in OTHER_VECTOR_SUFFIXES or Path(raw).expanduser().is_file():
        hint = " (a Shapefile is read from its .shp, with the .shx, .dbf and .prj beside it)" \
            if suffix in (".shx", ".dbf", ".prj") else ""
        return (f"unknown region file format {suffix!r} ({raw}){hint}; give {FORMATS_TEXT}, or convert it "
                "with `ogr2ogr -f GPKG out.gpkg FILE`")
    return None


def read_vector_file(path: str | Path, *, layer: str | None = None) -> dict[str, Any]:
    """The features of a GeoPackage, Shapefile, FlatGeobuf or GeoParquet file, as GeoJSON in EPSG:4326.

    Args:
        path: The file (its suffix says the format).
        layer: The layer of a file that holds several (GeoPackage); None: its only layer.

    Returns:
        A FeatureCollection: each feature's properties and its geometry in lon/lat.

    Raises:
        FileNotFoundError: For a file that does not exist.
        ValueError: For an unknown format, a file without a CRS, an empty file (no features or
            only empty geometries), geometries that are not polygons, several layers and none
            chosen, or a file that cannot be read.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(f"region file {path} does not exist")
    suffix = file.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        wkb, props, crs = _read_geoparquet(file)
    elif suffix in OGR_FORMATS:
        wkb, props, crs = _read_ogr(file, layer)
    else:
        raise ValueError(unknown_format(str(file)) or f"unknown region file format {suffix!r} ({file}); "
                         f"give {FORMATS_TEXT}")
    return _to_geojson(file, wkb, props, crs)


# --------------------------------------------------------------------------- readers


def _read_ogr(file: Path, layer: str | None) -> tuple[list[Any], list[dict[str, Any]], Any]:
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    label = OGR_FORMATS[file.suffix.lower()]
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(file)]
        if layer is None and len(layers) > 1:
            raise ValueError(f"the {label} {file} holds {len(layers)} layers ({', '.join(layers)}); choose one "
                             "(--layer), or keep only the region layer in the file")
        if layer is not None and layer not in layers:
            raise ValueError(f"the {label} {file} has no layer {layer!r}; its layers: {', '.join(layers)}")
        meta, table = pyogrio.read_arrow(file, layer=layer)
    except (DataSourceError, DataLayerError) as e:
        raise ValueError(f"cannot read {file} as a {label}: {e}") from e
    geom_col = _wkb_column(table, meta.get("geometry_name"))
    if geom_col is None:
        raise ValueError(f"the {label} {file} has no geometry column; regions need polygons")
    props = table.drop_columns([geom_col]).to_pylist()
    return table.column(geom_col).to_pylist(), props, meta.get("crs")


def _wkb_column(table: Any, name: str | None) -> str | None:
    for f in table.schema:
        if (f.metadata or {}).get(b"ARROW:extension:name") == b"geoarrow.wkb":
            return str(f.name)
    for candidate in (name, "wkb_geometry", "geometry", "geom"):
        if candidate and candidate in table.column_names:
            return candidate
    return None


def _read_geoparquet(file: Path) -> tuple[list[Any], list[dict[str, Any]], Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"cannot read {file} as a (Geo)Parquet file: {e}") from e
    raw_geo = (table.schema.metadata or {}).get(b"geo")
    if raw_geo is None:
        raise ValueError(f"{file} is a Parquet file without GeoParquet metadata (no 'geo' key), so its "
                         "geometries are unknown; write it as GeoParquet (e.g. GeoDataFrame.to_parquet)")
    try:
        geo = json.loads(raw_geo)
        column = geo.get("primary_column") or next(iter(geo["columns"]))
        info = geo["columns"][column]
    except (ValueError, KeyError, StopIteration, TypeError, AttributeError) as e:
        raise ValueError(f"{file} has unreadable GeoParquet metadata: {e}") from e
    encoding = str(info.get("encoding", "WKB"))
    if encoding.upper() != "WKB":
        raise ValueError(f"the geometry column {column!r} of {file} is encoded as {encoding!r}; only WKB "
                         "GeoParquet is read (write it with geometry_encoding='WKB')")
    if column not in table.column_names:
        raise ValueError(f"{file}: the GeoParquet metadata names a geometry column {column!r} it does not have")
    # GeoParquet: no crs key means OGC:CRS84 (lon/lat); an explicit null means an unknown CRS.
    crs: Any = info["crs"] if "crs" in info else "OGC:CRS84"
    props = table.drop_columns([column]).to_pylist()
    return table.column(column).to_pylist(), props, crs


# --------------------------------------------------------------------------- to GeoJSON


def _transformer(file: Path, crs: Any) -> Any:
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError

    if crs is None or crs == "":
        raise ValueError(
            f"the region file {file} has no CRS (coordinate reference system), so its coordinates cannot be "
            "placed on the map; add one (a Shapefile needs its .prj beside the .shp), e.g. "
            "`ogr2ogr -a_srs EPSG:4326 out.gpkg FILE`"
        )
    try:
        source = CRS.from_json_dict(crs) if isinstance(crs, dict) else CRS.from_user_input(crs)
    except CRSError as e:
        raise ValueError(f"the CRS of the region file {file} is not one PROJ knows: {e}") from e
    if source == CRS.from_epsg(4326) or source == CRS.from_user_input("OGC:CRS84"):
        return None
    return Transformer.from_crs(source, 4326, always_xy=True)


def _to_geojson(file: Path, wkb: list[Any], props: list[dict[str, Any]], crs: Any) -> dict[str, Any]:
    if not wkb:
        raise ValueError(f"the region file {file} holds no features")
    present = [i for i, w in enumerate(wkb) if w is not None]
    geoms = np.asarray(shapely.force_2d(shapely.from_wkb([wkb[i] for i in present])), dtype=object)
    keep = [k for k, g in enumerate(geoms) if not g.is_empty]
    if not keep:
        raise ValueError(f"the region file {file} holds only empty geometries; regions need polygons")
    for k in keep:
        kind = geoms[k].geom_type
        if kind not in POLYGONAL and not (kind == "GeometryCollection"
                                          and all(p.geom_type in POLYGONAL for p in geoms[k].geoms)):
            raise ValueError(
                f"the region file {file} holds {kind} geometries (feature {present[k] + 1}); regions must be "
                "Polygons or MultiPolygons: buffer points or lines into areas first"
            )
    transformer = _transformer(file, crs)
    geoms = np.asarray([_flatten(g) for g in geoms[keep]], dtype=object)
    if transformer is not None:
        geoms = shapely.transform(geoms, transformer.transform, interleaved=False)
    bad = [k for k, g in enumerate(geoms) if not all(math.isfinite(v) for v in g.bounds)]
    if bad:
        raise ValueError(f"feature {present[keep[bad[0]]] + 1} of {file} cannot be placed in lon/lat from the "
                         f"file's CRS ({crs if not isinstance(crs, dict) else crs.get('name', 'PROJJSON')}); "
                         "is the CRS right?")
    features = [
        {"type": "Feature", "properties": _jsonable(props[present[k]]),
         "geometry": shapely.geometry.mapping(g)}
        for k, g in zip(keep, geoms, strict=True)
    ]
    return {"type": "FeatureCollection", "features": features}


def _flatten(geom: Any) -> Any:
    """A GeometryCollection of polygons as one MultiPolygon; anything else as it is."""
    if geom.geom_type != "GeometryCollection":
        return geom
    parts = [p for g in geom.geoms for p in getattr(g, "geoms", [g])]
    return shapely.MultiPolygon(parts)


def _jsonable(props: dict[str, Any]) -> dict[str, Any]:
    """Property values as JSON values (dates as ISO text, decimals as numbers, bytes left out)."""

    def value(v: Any) -> Any:
        if isinstance(v, _dt.date | _dt.time):
            return v.isoformat()
        if isinstance(v, _dt.timedelta):
            return v.total_seconds()
        if isinstance(v, decimal.Decimal):
            return float(v)
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): value(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [value(x) for x in v]
        return v

    return {str(k): value(v) for k, v in props.items() if not isinstance(v, bytes | bytearray | memoryview)}


__all__ = ["FORMATS_TEXT", "OGR_FORMATS", "VECTOR_SUFFIXES", "is_vector_file", "read_vector_file", "unknown_format"]
