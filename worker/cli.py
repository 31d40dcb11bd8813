"""The ``psm`` command line: one entry point over the library, storage and worker commands."""

from __future__ import annotations

import logging

import typer

from psm_db.cli import db_app, services_app
from psm_db.query_cli import query_app, regions_app

app = typer.Typer(help="PSM Maps: probabilistic soundscape maps.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(db_app, name="db")
app.add_typer(query_app, name="query")
app.add_typer(regions_app, name="regions")


def main() -> None:
    """Run the ``psm`` command line."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app()
