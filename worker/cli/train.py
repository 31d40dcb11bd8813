"""The ``psm train`` and ``psm eval`` commands (registered on the ``psm`` app in ``psm_model.cli``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

THREADS_HELP = (
    "Torch CPU threads (default: torch's). On a machine shared with other jobs, 1 is often much "
    "faster than oversubscribed threads."
)


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count when given."""
    if threads is not None:
        import torch

        if threads < 1:
            raise typer.BadParameter(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["objective.alpha=0", ...]`` -> ``{"objective.alpha": 0, ...}`` (values parsed as JSON when they parse)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--set takes KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def train_command(
    dataset: Annotated[Path, typer.Option("--dataset", help="World dataset folder (psm world build).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: checkpoints and metrics.jsonl.")],
    preset: Annotated[str, typer.Option(help="Model preset: tiny, demo or paper.")] = "demo",
    loss: Annotated[str, typer.Option(help="Loss: pcmepp or infonce.")] = "pcmepp",
    metadata: Annotated[bool, typer.Option("--metadata/--no-metadata", help="Fuse metadata (with dropout).")] = True,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the preset's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: the preset's).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default: the preset's).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    resume: Annotated[Path | None, typer.Option(help="Resume from a last.safetensors of an earlier run.")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Stop after this many minutes (then validate, save).")] = None,
    val_every: Annotated[int | None, typer.Option(help="Validate every N steps (default: the preset's).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Feature cache folder (default: <dataset>/cache).")] = None,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Model config override KEY=VALUE, repeatable (objective.alpha=0, objective.init_a=10, "
        "embed_dim=512); VALUE is read as JSON when it parses, else as a string.")] = None,
) -> None:
    """Train a PSM model; keep the best checkpoint by validation I2A R@10%."""
    from tqdm import tqdm

    from psm_model.train import train

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    set_threads(threads)
    bars: dict[str, Any] = {}

    def progress(d: dict[str, Any]) -> None:
        stage = d.get("stage")
        if stage in ("audio features", "text features"):
            bar = bars.get(stage) or bars.setdefault(stage, tqdm(total=d["total"], desc=stage, unit="clip"))
            bar.n = d["done"]
            bar.refresh()
        elif stage == "train":
            bar = bars.get("train") or bars.setdefault("train", tqdm(total=d["total_steps"], desc="train", unit="step"))
            bar.n = d["step"]
            bar.set_postfix(loss=f"{d['loss']:.3f}", lr=f"{d['lr']:.2e}", best=f"{d['best']:.3f}")
        elif stage == "validate":
            tqdm.write(f"step {d['step']}: val I2A R@10% {d['val_i2a_r10']:.3f}, A2I {d['val_a2i_r10']:.3f} "
                       f"(best I2A {d['best']:.3f})")

    try:
        result = train(
            dataset, out, preset=preset, loss=loss, use_metadata=metadata, epochs=epochs, batch_size=batch_size,
            lr=lr, seed=seed, resume=resume, max_minutes=max_minutes, progress=progress, cache_dir=cache_dir,
            settings={"val_every": val_every} if val_every else None, **parse_overrides(set_ or []),
        )
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from e
    finally:
        for bar in bars.values():
            bar.close()
    m = result.best_metrics
    typer.echo(
        f"best checkpoint {result.checkpoint_path} (version {result.version}): val I2A R@10% {m['val_i2a_r10']:.3f}, "
        f"A2I {m.get('val_a2i_r10', float('nan')):.3f}; {result.steps} steps in {result.seconds / 60:.1f} min"
    )


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
        from psm_db.engine import connect
        from psm_db.evals import store_eval
        from psm_db.settings import Settings

        with connect(Settings().db_url) as conn:
            run_id = store_eval(conn, res["version"], res["records"])
            conn.commit()
        typer.echo(f"stored evaluation run {run_id}")
    else:
        typer.echo(json.dumps({"version": res["version"], "rows": len(res["rows"])}))
