"""What the command groups share: the settings, consoles, connections and waiting for a job.

The command line reads the settings (``psm_db.settings``) here and only here; the libraries
below it (``psm_db``, ``psm_model``) are handed URLs and values.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from psm_db.settings import Settings
    from psm_model.condition import Condition

console = Console(stderr=True)
"""Progress, errors and messages (stderr: stdout carries only ids and tables)."""
out_console = Console()
"""Tables and status lines of the psm_db-backed groups (stdout, as before the move)."""


def settings() -> Settings:
    """The process-wide settings (environment and ``PSM_*`` variables), read once."""
    from psm_db.settings import get_settings

    return get_settings()


def audio_limits() -> tuple[float, float]:
    """(longest, shortest) audio query clip in seconds, from the settings (for :func:`psm_model.encode_query`)."""
    s = settings()
    return s.max_audio_seconds, s.min_audio_seconds


def connect(url: str | None = None) -> AbstractContextManager[Connection]:
    """A SQLAlchemy connection to ``url`` (default: the writer URL of the settings), for a ``with`` block.

    The block's work is committed at its end, rolled back on an error (:func:`psm_db.engine.connection`).
    """
    from psm_db.engine import connection

    return connection(url or settings().db_url)


def engine() -> Any:
    """The SQLAlchemy engine on the writer URL of the settings (one per process, shared with :func:`connect`)."""
    from psm_db.engine import shared_engine

    return shared_engine(settings().db_url)


def resolve_model(version: str) -> Any:
    """The registered model version matching ``version`` (or a unique 8+ digit prefix)."""
    from psm_db.registry import get_model_version

    with connect() as conn:
        return get_model_version(conn, version)


CONDITION_HELP = ("a metadata condition, e.g. month=5,hour=20,audio=inaturalist,caption=metadata "
                  "(instead of --month, --hour, --audio-source, --caption-source)")


def condition(text: str | None, month: int | None, hour: int | None, audio_source: str | None,
              caption_source: str | None) -> Condition:
    """The condition of ``--condition TEXT`` or of the four flags (none given: every metadata left out).

    Raises:
        ValueError: On a bad condition, or both forms given.
    """
    from psm_model.condition import Condition

    if text is None:
        return Condition(month, hour, audio_source, caption_source)
    flags = {"month": month, "hour": hour, "audio_source": audio_source, "caption_source": caption_source}
    given = [k for k, v in flags.items() if v is not None]
    if given:
        named = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"give the condition either as --condition {text!r} or as {named}, not both")
    return Condition.parse(text)


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr; return the exit (code 1) to raise."""
    console.print(f"[red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(1)


def wait_for_job(db_url: str, job_id: str, *, timeout: float | None = None, poll: float = 0.5,
                 show: bool = True) -> dict[str, Any]:
    """Poll the job row until it finishes, with a progress bar; returns the final row."""
    from psm_db import jobs

    deadline = None if timeout is None else time.monotonic() + timeout
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[message]}")]
    with Progress(*columns, console=console, disable=not show, transient=False) as bar:
        task = bar.add_task(f"job {job_id[:8]}", total=None, message="queued")
        while True:
            with connect(db_url) as conn:
                row = jobs.get_job(conn, job_id)
            if row is None:
                raise click.ClickException(f"job {job_id} does not exist")
            bar.update(task, total=row["total"] or None, completed=row["done"],
                       message=row["message"] or row["status"])
            if row["status"] in jobs.FINAL_STATES:
                return row
            if deadline is not None and time.monotonic() > deadline:
                raise click.ClickException(f"job {job_id} is still {row['status']} after {timeout} s")
            time.sleep(poll)
