"""``psm job`` and ``psm submit-train``: follow worker jobs, and queue training on the workers."""

from __future__ import annotations

import uuid
from pathlib import Path

import typer

from worker.cli.common import connect, console, settings, wait_for_job

app = typer.Typer()


@app.command("job")
def job_cmd(
    job_id: str = typer.Argument(..., help="a job id printed by embed-region or train"),
    wait: bool = typer.Option(False, help="show progress until the job finishes"),
    resume: bool = typer.Option(False, help="re-send an unfinished embed_region job's missing chunks "
                                "(after a broker lost its queue); safe to repeat"),
) -> None:
    """Show a job's status, progress, error and events."""
    from psm_db import jobs

    try:
        uuid.UUID(job_id)
    except ValueError as e:
        console.print(f"[red]error:[/] {job_id!r} is not a job id (a UUID)")
        raise typer.Exit(2) from e
    db_url = settings().db_url
    if resume:
        from psm_db.errors import BrokerUnavailableError
        from worker.api import send_task

        try:
            task_id = send_task("psm.embed_region", job_id)
        except BrokerUnavailableError as e:
            console.print(f"[red]error:[/] {e}", soft_wrap=True)
            raise typer.Exit(1) from e
        console.print(f"re-sent job {job_id} (task {task_id}); finished chunks are skipped")
    if wait:
        wait_for_job(db_url, job_id)
    with connect(db_url) as conn:
        row = jobs.get_job(conn, job_id)
        if row is None:
            console.print(f"[red]error:[/] job {job_id} does not exist")
            raise typer.Exit(1)
        events = jobs.job_events(conn, job_id)
        lease = settings().chunk_lease
        stale = jobs.stale_chunks(conn, job_id, lease) if row["status"] == "running" else []
    typer.echo(f"{row['id']} {row['kind']} {row['status']} {row['done']}/{row['total']} {row['message'] or ''}")
    for c in stale:
        typer.echo(f"stale: chunk {c['chunk']} is marked running on {c['worker'] or 'an unknown worker'} but sent "
                   f"no heartbeat for {c['silent_s']:.0f} s (PSM_CHUNK_LEASE {lease:g} s): its worker is gone; "
                   "a running worker re-queues it (start one if none runs)")
    result = row["result"] or {}
    if result.get("tiles_skipped_nodata"):
        min_valid = ((row["params"] or {}).get("imagery") or {}).get("min_valid", 0.5)
        typer.echo(f"skipped for lack of data: {result['tiles_skipped_nodata']} tile(s) (under "
                   f"{float(min_valid):.0%} of their pixels hold data)")
    if row["error"]:
        typer.echo(f"error: {row['error']}")
    for level, message in events[-20:]:
        typer.echo(f"  [{level}] {message}")
    if row["status"] == "failed":
        raise typer.Exit(1)


@app.command("submit-train")
def train_cmd(
    dataset_dir: Path = typer.Argument(..., help="a dataset folder (psm world build)"),
    preset: str = typer.Option("tiny", help="model preset: tiny, demo, paper"),
    loss: str = typer.Option("pcmepp", help="pcmepp or infonce"),
    use_metadata: bool = typer.Option(True, help="fuse metadata (month, hour, sources, lat/lon)"),
    epochs: int = typer.Option(None, min=1, help="passes over the data (default: the preset's)"),
    max_minutes: float = typer.Option(None, help="wall-time budget of the run"),
    min_steps: int = typer.Option(None, min=1, help="with --max-minutes: train at least this many steps"),
    name: str = typer.Option(None, help="a readable name for the version"),
    wait: bool = typer.Option(False, help="show progress until the job finishes"),
) -> None:
    """Queue a psm.train job on the workers; prints the job id."""
    from psm_db.errors import BrokerUnavailableError
    from worker.api import submit_training

    options: dict[str, float | int] = {"max_minutes": max_minutes} if max_minutes else {}
    if min_steps:
        options["min_steps"] = min_steps
    db_url = settings().db_url
    try:
        with connect(db_url) as conn:
            job_id = submit_training(conn, dataset_dir=str(dataset_dir.resolve()), preset=preset, loss=loss,
                                     use_metadata=use_metadata, epochs=epochs, options=options, name=name)
    except BrokerUnavailableError as e:
        console.print(f"[red]error:[/] {e}", soft_wrap=True)
        console.print("the job is kept as a failed job with this message")
        raise typer.Exit(1) from e
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e
    typer.echo(str(job_id))
    if wait:
        row = wait_for_job(db_url, str(job_id))
        if row["status"] != "succeeded":
            console.print(f"[red]training {row['status']}:[/] {row['error']}")
            raise typer.Exit(1)
