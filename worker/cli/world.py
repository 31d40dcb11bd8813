"""``psm world``: build synthetic world datasets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Synthetic world: build datasets from a seeded world.", no_args_is_help=True
)


def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError as e:
        raise typer.BadParameter(f"{what} must be {n} comma-separated numbers, got {text!r}") from e
    if len(vals) != n:
        raise typer.BadParameter(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return vals


@app.command("build")
def world_build(
    out: Annotated[Path, typer.Option("--out", help="Output folder for the dataset.")],
    seed: Annotated[int, typer.Option(help="World seed: same seed, same bytes.")] = 0,
    samples: Annotated[int, typer.Option(help="Number of samples.")] = 20_000,
    image_size: Annotated[int, typer.Option(help="Stored tile size (pixels) per zoom level.")] = 48,
    imagery: Annotated[
        str, typer.Option(help="Imagery kind: sentinel (10 m GSD) or highres (0.6 m).")
    ] = "sentinel",
    gsd: Annotated[
        float | None,
        typer.Option(help="Override the imagery kind's GSD (metres per pixel at zoom 1)."),
    ] = None,
    zooms: Annotated[
        str, typer.Option(help="Zoom levels to store, comma-separated (each in 1..5).")
    ] = "1,3,5",
    sample_rate: Annotated[int, typer.Option(help="Audio sample rate (Hz).")] = 16_000,
    clip_seconds: Annotated[float, typer.Option(help="Clip length (seconds).")] = 4.0,
    cell_deg: Annotated[
        float, typer.Option(help="Split cell size in degrees (GeoSound: 1).")
    ] = 1.0,
    cell_km: Annotated[
        float | None, typer.Option(help="Split cell size in km instead (SoundingEarth: 10).")
    ] = None,
    split: Annotated[str, typer.Option(help="Train,val,test shares of cells.")] = "0.8,0.1,0.1",
    shard_size: Annotated[int, typer.Option(help="Samples per shard file.")] = 1000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    caption_context: Annotated[
        bool,
        typer.Option(
            help="Captions may also name the month, time of day and a source tag (metadata the "
            "image side is given too: a leak; off by default)."
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Build a synthetic world dataset: shards of images and audio, index.parquet and world.json."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from psm_model.world.build import BuildConfig, build_world

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        zoom_t = tuple(int(z) for z in zooms.split(","))
    except ValueError as e:
        raise typer.BadParameter(f"--zooms must be comma-separated integers, got {zooms!r}") from e
    fr = _floats(split, 3, "--split")
    cfg = BuildConfig(
        seed=seed,
        samples=samples,
        image_size=image_size,
        imagery=imagery,
        gsd=gsd,
        zooms=zoom_t,
        sample_rate=sample_rate,
        clip_seconds=clip_seconds,
        cell_deg=cell_deg,
        cell_km=cell_km,
        split_fractions=(fr[0], fr[1], fr[2]),
        shard_size=shard_size,
        workers=workers,
        caption_context=caption_context,
    )
    columns = (
        TextColumn("[bold]world build"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns) as bar:
            task = bar.add_task("build", total=samples)
            meta = build_world(
                out, cfg, overwrite=overwrite, progress=lambda n: bar.update(task, completed=n)
            )
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from e
    c = meta["counts"]
    typer.echo(
        f"wrote {samples} samples to {out} (train {c['train']}, val {c['val']}, test {c['test']})"
    )
