"""The ``psm`` command line and the ``celery -A worker embed_region`` subcommand."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from psm_db.cli import db_app, services_app
from psm_db.query_cli import query_app, regions_app

console = Console(stderr=True)

app = typer.Typer(help="PSM Maps: probabilistic soundscape maps.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(db_app, name="db")
app.add_typer(query_app, name="query")
app.add_typer(regions_app, name="regions")


# --------------------------------------------------------------------------- helpers


def _celery_app(ctx: click.Context | None) -> Any:
    found = getattr(ctx.obj, "app", None) if ctx is not None and ctx.obj is not None else None
    if found is not None:
        return found
    from worker.celery import app as celery_app

    return celery_app


def _connect(url: str) -> Any:
    from psm_db.engine import connect

    return connect(url)


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
            with _connect(db_url) as conn:
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


def _zooms(values: tuple[str, ...]) -> tuple[int, ...]:
    out: list[int] = []
    for v in values or ("1",):
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(int(part))
            except ValueError as e:
                raise click.BadParameter(f"zoom levels are integers, got {part!r}", param_hint="--zoom") from e
    return tuple(out)


# --------------------------------------------------------------------------- embed_region


def _embed_region(ctx: click.Context | None, **kw: Any) -> None:
    from psm_db.settings import get_settings
    from worker.embed import ConditionSpec, EmbedRequest, Limits, submit
    from worker.imagery import ImagerySpec

    settings = get_settings()
    celery_app = _celery_app(ctx)
    try:
        conditions: list[ConditionSpec] = [ConditionSpec.parse(c) for c in kw["condition"]]
        single = {k: kw[k] for k in ("month", "hour", "audio_source", "caption_source") if kw[k] is not None}
        if single or not conditions:
            conditions.insert(0, ConditionSpec(**single))
        request = EmbedRequest(
            region=kw["region"],
            model_version=kw["model"],
            zooms=_zooms(kw["zoom"]),
            imagery=ImagerySpec(kind=kw["imagery"], path=kw["imagery_path"], seed=kw["seed"],
                                imagery=kw["world_imagery"], gsd=kw["gsd"], size_px=kw["size_px"],
                                name=kw["source_name"]),
            conditions=tuple(conditions),
            chunk_tiles=kw["chunk_tiles"],
        )
    except ValueError as e:
        _reject(settings.db_url, {k: str(v) for k, v in kw.items()}, str(e))
        return
    limits = Limits(max_region_tiles=settings.max_region_tiles, chunk_tiles=settings.chunk_tiles,
                    batch_size=settings.embed_batch_size)

    def send(job_id: str) -> str:
        return str(celery_app.send_task("psm.embed_region", args=[job_id]).id)

    try:
        with _connect(settings.db_url) as conn:
            job_id, plan = submit(conn, request, limits, send)
    except (ValueError, LookupError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        console.print("nothing was queued; the rejected request is kept as a failed job")
        raise SystemExit(2) from e
    console.print(f"queued {plan.total} tiles x {len(plan.conditions)} condition(s) in "
                  f"{len(plan.chunks)} chunk(s); model {plan.model.version}")
    click.echo(str(job_id))
    if kw["wait"]:
        row = wait_for_job(settings.db_url, str(job_id), timeout=kw["timeout"], show=sys.stderr.isatty()
                           or kw["progress"])
        if row["status"] != "succeeded":
            console.print(f"[red]job {job_id} {row['status']}:[/] {row['error'] or row['message']}")
            raise SystemExit(1)
        console.print(f"[green]job {job_id} succeeded:[/] {row['message']}")


def _reject(db_url: str, params: dict[str, Any], error: str) -> None:
    from psm_db import jobs

    console.print(f"[red]error:[/] {error}")
    try:
        with _connect(db_url) as conn:
            jobs.record_rejected(conn, "embed_region", params, f"invalid request: {error}")
    except Exception as e:  # noqa: BLE001 - the message above is what matters
        console.print(f"(could not record the rejected job: {e})")
    console.print("nothing was queued")
    raise SystemExit(2)


def _embed_options(fn: Any) -> Any:
    options = [
        click.option("--region", "-r", required=True,
                     help="bbox minlon,minlat,maxlon,maxlat; WKT or GeoJSON polygon (text or file); "
                          "or a stored region set/name"),
        click.option("--model", "-m", required=True, help="registered model version (or an 8+ digit prefix)"),
        click.option("--zoom", "-z", multiple=True, help="zoom level(s), repeat or comma-separate (default 1)"),
        click.option("--imagery", type=click.Choice(["world", "geotiff", "folder"]), default="world",
                     show_default=True, help="imagery source"),
        click.option("--imagery-path", default=None, help="GeoTIFF/COG file, or folder of GeoTIFF tiles"),
        click.option("--seed", type=int, default=0, show_default=True, help="synthetic world seed"),
        click.option("--world-imagery", default="sentinel", show_default=True,
                     help="synthetic world imagery kind (sentinel, highres)"),
        click.option("--gsd", type=float, default=None,
                     help="metres per pixel at zoom 1 (default: the source's own)"),
        click.option("--size-px", type=int, default=256, show_default=True, help="tile size in pixels at zoom 1"),
        click.option("--source-name", default=None, help="name the tiles are stored under"),
        click.option("--condition", "-c", multiple=True,
                     help="a metadata condition, e.g. month=5,hour=20,audio=inaturalist,caption=metadata; "
                          "repeat for more"),
        click.option("--month", type=int, default=None, help="month 1..12 of a single condition"),
        click.option("--hour", type=int, default=None, help="hour 0..23 of a single condition"),
        click.option("--audio-source", default=None, help="audio source of a single condition"),
        click.option("--caption-source", default=None, help="caption source of a single condition"),
        click.option("--chunk-tiles", type=int, default=None, help="tiles per chunk (default PSM_CHUNK_TILES)"),
        click.option("--wait/--no-wait", default=False, help="show progress until the job finishes"),
        click.option("--progress/--no-progress", default=True, help="draw the bar even when not a TTY"),
        click.option("--timeout", type=float, default=None, help="give up waiting after this many seconds"),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def _make_celery_command() -> click.Command:
    try:
        from celery.bin.base import CeleryCommand
    except ImportError:  # pragma: no cover - celery is a dependency
        CeleryCommand = click.Command  # noqa: N806

    @click.command(name="embed_region", cls=CeleryCommand,
                   help="Validate and queue a region embedding job (psm.embed_region); prints the job id.")
    @_embed_options
    @click.pass_context
    def embed_region_cmd(ctx: click.Context, **kw: Any) -> None:
        _embed_region(ctx, **kw)

    return embed_region_cmd


embed_region = _make_celery_command()
"""``celery -A worker embed_region ...`` (registered via the ``celery.commands`` entry point)."""


@app.command("embed-region")
def embed_region_psm(
    region: str = typer.Option(..., "--region", "-r", help="bbox minlon,minlat,maxlon,maxlat; WKT or "
                               "GeoJSON polygon (text or file); or a stored region set/name"),
    model: str = typer.Option(..., "--model", "-m", help="registered model version (or an 8+ digit prefix)"),
    zoom: list[str] = typer.Option(None, "--zoom", "-z", help="zoom level(s), repeat or comma-separate"),
    imagery: str = typer.Option("world", help="imagery source: world, geotiff or folder"),
    imagery_path: str = typer.Option(None, help="GeoTIFF/COG file, or folder of GeoTIFF tiles"),
    seed: int = typer.Option(0, help="synthetic world seed"),
    world_imagery: str = typer.Option("sentinel", help="synthetic world imagery kind (sentinel, highres)"),
    gsd: float = typer.Option(None, help="metres per pixel at zoom 1 (default: the source's own)"),
    size_px: int = typer.Option(256, help="tile size in pixels at zoom 1"),
    source_name: str = typer.Option(None, help="name the tiles are stored under"),
    condition: list[str] = typer.Option(None, "--condition", "-c",
                                        help="e.g. month=5,hour=20,audio=inaturalist; repeat for more"),
    month: int = typer.Option(None, help="month 1..12 of a single condition"),
    hour: int = typer.Option(None, help="hour 0..23 of a single condition"),
    audio_source: str = typer.Option(None, help="audio source of a single condition"),
    caption_source: str = typer.Option(None, help="caption source of a single condition"),
    chunk_tiles: int = typer.Option(None, help="tiles per chunk (default PSM_CHUNK_TILES)"),
    wait: bool = typer.Option(False, help="show progress until the job finishes"),
    progress: bool = typer.Option(True, help="draw the bar even when not a TTY"),
    timeout: float = typer.Option(None, help="give up waiting after this many seconds"),
) -> None:
    """Validate and queue a region embedding job (same as `celery -A worker embed_region`)."""
    if imagery not in ("world", "geotiff", "folder"):
        console.print(f"[red]error:[/] --imagery must be world, geotiff or folder, got {imagery!r}")
        raise typer.Exit(2)
    kw = dict(locals())
    kw["zoom"] = tuple(zoom or ())
    kw["condition"] = tuple(condition or ())
    try:
        _embed_region(None, **kw)
    except click.ClickException as e:
        console.print(f"[red]error:[/] {e.message}")
        raise typer.Exit(1) from e


# --------------------------------------------------------------------------- other commands


@app.command("register-model")
def register_model_cmd(
    checkpoint: Path = typer.Argument(..., help="a checkpoint written by psm_model.save_checkpoint"),
    name: str = typer.Option(None, help="a readable name for the version"),
) -> None:
    """Register a checkpoint as a model version (embeddings are keyed by it); prints the version."""
    from psm_db.registry import register_model
    from psm_db.settings import get_settings

    try:
        with _connect(get_settings().db_url) as conn:
            mv = register_model(conn, checkpoint, name=name)
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e
    console.print(f"registered {mv.name}: preset {mv.preset}, d={mv.embed_dim}, features {mv.feature_dim}")
    typer.echo(mv.version)


@app.command("job")
def job_cmd(
    job_id: str = typer.Argument(..., help="a job id printed by embed-region or train"),
    wait: bool = typer.Option(False, help="show progress until the job finishes"),
    resume: bool = typer.Option(False, help="re-send an unfinished embed_region job's missing chunks "
                                "(after a broker lost its queue); safe to repeat"),
) -> None:
    """Show a job's status, progress, error and events."""
    from psm_db import jobs
    from psm_db.settings import get_settings

    try:
        uuid.UUID(job_id)
    except ValueError as e:
        console.print(f"[red]error:[/] {job_id!r} is not a job id (a UUID)")
        raise typer.Exit(2) from e
    db_url = get_settings().db_url
    if resume:
        from worker.celery import app as celery_app

        task = celery_app.send_task("psm.embed_region", args=[job_id])
        console.print(f"re-sent job {job_id} (task {task.id}); finished chunks are skipped")
    if wait:
        wait_for_job(db_url, job_id)
    with _connect(db_url) as conn:
        row = jobs.get_job(conn, job_id)
        if row is None:
            console.print(f"[red]error:[/] job {job_id} does not exist")
            raise typer.Exit(1)
        events = jobs.job_events(conn, job_id)
    typer.echo(f"{row['id']} {row['kind']} {row['status']} {row['done']}/{row['total']} {row['message'] or ''}")
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
    name: str = typer.Option(None, help="a readable name for the version"),
    wait: bool = typer.Option(False, help="show progress until the job finishes"),
) -> None:
    """Queue a psm.train job on the workers; prints the job id."""
    from psm_db.settings import get_settings
    from worker.celery import app as celery_app
    from worker.training import TrainRequest, submit_training

    options = {"max_minutes": max_minutes} if max_minutes else {}
    request = TrainRequest(str(dataset_dir.resolve()), preset, loss, use_metadata, epochs, options=options,
                           name=name)
    db_url = get_settings().db_url
    try:
        with _connect(db_url) as conn:
            job_id = submit_training(conn, request,
                                     lambda j: str(celery_app.send_task("psm.train", args=[j]).id))
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e
    typer.echo(str(job_id))
    if wait:
        row = wait_for_job(db_url, str(job_id))
        if row["status"] != "succeeded":
            console.print(f"[red]training {row['status']}:[/] {row['error']}")
            raise typer.Exit(1)


def _mount_optional() -> None:
    """Mount command groups of packages that may not be installed yet (the model library's CLI)."""
    try:
        from psm_model.cli import app as model_app  # type: ignore[import-not-found]
    except ImportError:
        return
    app.add_typer(model_app)


_mount_optional()


def main() -> None:
    """Run the ``psm`` command line."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app()
