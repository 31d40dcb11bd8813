"""The ``psm`` command line: one module per command group, assembled here.

=================  ===========================================================
module             commands
=================  ===========================================================
``embed``          ``psm embed-region`` and ``celery -A worker embed_region``
``models``         ``psm register-model``
``jobs``           ``psm job``, ``psm submit-train``
``services``       ``psm services up|down|status``
``db``             ``psm db upgrade|downgrade|smoke``
``query``          ``psm query embed|index|list|rank``
``regions``        ``psm regions load|list``
``train``          ``psm train`` (in this process)
``eval``           ``psm eval``
``world``          ``psm world build``
``map``            ``psm map`` (a map file for a query and a region)
``dashboard``      ``psm dashboard`` (serve the installed dashboard)
=================  ===========================================================

The command line is the one place that reads the settings (``worker.cli.common.settings``);
``psm_db`` and ``psm_model`` hold no command-line code.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from worker.cli import dashboard, db, embed, jobs, models, query, regions, services, train, world
from worker.cli import eval as eval_
from worker.cli import map as map_
from worker.cli.embed import embed_region

app = typer.Typer(help="PSM Maps: probabilistic soundscape maps.", no_args_is_help=True)
# The order here is the order of `psm --help`.
app.add_typer(embed.app)
app.add_typer(models.app)
app.add_typer(jobs.app)
app.add_typer(services.app, name="services")
app.add_typer(db.app, name="db")
app.add_typer(query.app, name="query")
app.add_typer(regions.app, name="regions")
app.add_typer(train.app)
app.add_typer(eval_.app)
app.add_typer(world.app, name="world")
app.add_typer(map_.app)
app.add_typer(dashboard.app)

DISTRIBUTION = "psm-maps"


def package_version() -> str:
    """The installed ``psm-maps`` version (importlib.metadata)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # imported from a folder that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"psm {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    _version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                           help="Print the installed psm-maps version and exit.")] = False,
) -> None:
    """PSM Maps: probabilistic soundscape maps."""


def main() -> None:
    """Run the ``psm`` command line."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app()


__all__ = ["app", "embed_region", "main", "package_version"]
