"""``psm train``: train a model here, in this process (``psm submit-train`` queues it on the workers)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer()

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


@app.command("train")
def train_command(
    dataset: Annotated[Path, typer.Option("--dataset", help="World dataset folder (psm world build).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: checkpoints and metrics.jsonl.")],
    preset: Annotated[str, typer.Option(help="Model preset: tiny, demo or paper.")] = "demo",
    loss: Annotated[str, typer.Option(help="Loss: pcmepp or infonce.")] = "pcmepp",
    metadata: Annotated[bool, typer.Option("--metadata/--no-metadata", help="Fuse metadata (with dropout).")] = True,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the preset's).")] = None,
    steps: Annotated[int | None, typer.Option(
        min=1, help="Train exactly this many steps instead of whole epochs (the schedule spans them).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: the preset's).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default: the preset's).")] = None,
    weight_decay: Annotated[float | None, typer.Option(
        min=0.0, help="AdamW weight decay (default: the preset's).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    resume: Annotated[Path | None, typer.Option(help="Resume from a last.safetensors of an earlier run.")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Stop after this many minutes (then validate, save).")] = None,
    min_steps: Annotated[int | None, typer.Option(
        min=1, help="With --max-minutes: train at least this many steps however slow the machine.")] = None,
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

    settings: dict[str, Any] = {}
    if val_every:
        settings["val_every"] = val_every
    if weight_decay is not None:
        settings["weight_decay"] = weight_decay
    if steps is not None:
        settings["steps"] = steps
    try:
        result = train(
            dataset, out, preset=preset, loss=loss, use_metadata=metadata, epochs=epochs, batch_size=batch_size,
            lr=lr, seed=seed, resume=resume, max_minutes=max_minutes, min_steps=min_steps, progress=progress,
            cache_dir=cache_dir,
            settings=settings or None, **parse_overrides(set_ or []),
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
