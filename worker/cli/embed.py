"""``psm embed-region`` and ``celery -A worker embed_region``: one command, two entry points.

The options are declared once, in :data:`EMBED_OPTIONS`; :func:`click_command` turns the table
into the click command Celery mounts (the ``celery.commands`` entry point in pyproject.toml) and
:func:`typer_command` into the ``psm`` command. Both hand the same keywords to
:func:`embed_region_main`.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import click
import typer

from worker.cli.common import connect, console, settings, wait_for_job

IMAGERY_KINDS = ("world", "geotiff", "folder")


@dataclass(frozen=True)
class OptionSpec:
    """One command-line option, declared for click and typer at once.

    ``flags`` holds the long name first (a boolean's is ``--on/--off``), then any short names.
    """

    name: str
    """The keyword the handler receives."""
    flags: tuple[str, ...]
    help: str
    type: type = str
    """str, int, float or bool."""
    default: Any = None
    required: bool = False
    multiple: bool = False
    """Repeatable; the handler receives a tuple (empty when not given)."""
    choices: tuple[str, ...] = ()
    show_default: bool = False
    """Show the default in click's help (typer shows every default)."""


EMBED_HELP = "Validate and queue a region embedding job (psm.embed_region); prints the job id."

EMBED_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("region", ("--region", "-r"), required=True,
               help="bbox minlon,minlat,maxlon,maxlat; WKT or GeoJSON polygon (text or file); "
                    "or a stored region set/name"),
    OptionSpec("model", ("--model", "-m"), required=True,
               help="registered model version (or an 8+ digit prefix)"),
    OptionSpec("zoom", ("--zoom", "-z"), multiple=True,
               help="zoom level(s), repeat or comma-separate (default 1)"),
    OptionSpec("imagery", ("--imagery",), default="world", choices=IMAGERY_KINDS, show_default=True,
               help="imagery source"),
    OptionSpec("imagery_path", ("--imagery-path",), help="GeoTIFF/COG file, or folder of GeoTIFF tiles"),
    OptionSpec("seed", ("--seed",), type=int, default=0, show_default=True, help="synthetic world seed"),
    OptionSpec("world_imagery", ("--world-imagery",), default="sentinel", show_default=True,
               help="synthetic world imagery kind (sentinel, highres)"),
    OptionSpec("gsd", ("--gsd",), type=float, help="metres per pixel at zoom 1 (default: the source's own)"),
    OptionSpec("size_px", ("--size-px",), type=int, default=256, show_default=True,
               help="tile size in pixels at zoom 1"),
    OptionSpec("source_name", ("--source-name",), help="name the tiles are stored under"),
    OptionSpec("bands", ("--bands",), help="1-based raster bands read as red,green,blue, e.g. 4,3,2 "
               "(or one band for grey; default 1,2,3, or band 1 of a single-band raster)"),
    OptionSpec("min_valid", ("--min-valid",), type=float, default=0.5, show_default=True,
               help="embed a tile only when at least this share (0..1) of its pixels holds data (not "
                    "nodata, masked or outside the imagery); the others are skipped and counted"),
    OptionSpec("condition", ("--condition", "-c"), multiple=True,
               help="a metadata condition, e.g. month=5,hour=20,audio=inaturalist,caption=metadata; "
                    "repeat for more"),
    OptionSpec("month", ("--month",), type=int, help="month 1..12 of a single condition"),
    OptionSpec("hour", ("--hour",), type=int, help="hour 0..23 of a single condition"),
    OptionSpec("audio_source", ("--audio-source",), help="audio source of a single condition"),
    OptionSpec("caption_source", ("--caption-source",), help="caption source of a single condition"),
    OptionSpec("chunk_tiles", ("--chunk-tiles",), type=int, help="tiles per chunk (default PSM_CHUNK_TILES)"),
    OptionSpec("wait", ("--wait/--no-wait",), type=bool, default=False,
               help="show progress until the job finishes"),
    OptionSpec("progress", ("--progress/--no-progress",), type=bool, default=True,
               help="draw the bar even when not a TTY"),
    OptionSpec("timeout", ("--timeout",), type=float, help="give up waiting after this many seconds"),
)
"""The options of the embed-region command, in the order the help lists them."""


# --------------------------------------------------------------------------- the two front ends


def click_options(specs: Sequence[OptionSpec]) -> Callable[[Any], Any]:
    """A decorator adding ``specs`` as click options."""

    def deco(fn: Any) -> Any:
        for s in reversed(specs):
            kwargs: dict[str, Any] = {"help": s.help, "show_default": s.show_default}
            if s.required:
                kwargs["required"] = True
            if s.multiple:
                kwargs["multiple"] = True
            elif s.type is not bool:
                kwargs["type"] = click.Choice(list(s.choices)) if s.choices else s.type
            if s.default is not None:  # click tells "no default" from a default of None
                kwargs["default"] = s.default
            fn = click.option(*s.flags, s.name, **kwargs)(fn)
        return fn

    return deco


def _typer_parameter(s: OptionSpec) -> inspect.Parameter:
    annotation: Any = Literal[s.choices] if s.choices else s.type
    if s.multiple:
        annotation = list[annotation] | None
    elif not s.required and s.default is None:
        annotation = annotation | None
    default = typer.Option(... if s.required else s.default, *s.flags, help=s.help)
    return inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def typer_command(specs: Sequence[OptionSpec], handler: Callable[..., None], doc: str) -> Callable[..., None]:
    """A function typer can mount: ``specs`` as its keyword parameters, ``doc`` as its help.

    Repeatable options reach ``handler`` as tuples, as they do from click.
    """
    params = [_typer_parameter(s) for s in specs]
    multiple = [s.name for s in specs if s.multiple]

    def command(**kw: Any) -> None:
        for name in multiple:
            kw[name] = tuple(kw[name] or ())
        handler(**kw)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    command.__doc__ = doc
    return command


