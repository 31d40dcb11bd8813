"""``psm db``: migrate the schema and run a smoke query."""

from __future__ import annotations

import typer

from worker.cli.common import connect, settings
from worker.cli.common import out_console as console

app = typer.Typer(help="Database schema and smoke checks.")


@app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply the Alembic migrations (same as `alembic upgrade head`)."""
    from psm_db import migrate

    migrate.upgrade(settings().db_url, revision)
    console.print(f"database at revision {migrate.current(settings().db_url)}")


@app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="target revision, e.g. base")) -> None:
    """Revert migrations down to REVISION."""
    from psm_db import migrate

    migrate.downgrade(settings().db_url, revision)
    console.print(f"database at revision {migrate.current(settings().db_url)}")


@app.command("smoke")
def db_smoke() -> None:
    """Run a CSD smoke query against the database and print the result."""
    with connect() as conn:
        row = conn.execute(
            "SELECT psm.csd('[1,0]', '[0.1,0.1]', '[0,1]', '[0.2,0.2]'),"
            " postgis_lib_version(), extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
    assert row is not None
    console.print(f"psm.csd([1,0],[.1,.1],[0,1],[.2,.2]) = {row[0]:.6f} (expected 2.600000); "
                  f"PostGIS {row[1]}, pgvector {row[2]}")
