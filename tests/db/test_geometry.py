"""psm_db.geometry: the one region parser (every form, the SRID and crs transforms, clear errors)."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pytest
import shapely
from region_files import FORMATS, UTM_A, UTM_B, write_region_file
from shapely.geometry import box
from sqlalchemy.orm import Session

from psm_db import geometry
from psm_db.geometry import parse_bbox, parse_region

EWKT_3857 = "SRID=3857;POLYGON((1 1,2 1,2 2,1 2,1 1))"
DEG_PER_M = 180 / (math.pi * 6_378_137)  # EPSG:3857's sphere, at the equator


def same(a, b, tolerance: float = 1e-15) -> bool:
    """The same polygon, vertex for vertex (up to ring start and orientation)."""
    return bool(shapely.equals_exact(shapely.normalize(a), shapely.normalize(b), tolerance))


def test_ewkt_srid_is_transformed_to_lon_lat():
    geom = parse_region(EWKT_3857)
    w, s, e, n = geom.bounds
    assert w == pytest.approx(DEG_PER_M, rel=1e-6) and e == pytest.approx(2 * DEG_PER_M, rel=1e-6)
    assert s == pytest.approx(DEG_PER_M, rel=1e-3) and n == pytest.approx(2 * DEG_PER_M, rel=1e-3)
    assert geom.area < 1e-9  # a square metre near (0, 0), not a 1 x 1 degree box
    # the same as the plain WKT given with srid=, and as PostGIS's ST_Transform
    assert same(parse_region("POLYGON((1 1,2 1,2 2,1 2,1 1))", srid=3857), geom, 1e-15)
    assert same(parse_region(box(1, 1, 2, 2), srid=3857), geom, 1e-15)


def test_ewkt_matches_postgis(conn):
    wkb = conn.execute("SELECT ST_AsBinary(ST_Transform(ST_GeomFromEWKT(%s), 4326))", (EWKT_3857,)).fetchone()[0]
    assert same(shapely.from_wkb(bytes(wkb)), parse_region(EWKT_3857), 1e-12)


def test_geojson_crs_member_is_honoured(tmp_path):
    expected = parse_region(EWKT_3857)
    poly = shapely.geometry.mapping(box(1, 1, 2, 2))
    for name in ("EPSG:3857", "urn:ogc:def:crs:EPSG::3857", "urn:ogc:def:crs:EPSG:6.18.3:3857"):
        obj = {"type": "Feature", "properties": {}, "geometry": poly,
               "crs": {"type": "name", "properties": {"name": name}}}
        assert same(parse_region(json.dumps(obj)), expected, 1e-15), name
    fc = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:3857"}},
          "features": [{"type": "Feature", "properties": {}, "geometry": poly}]}
    f = tmp_path / "metres.geojson"
    f.write_text(json.dumps(fc))
    assert same(parse_region(str(f)), expected, 1e-15)
    crs84 = {**poly, "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}}
    assert parse_region(crs84).bounds == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="cannot read the GeoJSON crs member"):
        parse_region({**poly, "crs": {"type": "name", "properties": {"name": "my own"}}})
    with pytest.raises(ValueError, match="unknown SRID 999999"):
        parse_region({**poly, "crs": {"type": "name", "properties": {"name": "EPSG:999999"}}})


def test_forms_agree(tmp_path):
    ref = box(1, 2, 3, 4)
    f = tmp_path / "r.wkt"
    f.write_text(ref.wkt)
    forms = ["1,2,3,4", "1 2 3 4", "1;2;3;4", ref.wkt, f"SRID=4326;{ref.wkt}", json.dumps(shapely.geometry.mapping(ref)),
             shapely.geometry.mapping(ref), ref, str(f)]
    for form in forms:
        assert parse_region(form).equals(ref), form
    assert parse_region(None) is None


@pytest.mark.parametrize("text, message", [
    ("1,2,3", "four numbers west, south, east, north"),
    ("a,b,c,d", "cannot read the region"),
    ("1,4,3,2", r"empty: west \(1\) must be < east \(3\) and south \(4\) < north \(2\)"),
    ("3,2,1,4", "empty: west"),
    ("0,-95,1,1", "outside lon/lat bounds: longitudes must be in -180..180 and latitudes in -90..90"),
    ("0,0,1,91", "latitudes in -90..90"),
    ("-181,0,1,1", "outside lon/lat bounds"),
    ("0,0,inf,1", "finite numbers"),
    ("", "the region is empty"),
    ("   ", "the region is empty"),
    ("POLYGON((0 0, 1 1, 1 0, 0 1, 0 0))", "not valid: Self-intersection.*make_valid"),
    ("POLYGON((0 0, 1 0", "not valid WKT"),
    ("POLYGON EMPTY", "empty"),
    ("POINT(1 2)", "must be a Polygon or MultiPolygon, got Point; buffer"),
    ('{"type": "LineString", "coordinates": [[0, 0], [1, 1]]}', "got LineString"),
    ('{"type": "FeatureCollection", "features": []}', "holds no geometry"),
    ('{"a": 1}', "not GeoJSON"),
    ("{oops", "not valid JSON"),
    ("SRID=123456;POLYGON((0 0, 1 0, 1 1, 0 1, 0 0))", "unknown SRID 123456; give the region in EPSG:4326"),
    ("POLYGON((-11e6 4e6, -10e6 4e6, -10e6 5e6, -11e6 4e6))", "outside lon/lat bounds.*SRID=3857"),
    ("somewhere", "cannot read the region as WKT or GeoJSON"),
    ("demo/forest", "needs a database connection"),
])
def test_bad_regions_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_region(text)


def test_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_region(str(tmp_path / "missing.geojson"))
    (tmp_path / "empty.wkt").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        parse_region(str(tmp_path / "empty.wkt"))
    with pytest.raises(ValueError, match="region files are not read here"):
        parse_region("/etc/passwd.json", files=False)


def test_bbox_alone():
    assert parse_bbox("-91, 40, -90, 41").bounds == (-91, 40, -90, 41)
    # in another SRID the numbers are not degrees: no lon/lat range check before the transform
    assert same(parse_bbox("1,1,2,2", srid=3857), parse_region(EWKT_3857))


def test_stored_regions_by_set_and_name(db, conn, db_url):
    from psm_db.engine import make_engine

    conn.execute("INSERT INTO psm.region_sets (name) VALUES ('geom-test') ON CONFLICT DO NOTHING")
    conn.execute("INSERT INTO psm.regions (set_name, name, geom) VALUES ('geom-test', 'square',"
                 " ST_Multi(ST_MakeEnvelope(1, 2, 3, 4, 4326))) ON CONFLICT DO NOTHING")
    conn.commit()
    try:
        assert parse_region("geom-test/square", db=db).bounds == (1, 2, 3, 4)
        engine = make_engine(db_url)
        with Session(engine) as session:
            assert parse_region("geom-test/square", db=session).bounds == (1, 2, 3, 4)
            with pytest.raises(ValueError, match="unknown stored region 'geom-test/round'.*psm regions list"):
                parse_region("geom-test/round", db=session)
        with engine.connect() as c:
            assert parse_region(" geom-test/square ", db=c).bounds == (1, 2, 3, 4)
        engine.dispose()
    finally:
        conn.execute("DELETE FROM psm.region_sets WHERE name = 'geom-test'")
        conn.commit()


def test_region_arg_is_wkb_in_4326(conn):
    from sqlalchemy import select
    from sqlalchemy.dialects import postgresql

    stmt = select(geometry.region_arg(EWKT_3857))
    compiled = stmt.compile(dialect=postgresql.psycopg.dialect())
    assert "ST_GeomFromWKB" in str(compiled)


# --------------------------------------------------------------------------- region files


def _utm_to_lonlat(geom):
    from pyproj import Transformer

    t = Transformer.from_crs(32631, 4326, always_xy=True)
    return shapely.transform(geom, t.transform, interleaved=False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_region_files_are_reprojected_and_unioned(tmp_path, fmt):
    path = write_region_file(tmp_path / f"fields.{fmt}", [UTM_A, UTM_B], props={"name": ["a", "b"]})
    region = parse_region(str(path))
    expected = _utm_to_lonlat(shapely.union_all([UTM_A, UTM_B]))
    assert region.geom_type == "MultiPolygon" and len(region.geoms) == 2
    assert region.symmetric_difference(expected).area < 1e-6 * expected.area
    w, s, e, n = region.bounds
    assert 0.1 < w < e < 0.3 and 50.9 < s < n < 51.1  # lon/lat near 51 N, 0.2 E, not metres
    # the same polygon as the EWKT of the union in the file's CRS
    ewkt = parse_region(f"SRID=32631;{shapely.union_all([UTM_A, UTM_B]).wkt}")
    assert region.symmetric_difference(ewkt).area < 1e-6 * expected.area


def test_region_files_in_lon_lat_and_zipped_shapefiles(tmp_path):
    import zipfile

    square = shapely.box(5, 45, 6, 46)
    gpkg = write_region_file(tmp_path / "ll.gpkg", [square], crs="EPSG:4326")
    assert parse_region(str(gpkg)).equals(square)
    pq_file = write_region_file(tmp_path / "crs84.parquet", [square], crs="omit")  # no crs key: OGC:CRS84
    assert parse_region(str(pq_file)).equals(square)
    shp = write_region_file(tmp_path / "sq.shp", [square], crs="EPSG:4326")
    with zipfile.ZipFile(tmp_path / "sq.zip", "w") as z:
        for part in tmp_path.glob("sq.*"):
            if part.suffix != ".zip":
                z.write(part, part.name)
    assert parse_region(str(tmp_path / "sq.zip")).equals(parse_region(str(shp)))


def test_bad_region_files_say_what_is_wrong(tmp_path):
    from region_files import write_geoparquet

    line = shapely.LineString([(300_000, 5_650_000), (301_000, 5_651_000)])
    cases = [
        (write_region_file(tmp_path / "nocrs.shp", [UTM_A], crs=None), "has no CRS"),
        (write_region_file(tmp_path / "nullcrs.parquet", [UTM_A], crs=None), "has no CRS"),
        (write_region_file(tmp_path / "line.gpkg", [line]), "holds LineString geometries"),
        (write_region_file(tmp_path / "line.parquet", [line]), "holds LineString geometries"),
        (write_region_file(tmp_path / "empty.fgb", [], geometry_type="Polygon"), "holds no features"),
        (write_region_file(tmp_path / "empty.parquet", []), "holds no features"),
        (write_geoparquet(tmp_path / "plain.parquet", pa.array([UTM_A.wkb], pa.binary()), {}, None, geo=None),
         "without GeoParquet metadata"),
        (write_geoparquet(tmp_path / "native.parquet", pa.array([UTM_A.wkb], pa.binary()), {}, None,
                          geo={"version": "1.1.0", "primary_column": "geometry",
                               "columns": {"geometry": {"encoding": "polygon"}}}), "only WKB"),
    ]
    (tmp_path / "r.kml").write_text("<kml/>")
    (tmp_path / "r.csv").write_text("wkt\n")
    cases += [(tmp_path / "r.kml", "unknown region file format '.kml'"),
              (tmp_path / "r.csv", "unknown region file format '.csv'"),
              (tmp_path / "junk.gpkg", "cannot read")]
    (tmp_path / "junk.gpkg").write_bytes(b"not a geopackage")
    for path, message in cases:
        with pytest.raises(ValueError, match=message):
            parse_region(str(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_region(str(tmp_path / "missing.gpkg"))
    with pytest.raises(ValueError, match="region files are not read here"):
        parse_region(str(tmp_path / "line.gpkg"), files=False)
    # a GeoPackage with two layers must say which
    two = write_region_file(tmp_path / "two.gpkg", [UTM_A])
    import pyogrio

    pyogrio.write_arrow(pa.table({"geometry": pa.array([UTM_B.wkb], pa.binary())}), str(two), layer="more",
                        driver="GPKG", geometry_name="geometry", geometry_type="Polygon", crs="EPSG:32631",
                        append=False)
    with pytest.raises(ValueError, match="holds 2 layers"):
        parse_region(str(two))