# --------------------------------------------------------------------------- the command


def _celery_app(ctx: click.Context | None) -> Any:
    found = getattr(ctx.obj, "app", None) if ctx is not None and ctx.obj is not None else None
    if found is not None:
        return found
    from worker.celery import app as celery_app

    return celery_app


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


def _bands(value: str | None) -> tuple[int, ...] | None:
    """``--bands 4,3,2`` as band numbers (validated further by ImagerySpec)."""
    if value is None or not str(value).strip():
        return None
    parts = [p.strip() for p in str(value).replace(";", ",").split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError as e:
        raise ValueError(f"--bands takes 1-based band numbers such as 4,3,2, got {value!r}") from e


def _min_valid(value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"--min-valid is a share of a tile's pixels between 0 and 1, got {value!r}")
    return float(value)


def embed_region_main(ctx: click.Context | None, **kw: Any) -> None:
    """Validate the request, write the job row and queue ``psm.embed_region``; print the job id.

    ``kw`` holds the values of :data:`EMBED_OPTIONS`. A request that does not validate is kept as
    a failed job and exits with status 2; a job that fails while ``--wait`` waits, with 1.
    """
    from psm_model.condition import FIELDS, Condition
    from worker.embed import EmbedRequest, Limits, submit
    from worker.imagery import ImagerySpec

    s = settings()
    celery_app = _celery_app(ctx)
    try:
        conditions: list[Condition] = [Condition.parse(c) for c in kw["condition"]]
        single = {k: kw[k] for k in FIELDS if kw[k] is not None}
        if single or not conditions:
            conditions.insert(0, Condition(**single))
        if kw["bands"] and kw["imagery"] == "world":
            raise ValueError("--bands picks bands of a GeoTIFF or folder source (--imagery geotiff|folder); "
                             "the world renderer has no bands to choose")
        request = EmbedRequest(
            region=kw["region"],
            model_version=kw["model"],
            zooms=_zooms(kw["zoom"]),
            imagery=ImagerySpec(kind=kw["imagery"], path=kw["imagery_path"], seed=kw["seed"],
                                imagery=kw["world_imagery"], gsd=kw["gsd"], size_px=kw["size_px"],
                                name=kw["source_name"], bands=_bands(kw["bands"]),
                                min_valid=_min_valid(kw["min_valid"])),
            conditions=tuple(conditions),
            chunk_tiles=kw["chunk_tiles"],
        )
    except ValueError as e:
        _reject(s.db_url, {k: str(v) for k, v in kw.items()}, str(e))
        return

    from psm_db.errors import BrokerUnavailableError
    from worker.api import publish

    def send(job_id: str) -> str:
        return publish(celery_app, "psm.embed_region", [job_id])

    try:
        with connect(s.db_url) as conn:
            job_id, plan = submit(conn, request, Limits.from_settings(s), send)
    except BrokerUnavailableError as e:
        console.print(f"[red]error:[/] {e}", soft_wrap=True)
        console.print("the job is kept as a failed job with this message")
        raise SystemExit(1) from e
    except (ValueError, LookupError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        console.print("nothing was queued; the rejected request is kept as a failed job")
        raise SystemExit(2) from e
    console.print(f"queued {plan.total} tiles x {len(plan.conditions)} condition(s) in "
                  f"{len(plan.chunks)} chunk(s); model {plan.model.version}")
    click.echo(str(job_id))
    if kw["wait"]:
        row = wait_for_job(s.db_url, str(job_id), timeout=kw["timeout"], show=sys.stderr.isatty()
                           or kw["progress"])
        if row["status"] != "succeeded":
            console.print(f"[red]job {job_id} {row['status']}:[/] {row['error'] or row['message']}")
            raise SystemExit(1)
        console.print(f"[green]job {job_id} succeeded:[/] {row['message']}")


def _reject(db_url: str, params: dict[str, Any], error: str) -> None:
    from psm_db import jobs

    console.print(f"[red]error:[/] {error}")
    try:
        with connect(db_url) as conn:
            jobs.record_rejected(conn, "embed_region", params, f"invalid request: {error}")
    except Exception as e:  # noqa: BLE001 - the message above is what matters
        console.print(f"(could not record the rejected job: {e})")
    console.print("nothing was queued")
    raise SystemExit(2)


def _make_celery_command() -> click.Command:
    try:
        from celery.bin.base import CeleryCommand
    except ImportError:  # pragma: no cover - celery is a dependency
        CeleryCommand = click.Command  # noqa: N806

    @click.command(name="embed_region", cls=CeleryCommand, help=EMBED_HELP)
    @click_options(EMBED_OPTIONS)
    @click.pass_context
    def embed_region_cmd(ctx: click.Context, **kw: Any) -> None:
        embed_region_main(ctx, **kw)

    return embed_region_cmd


embed_region = _make_celery_command()
"""``celery -A worker embed_region ...`` (registered via the ``celery.commands`` entry point)."""


def _embed_region_psm(**kw: Any) -> None:
    try:
        embed_region_main(None, **kw)
    except click.ClickException as e:  # typer runs its own click: report the real one's errors here
        console.print(f"[red]error:[/] {e.message}")
        raise typer.Exit(1) from e


app = typer.Typer()
app.command("embed-region")(typer_command(
    EMBED_OPTIONS, _embed_region_psm,
    "Validate and queue a region embedding job (same as `celery -A worker embed_region`)."))
