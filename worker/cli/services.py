"""The ``psm services`` and ``psm db`` command groups."""

from __future__ import annotations

import typer
from rich.console import Console

from psm_db import migrate, services
from psm_db.errors import ServiceError
from psm_db.settings import get_settings

console = Console()
services_app = typer.Typer(help="Start, stop and inspect the project-managed PostgreSQL and Redis.")
db_app = typer.Typer(help="Database schema and smoke checks.")


def _print_status(rows: list[services.ServiceStatus]) -> None:
    for row in rows:
        state = "[green]running[/]" if row.running else "[red]not running[/]"
        owner = "managed" if row.managed else "external"
        console.print(f"{row.name:<9} {state:<22} {owner:<8} {row.url}  ({row.detail})", soft_wrap=True)


@services_app.command("up")
def services_up() -> None:
    """Start PostgreSQL (PostGIS + pgvector) and Redis under PSM_HOME; safe to run twice."""
    try:
        rows = services.up(get_settings())
    except ServiceError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from e
    _print_status(rows)


@services_app.command("down")
def services_down() -> None:
    """Stop the project-managed services (external servers are left alone)."""
    try:
        rows = services.down(get_settings())
    except ServiceError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from e
    _print_status(rows)


@services_app.command("status")
def services_status() -> None:
    """Say what is running and which URLs to use."""
    _print_status(services.status(get_settings()))


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply the Alembic migrations (same as `alembic upgrade head`)."""
    migrate.upgrade(get_settings().db_url, revision)
    console.print(f"database at revision {migrate.current(get_settings().db_url)}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="target revision, e.g. base")) -> None:
    """Revert migrations down to REVISION."""
    migrate.downgrade(get_settings().db_url, revision)
    console.print(f"database at revision {migrate.current(get_settings().db_url)}")


@db_app.command("smoke")
def db_smoke() -> None:
    """Run a CSD smoke query against the database and print the result."""
    from psm_db.engine import connect

    with connect(get_settings().db_url) as conn:
        row = conn.execute(
            "SELECT psm.csd('[1,0]', '[0.1,0.1]', '[0,1]', '[0.2,0.2]'),"
            " postgis_lib_version(), extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
    assert row is not None
    console.print(f"psm.csd([1,0],[.1,.1],[0,1],[.2,.2]) = {row[0]:.6f} (expected 2.600000); "
                  f"PostGIS {row[1]}, pgvector {row[2]}")
