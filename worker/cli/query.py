"""``psm query``: encode and store queries, build ANN indexes, rank tiles and regions."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table
from sqlalchemy.orm import Session

from worker.cli.common import CONDITION_HELP, audio_limits
from worker.cli.common import condition as _condition
from worker.cli.common import engine as _engine
from worker.cli.common import fail as _fail
from worker.cli.common import out_console as console
from worker.cli.common import resolve_model as _resolve_model

app = typer.Typer(help="Encode and store queries, build ANN indexes, rank tiles and regions.",
                  no_args_is_help=True)


@app.command("embed")
def embed(
    model: str = typer.Option(..., "--model", help="Model version (or a unique 8+ digit prefix)."),
    text: str | None = typer.Option(None, "--text", help="Query text."),
    audio: Path | None = typer.Option(None, "--audio", help="Audio file: WAV, FLAC, OGG or MP3."),
    name: str | None = typer.Option(None, "--name", help="A label for the stored query."),
) -> None:
    """Encode a text and/or audio query with a model, store its Gaussian, print its id."""
    from psm_db.catalog import store_query
    from psm_db.engine import session_scope
    from psm_model import encode_query, load_checkpoint

    try:
        version = _resolve_model(model)
        loaded, _info = load_checkpoint(version.checkpoint_path)
        longest, shortest = audio_limits()
        kind, mu, var = encode_query(loaded, text=text, audio=audio, max_audio_seconds=longest,
                                     min_audio_seconds=shortest)
        with session_scope(_engine()) as session:
            qid = store_query(session=session, model_version=version.version, kind=kind, mu=mu,
                              var=var, text=text, audio_name=audio.name if audio else None, name=name)
    except (ValueError, LookupError, FileNotFoundError) as e:
        raise _fail(str(e)) from e
    print(qid)


@app.command("index")
def index(
    model: str = typer.Option(..., "--model", help="Model version (or a unique prefix)."),
    month: int | None = typer.Option(None, "--month"),
    hour: int | None = typer.Option(None, "--hour"),
    audio_source: str | None = typer.Option(None, "--audio-source"),
    caption_source: str | None = typer.Option(None, "--caption-source"),
    condition: str | None = typer.Option(None, "--condition", "-c", help=CONDITION_HELP),
    all_conditions: bool = typer.Option(False, "--all", help="Index every embedded condition."),
    m: int | None = typer.Option(None, "--m", help="HNSW graph degree (default: psm_db.ann.DEFAULT_M, 16; docs/queries.md)."),
    ef_construction: int | None = typer.Option(
        None, "--ef-construction", help="HNSW build beam width (default: psm_db.ann.DEFAULT_EF_CONSTRUCTION, 128)."),
    key_type: str = typer.Option("vector", "--key", help="Key storage: vector (float32) or halfvec (half the size)."),
    workers: int = typer.Option(1, "--workers", help="Parallel build workers on the database server."),
    memory: str | None = typer.Option(None, "--memory", help="maintenance_work_mem, e.g. 4GB (default: fits the graph)."),
) -> None:
    """Build the HNSW index of one (model, condition), or of every embedded condition."""
    from psm_db.ann import DEFAULT_EF_CONSTRUCTION, DEFAULT_M, build_ann_index
    from psm_db.catalog import find_condition_id, list_conditions
    from psm_db.errors import NotEmbeddedError

    try:
        version = _resolve_model(model).version
        engine = _engine()
        with Session(engine) as session:
            if all_conditions:
                ids = [c.condition_id for c in list_conditions(session=session, model_version=version)]
            else:
                wanted = _condition(condition, month, hour, audio_source, caption_source)
                cid = find_condition_id(wanted, session=session)
                if cid is None:
                    raise NotEmbeddedError(
                        f"the condition {wanted} was never embedded; run psm embed-region first")
                ids = [cid]
        for cid in ids:
            entry = build_ann_index(engine=engine, model_version=version, condition_id=cid,
                                    m=DEFAULT_M if m is None else m,
                                    ef_construction=DEFAULT_EF_CONSTRUCTION if ef_construction is None else ef_construction,
                                    key_type=key_type, workers=workers, maintenance_work_mem=memory)
            console.print(f"{entry.index_name}: {entry.rows} rows in {entry.build_seconds:.1f} s")
    except (ValueError, LookupError) as e:
        raise _fail(str(e)) from e


@app.command("list")
def list_cmd(
    model: str | None = typer.Option(None, "--model"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list on stdout instead of a table."),
) -> None:
    """List stored queries."""
    from psm_db.catalog import list_queries

    version = _resolve_model(model).version if model else None
    table = Table("id", "model", "kind", "name", "text", "audio")
    rows = []
    with Session(_engine()) as session:
        for q in list_queries(session=session, model_version=version):
            rows.append({"id": q.id, "model_version": q.model_version, "kind": q.kind, "name": q.name,
                         "text": q.text, "audio_name": q.audio_name, "dim": q.dim, "var_sum": q.var_sum})
            table.add_row(str(q.id), q.model_version[:12], q.kind, q.name or "", q.text or "",
                          q.audio_name or "")
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    console.print(table)


@app.command("rank")
def rank(
    query_id: int = typer.Argument(..., help="A stored query id."),
    region: str | None = typer.Option(None, "--region", help="WKT or GeoJSON polygon (lon/lat)."),
    region_set: str | None = typer.Option(None, "--set", help="Rank the regions of this set instead."),
    month: int | None = typer.Option(None, "--month"),
    hour: int | None = typer.Option(None, "--hour"),
    audio_source: str | None = typer.Option(None, "--audio-source"),
    caption_source: str | None = typer.Option(None, "--caption-source"),
    condition: str | None = typer.Option(None, "--condition", "-c", help=CONDITION_HELP),
    zoom: int = typer.Option(1, "--zoom"),
    k: int = typer.Option(20, "-k", "--k"),
    agg: str = typer.Option("mean", "--agg", help="Region aggregate: mean, max or share."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list on stdout instead of a table."),
) -> None:
    """Print the top tiles (or regions of a set) for a stored query."""
    from psm_db.errors import NotEmbeddedError
    from psm_db.ranking import rank_regions, rank_tiles

    try:
        wanted = _condition(condition, month, hour, audio_source, caption_source)
        with Session(_engine()) as session:
            if region_set is not None:
                regions = rank_regions(session=session, query_id=query_id, region_set=region_set,
                                       condition=wanted, zoom=zoom, k=k, agg=agg)
                table = Table("rank", "region", f"score ({agg})", "tiles", "mean sum sigma^2")
                rows = [{"rank": i, "region_id": r.region_id, "region": r.name, "score": r.score, "agg": agg,
                         "tile_count": r.tile_count, "uncertainty": r.uncertainty}
                        for i, r in enumerate(regions, 1)]
                for i, r in enumerate(regions, 1):
                    table.add_row(str(i), r.name, f"{r.score:.4g}", str(r.tile_count), f"{r.uncertainty:.4g}")
            else:
                tiles = rank_tiles(session=session, query_id=query_id, region=region, condition=wanted,
                                   zoom=zoom, k=k)
                table = Table("rank", "tile", "lon", "lat", "CSD", "probability", "sum sigma^2")
                rows = [{"rank": i, "tile_id": t.tile_id, "lon": t.geom.centroid.x, "lat": t.geom.centroid.y,
                         "distance": t.distance, "probability": t.probability, "uncertainty": t.uncertainty,
                         "bounds": list(t.geom.bounds)} for i, t in enumerate(tiles, 1)]
                for i, t in enumerate(tiles, 1):
                    c = t.geom.centroid
                    table.add_row(str(i), str(t.tile_id), f"{c.x:.4f}", f"{c.y:.4f}", f"{t.distance:.4f}",
                                  f"{t.probability:.4g}", f"{t.uncertainty:.4g}")
    except (ValueError, NotEmbeddedError) as e:
        raise _fail(str(e)) from e
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    console.print(table)
