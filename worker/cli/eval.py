"""``psm eval``: evaluate a checkpoint's retrieval, with the world's oracle beside it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.common import connect
from worker.cli.train import THREADS_HELP, set_threads

app = typer.Typer()


@app.command("eval")
def eval_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A checkpoint from psm train.")],
    dataset: Annotated[Path, typer.Option("--dataset", help="World dataset folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json, results.md and ranks.npz.")],
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    zooms: Annotated[str, typer.Option(help="Zoom levels, comma-separated.")] = "1,3,5",
    metadata: Annotated[str | None, typer.Option(
        help="Metadata conditions, comma-separated: all, all-caption_source, none, audio_source, caption_source, "
        "latlon, month, hour (default: all but all-caption_source, or none for a model trained without "
        "metadata).")] = None,
    text: Annotated[str, typer.Option(help="Text settings: both, no or yes.")] = "both",
    oracle: Annotated[bool, typer.Option("--oracle/--no-oracle", help="Score the world's oracle beside the model.")] = True,
    ties: Annotated[str, typer.Option(help="Tie rule: random (expected value), optimistic or pessimistic.")] = "random",
    compose: Annotated[str, typer.Option(
        help="How the caption joins a query: unit (the default), raw (the paper's) or precision.")] = "unit",
    store: Annotated[bool, typer.Option("--store", help="Also store the run in the database (psm.eval_runs).")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="Feature cache folder (default: <dataset>/cache).")] = None,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
) -> None:
    """Evaluate a checkpoint: R@10% and median rank, I2A and A2I, per zoom, text and metadata, with the oracle."""
    from psm_model.evaluate import evaluate_checkpoint

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    set_threads(threads)
    text_opts = {"both": (False, True), "no": (False,), "yes": (True,)}
    if text not in text_opts:
        raise typer.BadParameter(f"--text must be both, no or yes, got {text!r}")
    try:
        zoom_t = tuple(int(z) for z in zooms.split(","))
    except ValueError as e:
        raise typer.BadParameter(f"--zooms must be comma-separated integers, got {zooms!r}") from e
    meta = tuple(m.strip() for m in metadata.split(",")) if metadata else None
    try:
        res = evaluate_checkpoint(checkpoint, dataset, split=split, out_dir=out, zooms=zoom_t, text=text_opts[text],
                                  metadata=meta, oracle=oracle, ties=ties, cache_dir=cache_dir,
                                  compose=compose)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from e
    typer.echo(Path(res["files"]["markdown"]).read_text())
    typer.echo(f"wrote {', '.join(res['files'].values())}")
    if store:
        from psm_db.evals import store_eval

        with connect() as conn:
            run_id = store_eval(conn, res["version"], res["records"])
            conn.commit()
        typer.echo(f"stored evaluation run {run_id}")
    else:
        typer.echo(json.dumps({"version": res["version"], "rows": len(res["rows"])}))
