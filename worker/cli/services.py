"""``psm services``: start, stop and inspect the project-managed PostgreSQL and Redis."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from worker.cli.common import out_console as console
from worker.cli.common import settings

if TYPE_CHECKING:
    from psm_db.services import ServiceStatus

app = typer.Typer(help="Start, stop and inspect the project-managed PostgreSQL and Redis.")


def _print_status(rows: list[ServiceStatus]) -> None:
    for row in rows:
        state = "[green]running[/]" if row.running else "[red]not running[/]"
        owner = "managed" if row.managed else "external"
        console.print(f"{row.name:<9} {state:<22} {owner:<8} {row.url}  ({row.detail})", soft_wrap=True)


@app.command("up")
def services_up() -> None:
    """Start PostgreSQL (PostGIS + pgvector) and Redis under PSM_HOME; safe to run twice."""
    from psm_db import services
    from psm_db.errors import ServiceError

    try:
        rows = services.up(settings(), watchdog=True)
    except ServiceError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from e
    _print_status(rows)


@app.command("down")
def services_down() -> None:
    """Stop the project-managed services (external servers are left alone)."""
    from psm_db import services
    from psm_db.errors import ServiceError

    try:
        rows = services.down(settings())
    except ServiceError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from e
    _print_status(rows)


@app.command("status")
def services_status() -> None:
    """Say what is running and which URLs to use."""
    from psm_db import services

    _print_status(services.status(settings()))


@app.command("watchdog")
def services_watchdog() -> None:
    """Bound the read-only role's statements in the foreground (what `psm services up` starts).

    Cancels every psm_reader statement running longer than PSM_READER_STATEMENT_LIMIT (default
    PSM_QUERY_TIMEOUT_MS) whatever its session set, and puts back psm_reader's role defaults when a
    reader lifted them. Run it beside a database you run yourself (PSM_DATABASE_URL, on a role that
    may signal other backends and alter psm_reader: a superuser, or pg_signal_backend and CREATEROLE).
    """
    import logging

    from psm_db import services

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        services.watchdog(settings())
    except KeyboardInterrupt:
        pass
