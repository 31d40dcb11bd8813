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
=================  ===========================================================

The command line is the one place that reads the settings (``worker.cli.common.settings``);
``psm_db`` and ``psm_model`` hold no command-line code.
"""

from __future__ import annotations

import logging

import typer

from worker.cli import db, embed, jobs, models, query, regions, services, train, world
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


def main() -> None:
    """Run the ``psm`` command line."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app()


__all__ = ["app", "embed_region", "main"]
