"""Write region files in every format the region readers take (each test writes its own)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from shapely.geometry.base import BaseGeometry

DRIVERS = {"gpkg": "GPKG", "shp": "ESRI Shapefile", "fgb": "FlatGeobuf", "geojson": "GeoJSON"}
FORMATS = (*DRIVERS, "parquet")

# two fields near 51 N, 1.5 E in UTM zone 31N (EPSG:32631), metres
UTM_A = shapely.box(300_000, 5_650_000, 302_000, 5_652_000)
UTM_B = shapely.Polygon([(303_000, 5_650_000), (305_000, 5_650_500), (304_000, 5_653_000)])


def write_region_file(path: Path, geoms: list[BaseGeometry], *, crs: Any = "EPSG:32631",
                      props: dict[str, list[Any]] | None = None, geometry_type: str | None = None) -> Path:
    """Write ``geoms`` (in ``crs``) with ``props`` columns in the format of ``path``'s suffix."""
    columns: dict[str, Any] = {k: pa.array(v) for k, v in (props or {}).items()}
    wkb = pa.array([shapely.to_wkb(g) for g in geoms], pa.binary())
    suffix = path.suffix.lstrip(".")
    if suffix == "parquet":
        return write_geoparquet(path, wkb, columns, crs)
    import pyogrio

    table = pa.table({**columns, "geometry": wkb})
    kinds = {g.geom_type for g in geoms}
    pyogrio.write_arrow(table, str(path), driver=DRIVERS[suffix], geometry_name="geometry",
                        geometry_type=geometry_type or (kinds.pop() if len(kinds) == 1 else "Unknown"), crs=crs)
    return path


def write_geoparquet(path: Path, wkb: pa.Array, columns: dict[str, Any], crs: Any, *, geo: Any = "default") -> Path:
    """GeoParquet 1.1 with a WKB ``geometry`` column; ``crs`` as PROJJSON (None: an explicit null crs)."""
    from pyproj import CRS

    if geo == "default":
        column: dict[str, Any] = {"encoding": "WKB", "geometry_types": []}
        if crs != "omit":
            column["crs"] = None if crs is None else CRS.from_user_input(crs).to_json_dict()
        geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
    table = pa.table({**columns, "geometry": wkb})
    if geo is not None:
        table = table.replace_schema_metadata({b"geo": json.dumps(geo).encode()})
    pq.write_table(table, path)
    return path
