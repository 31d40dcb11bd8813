"""``psm map``: one command from a query and a region to a map file a GIS opens."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from worker.cli.common import CONDITION_HELP, audio_limits, console
from worker.cli.common import condition as _condition
from worker.cli.common import engine as _engine
from worker.cli.common import fail as _fail
from worker.cli.common import resolve_model as _resolve_model

app = typer.Typer()


@app.command("map")
def map_cmd(
    out: Path = typer.Option(..., "--out", help="The map file; its suffix picks the format: .tif (a two-band "
                             "Cloud-Optimized GeoTIFF), .geojson, .gpkg, .fgb, .parquet (GeoParquet) or .png."),
    query_id: int | None = typer.Option(None, "--query", help="A stored query id (`psm query list`)."),
    text: str | None = typer.Option(None, "--text", help="A text query, encoded now (needs --model)."),
    audio: Path | None = typer.Option(None, "--audio", help="An audio query file, encoded now (needs --model)."),
    model: str | None = typer.Option(None, "--model", help="Model version for --text/--audio (or a unique prefix)."),
    region: str = typer.Option(..., "--region", help="W,S,E,N; WKT or EWKT (SRID transformed); GeoJSON text or "
                               "file; or a stored region set/name."),
    month: int | None = typer.Option(None, "--month"),
    hour: int | None = typer.Option(None, "--hour"),
    audio_source: str | None = typer.Option(None, "--audio-source"),
    caption_source: str | None = typer.Option(None, "--caption-source"),
    condition: str | None = typer.Option(None, "--condition", "-c", help=CONDITION_HELP),
    zoom: int = typer.Option(1, "--zoom"),
    layer: str = typer.Option("probability", "--layer", help="Layer of a .png: probability, var_sum or distance."),
) -> None:
    """Write the soundscape map of a region for a stored query or a text/audio query."""
    from sqlalchemy.orm import Session

    from psm_db.errors import NotEmbeddedError
    from psm_db.maps.export import map_format, write_map
    from psm_db.maps.scores import TileScores
    from psm_db.ranking import Gaussian, map_scores

    if (query_id is None) == (text is None and audio is None):
        raise _fail("give either --query ID or a --text/--audio query (with --model), not both")
    if query_id is None and model is None:
        raise _fail("a --text/--audio query needs --model VERSION (see `psm query list` or the registry)")
    try:
        map_format(out)
    except ValueError as e:
        raise _fail(str(e)) from e
    started = time.perf_counter()
    try:
        wanted = _condition(condition, month, hour, audio_source, caption_source)
        with Session(_engine()) as session:
            if query_id is not None:
                query: dict[str, Any] = {"query_id": query_id}
                label = f"query {query_id}"
            else:
                from psm_model import encode_query, load_checkpoint

                assert model is not None
                version = _resolve_model(model)
                loaded, _ = load_checkpoint(version.checkpoint_path)
                longest, shortest = audio_limits()
                _kind, mu, var = encode_query(loaded, text=text, audio=audio, max_audio_seconds=longest,
                                              min_audio_seconds=shortest)
                query = {"gaussian": Gaussian(version.version, mu, var)}
                label = text if text is not None else str(audio)
            m = map_scores(session=session, **query, region=region, zoom=zoom, condition=wanted)
        scores = TileScores.from_map(m)
        fetched = time.perf_counter()
        tags = {"query": label, "region": region, "zoom": zoom,
                **{k: v for k, v in wanted.as_dict().items() if v is not None}}
        title = f"{label} · " + ", ".join(f"{k}={v}" for k, v in tags.items() if k not in ("query",))
        path = write_map(out, scores, tags=tags, layer=layer, title=title)
    except (ValueError, LookupError, FileNotFoundError, NotEmbeddedError) as e:
        raise _fail(str(e)) from e
    done = time.perf_counter()
    console.print(f"wrote {path} ({len(scores):,} tiles; scores {fetched - started:.2f} s, "
                  f"file {done - fetched:.2f} s)", soft_wrap=True)


__all__ = ["app"]
