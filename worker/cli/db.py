"""``psm db``: migrate the schema and run a smoke query."""

from __future__ import annotations

from typing import Any

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


@app.command("url")
def db_url(reader: bool = typer.Option(False, "--reader", help="the read-only role's URL (the dashboard's)")) -> None:
    """Print the database URL with its password, for psql: psql "$(psm db url --reader)"."""
    s = settings()
    typer.echo(s.reader_url if reader else s.db_url)


@app.command("smoke")
def db_smoke() -> None:
    """Run a CSD smoke query against the database and print the result."""
    from pgvector.sqlalchemy import Vector
    from sqlalchemy import column, func, literal, select, table

    from psm_db.functions import Csd

    def vec(*values: float) -> Any:
        return literal(list(values), Vector())

    ext = table("pg_extension", column("extname"), column("extversion"))
    with connect() as conn:
        row = conn.execute(
            select(Csd(vec(1, 0), vec(0.1, 0.1), vec(0, 1), vec(0.2, 0.2)),
                   func.postgis_lib_version(), ext.c.extversion).where(ext.c.extname == "vector")
        ).first()
    assert row is not None
    console.print(f"psm.csd([1,0],[.1,.1],[0,1],[.2,.2]) = {row[0]:.6f} (expected 2.600000); "
                  f"PostGIS {row[1]}, pgvector {row[2]}")
