"""Training: AdamW with cosine warm-up, random zoom, augmentation, metadata dropout, validation, resume.

``train(...)`` is a plain function (the Celery task ``psm.train`` wraps it; ``psm train`` calls it).
It writes into ``out_dir``:

* ``best.safetensors``: the checkpoint with the best validation I2A R@10% (zoom 1, the run's
  metadata, no text);
* ``last.safetensors`` and ``last.state.pt``: the latest weights and optimiser / schedule state,
  for ``resume``;
* ``metrics.jsonl``: one JSON object per logged training step and per validation.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psm_model.augment import augment_tiles
from psm_model.checkpoint import load_checkpoint, save_checkpoint
from psm_model.evaluate import embed_split, encode_captions, evaluate
from psm_model.factory import create_model
from psm_model.features import SplitData, load_split
from psm_model.metadata import METADATA_TYPES
from psm_model.model import PSMModel

logger = logging.getLogger(__name__)

BEST = "best.safetensors"
LAST = "last.safetensors"
STATE_SUFFIX = ".state.pt"
LOG = "metrics.jsonl"


@dataclass
class TrainSettings:
    """Optimisation settings (facts page: AdamW (0.9, 0.98), eps 1e-6, wd 0.2, cosine with warm-up).

    Attributes:
        epochs: Passes over the training split.
        steps: Train exactly this many optimiser steps instead (the schedule spans them, and the
            last epoch may end part-way); None: ``epochs`` full passes.
        batch_size: Samples per step (drop_last).
        lr: Peak learning rate.
        weight_decay: AdamW weight decay (not applied to biases, norms, embeddings and scalars).
        betas: AdamW betas.
        eps: AdamW epsilon.
        warmup_steps: Linear warm-up steps (None: ``warmup_fraction`` of all steps).
        warmup_fraction: Warm-up share of all steps when ``warmup_steps`` is None.
        min_lr_ratio: The cosine decays to ``lr * min_lr_ratio``.
        grad_clip: Gradient norm clip (0: off).
        val_every: Validate every this many steps (0: once per epoch).
        val_size: Validate on at most this many validation samples (0: all).
        log_every: Log training metrics every this many steps.
        zooms: Zoom levels sampled per image.
        crop_scale: RandomResizedCrop area range.
        calibrate_b: For PCME++ from a fresh start, set the shift b from the first batch so the
            initial match probability of a typical non-matching pair is the batch prior 1 / B
            (see :func:`calibrate_match_shift`).
    """

    epochs: int = 1
    steps: int | None = None
    batch_size: int = 128
    lr: float = 5e-5
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int | None = None
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    val_every: int = 0
    val_size: int = 0
    log_every: int = 10
    zooms: tuple[int, ...] = (1, 3, 5)
    crop_scale: tuple[float, float] = (0.2, 1.0)
    calibrate_b: bool = True


PRESET_SETTINGS: dict[str, dict[str, Any]] = {
    # Fine-tuning pretrained towers with the paper's settings.
    "paper": {"epochs": 10, "batch_size": 128, "lr": 5e-5, "warmup_steps": 5000},
    # Towers trained from scratch (MiniLM text frozen): a higher peak rate and a short warm-up,
    # sized for about ten minutes on two CPU cores.
    "demo": {"epochs": 6, "batch_size": 64, "lr": 1e-3, "warmup_fraction": 0.05, "val_every": 100, "val_size": 1000},
    "tiny": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "warmup_fraction": 0.1, "log_every": 1},
}
"""Per-preset defaults of :class:`TrainSettings` (arguments to :func:`train` win)."""


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        checkpoint_path: The best checkpoint (by validation I2A R@10%).
        version: Its model version (content hash).
        best_metrics: Its validation metrics.
        history: Every validation record.
        last_checkpoint_path: The latest checkpoint (resume from it).
        steps: Optimiser steps taken in total.
        seconds: Wall time of this call.
        stopped_early: True when ``max_minutes`` ended the run before all epochs.
    """

    checkpoint_path: str
    version: str
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint_path: str = ""
    steps: int = 0
    seconds: float = 0.0
    stopped_early: bool = False

    def __fspath__(self) -> str:
        """The best checkpoint's path, so ``Path(result)`` names the checkpoint."""
        return self.checkpoint_path

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (``checkpoint`` is the best checkpoint's path)."""
        return {"checkpoint": self.checkpoint_path, **asdict(self)}


def settings_for(preset: str, **kwargs: Any) -> TrainSettings:
    """The preset's :class:`TrainSettings` with non-None keyword values applied."""
    base = dict(PRESET_SETTINGS.get(preset, {}))
    base.update({k: v for k, v in kwargs.items() if v is not None})
    names = set(TrainSettings.__dataclass_fields__)
    unknown = sorted(set(base) - names)
    if unknown:
        raise ValueError(f"unknown training setting(s) {unknown}; valid: {sorted(names)}")
    s = TrainSettings(**base)
    if s.epochs < 1 or s.batch_size < 2 or not s.lr > 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 2 and lr > 0, got {s.epochs}, {s.batch_size}, {s.lr}")
    if s.steps is not None and s.steps < 1:
        raise ValueError(f"steps must be >= 1 (or None for whole epochs), got {s.steps}")
    return s


def cosine_warmup(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: PSMModel, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters split into decayed (matrices) and not decayed (biases, norms, scalars, tables)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "norm" in name or "bias" in name or "source" in name or "special" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def training_loss(
    model: PSMModel,
    data: SplitData,
    index: np.ndarray,
    settings: TrainSettings,
    use_metadata: bool,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Loss terms of one training batch: random zoom per image, augmentation, metadata dropout."""
    slots_allowed = np.array([data.zoom_slot(z) for z in settings.zooms if z in data.zooms])
    if slots_allowed.size == 0:
        raise ValueError(f"none of the training zooms {settings.zooms} is in the dataset ({data.zooms})")
    pick = torch.randint(0, slots_allowed.size, (len(index),), generator=generator).numpy()
    slots = slots_allowed[pick]
    zoom = torch.tensor([data.zooms[s] for s in slots], dtype=torch.float32)
    tiles = augment_tiles(data.tiles(index, slots), model.config.image.image_size, generator, settings.crop_scale)
    meta = data.metadata(index, METADATA_TYPES if use_metadata else ())
    image = model.encode_image(tiles, data.gsd, zoom, meta)  # fusion drops metadata in train mode
    audio = model.encode_audio_inputs(data.audio(index).to(model.device))
    text = encode_captions(model, data, index)
    return model.loss(image=image, audio=audio, text=text)


@torch.no_grad()
def calibrate_match_shift(
    model: PSMModel,
    data: SplitData,
    index: np.ndarray,
    settings: TrainSettings,
    use_metadata: bool,
    generator: torch.Generator,
) -> float | None:
    """Set PCME++'s shift b so that a typical non-matching pair starts at match probability 1 / B.

    With the facts page's initialisation (a = b = 5, log sigma^2 = -4) a fresh model's logits
    ``-a * CSD + b`` start near -28, so only the B true pairs get a gradient (pulled together) and
    the B^2 - B others get none: towers trained from scratch then collapse every embedding to one
    point before the negatives push back. Starting b at ``a * median(CSD of non-matching pairs) -
    log(B - 1)`` balances the two from the first step. Pretrained towers (the paper's setting) do
    not need this, and it does nothing for InfoNCE.

    Returns:
        The new b, or None when the loss is not PCME++.
    """
    crit = model.criterion
    if crit.kind != "pcmepp":
        return None
    was = model.training
    model.train()
    slots = np.array([data.zoom_slot(z) for z in settings.zooms if z in data.zooms])
    pick = slots[torch.randint(0, slots.size, (len(index),), generator=generator).numpy()]
    zoom = torch.tensor([data.zooms[s] for s in pick], dtype=torch.float32)
    tiles = augment_tiles(data.tiles(index, pick), model.config.image.image_size, generator, settings.crop_scale)
    meta = data.metadata(index, METADATA_TYPES if use_metadata else ())
    g = {
        "image": model.encode_image(tiles, data.gsd, zoom, meta),
        "audio": model.encode_audio_inputs(data.audio(index).to(model.device)),
        "text": encode_captions(model, data, index),
    }
    model.train(was)
    from psm_model.distance import csd

    off = []
    for p, q in (("image", "audio"), ("image", "text"), ("audio", "text")):
        d = csd(g[p][0], g[p][1].exp(), g[q][0], g[q][1].exp())
        off.append(d[~torch.eye(d.shape[0], dtype=torch.bool)])
    a = float(crit.pcme.a)
    b = a * float(torch.cat(off).median()) - math.log(max(len(index) - 1, 1))
    crit.pcme.b.fill_(b)
    return b


CHANCE_R10 = 0.10
"""R@10% of a model that ranks at random (the true match falls in the top tenth one time in ten)."""


def stuck_at_chance(history: list[dict[str, Any]], validations: int = 3, margin: float = 0.01) -> bool:
    """True when the first ``validations`` validations all left I2A R@10% within ``margin`` of chance.

    A model that has not moved off chance after that many checks is not learning (seen with the
    demo preset widened to embed_dim 512 at its learning rate of 1e-3: the embeddings collapse).
    """
    vals = [h["val_i2a_r10"] for h in history if h.get("kind") == "val"]
    return len(vals) >= validations and max(vals[:validations]) < CHANCE_R10 + margin


def validate(model: PSMModel, data: SplitData, use_metadata: bool) -> dict[str, float]:
    """Validation metrics: I2A and A2I R@10% and median rank at zoom 1, the run's metadata, no text."""
    meta = "all" if use_metadata else "none"
    zoom = 1 if 1 in data.zooms else data.zooms[0]
    res = evaluate(model, data, zooms=(zoom,), text=(False,), metadata=(meta,), oracle=False)
    i2a, a2i = res.get("model", "i2a", zoom, False, meta), res.get("model", "a2i", zoom, False, meta)
    return {
        "val_i2a_r10": i2a["r_at_10"],
        "val_i2a_median_rank": i2a["median_rank"],
        "val_a2i_r10": a2i["r_at_10"],
        "val_a2i_median_rank": a2i["median_rank"],
        "val_n": i2a["n"],
    }


def _subset(data: SplitData, n: int, seed: int) -> SplitData:
    if n <= 0 or n >= len(data):
        return data
    idx = np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False))
    fields = {}
    for k, v in data.__dict__.items():
        if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == len(data):
            fields[k] = v[idx]
        elif isinstance(v, list) and len(v) == len(data):
            fields[k] = [v[i] for i in idx]
        else:
            fields[k] = v
    return SplitData(**fields)


class _Log:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _load_state(path: Path) -> dict[str, Any]:
    state_path = path.with_name(path.name.removesuffix(".safetensors") + STATE_SUFFIX)
    if not state_path.is_file():
        raise ValueError(f"cannot resume from {path}: its training state {state_path} is missing")
    return torch.load(state_path, map_location="cpu", weights_only=False)


def train(
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    preset: str = "demo",
    loss: str = "pcmepp",
    use_metadata: bool = True,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    resume: str | os.PathLike | None = None,
    max_minutes: float | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    *,
    min_steps: int | None = None,
    pretrained: bool = True,
    cache_dir: str | os.PathLike | None = None,
    settings: dict[str, Any] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a PSM model on a world dataset and keep the best checkpoint by validation I2A R@10%.

    Args:
        dataset_dir: A world dataset (``psm world build``).
        out_dir: Output folder (checkpoints, ``metrics.jsonl``).
        preset: Model preset (``tiny``, ``demo``, ``paper``); also picks the training defaults.
        loss: ``pcmepp`` or ``infonce``.
        use_metadata: Fuse metadata (with dropout 0.5 per type) or never show it to the model.
        epochs: Passes over the training split (None: preset default).
        batch_size: Batch size (None: preset default).
        lr: Peak learning rate (None: preset default).
        seed: Seed of the weights, batch order, zooms, crops and metadata dropout.
        resume: A ``last.safetensors`` (or ``best``) of an earlier run of this function; the
            model, optimiser, schedule, step and history continue from it.
        max_minutes: Wall-time budget of the training loop (loading the data and caching features
            come before it). The cosine schedule is then fitted to the steps that fit in it
            (re-estimated from the measured step rate), and the run stops at the budget.
        min_steps: A floor under ``max_minutes``: the run takes at least this many steps (at most
            all epochs' worth) however slow the machine, and so overruns the budget where the
            budget would fit fewer. A budget sized on a fast machine would otherwise leave a slower
            one a model that has not learned (the demo: docs/benchmarks.md "The demo's budget").
        progress: Optional ``callback(dict)`` for task state. Every dict has ``stage`` ("audio
            features", "text features", "train", "validate"), ``done`` and ``total``; training and
            validation dicts add ``step``, ``total_steps``, ``epoch``, ``loss``, ``lr``, ``elapsed_s``,
            ``eta_s``, ``best`` and the validation metrics.
        pretrained: Load the preset's pretrained weights when building a fresh model.
        cache_dir: Feature cache folder (default ``<dataset_dir>/cache``).
        settings: Further :class:`TrainSettings` fields (``val_every``, ``warmup_steps``, ...).
        **overrides: Model config overrides for :func:`psm_model.create_model`.

    Returns:
        The result; ``checkpoint_path`` is the best checkpoint.

    Raises:
        ValueError: On bad settings, a dataset that is not a world dataset, or a resume file
            without its training state.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = settings_for(preset, epochs=epochs, batch_size=batch_size, lr=lr, **(settings or {}))
    torch.manual_seed(seed)
    state: dict[str, Any] | None = None
    if resume is not None:
        model, info = load_checkpoint(resume)
        state = _load_state(Path(resume))
        preset = info.get("preset") or preset
        use_metadata = bool(state.get("use_metadata", use_metadata))
        model.train()
    else:
        model = create_model(preset, pretrained=pretrained, seed=seed, loss=loss, **overrides)
    loss = model.config.loss

    def report(stage: str, done: int, total: int) -> None:
        if progress:
            progress({"stage": stage, "done": done, "total": total})

    train_data = load_split(dataset_dir, "train", model, cache_dir=cache_dir, progress=report)
    val_data = _subset(load_split(dataset_dir, "val", model, cache_dir=cache_dir, progress=report), s.val_size, seed)
    steps_per_epoch = len(train_data) // s.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"the training split has {len(train_data)} samples, fewer than one batch of {s.batch_size}")
    total_steps = s.steps or s.epochs * steps_per_epoch
    if min_steps is not None and min_steps < 1:
        raise ValueError(f"min_steps must be >= 1, got {min_steps}")
    floor = min(total_steps, min_steps or 0) if max_minutes else 0
    # The schedule's horizon: all epochs, or, under max_minutes, the steps that fit in the time left
    # (re-estimated from the measured step rate), so the cosine always decays by the end of the run.
    horizon = [total_steps]

    def warmup_for(n: int) -> int:
        w = s.warmup_steps if s.warmup_steps is not None else int(round(s.warmup_fraction * n))
        return min(w, max(n - 1, 0))

    warmup = warmup_for(total_steps)
    optimizer = torch.optim.AdamW(param_groups(model, s.weight_decay), lr=s.lr, betas=s.betas, eps=s.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: cosine_warmup(k, horizon[0], warmup_for(horizon[0]), s.min_lr_ratio)
    )
    step, history, best = 0, [], {"val_i2a_r10": -1.0}
    best_version = ""
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history, best = int(state["step"]), list(state["history"]), dict(state["best"])
        best_version = state.get("best_version", "")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    log = _Log(out / LOG)
    run_info = {
        "preset": preset,
        "loss": loss,
        "use_metadata": use_metadata,
        "seed": seed,
        "dataset": str(dataset_dir),
        "train_n": len(train_data),
        "settings": asdict(s),
    }
    if state is None:
        log.write({"kind": "start", **run_info, "total_steps": total_steps, "warmup_steps": warmup})
    if state is None and s.calibrate_b:
        first = np.sort(np.random.default_rng([seed, 0]).permutation(len(train_data))[: s.batch_size])
        b = calibrate_match_shift(model, train_data, first, s, use_metadata, torch.Generator().manual_seed(seed))
        if b is not None:
            log.write({"kind": "calibrate", "b": b, "a": model.match_params()[0]})
            logger.info("PCME++ shift b calibrated to %.3f", b)
    val_every = s.val_every or steps_per_epoch
    val_cost = 30.0
    t_loop = time.perf_counter()
    deadline = t_loop + 60.0 * max_minutes if max_minutes else None  # loading / caching not counted
    step0 = step
    floor_noted = False

    def checkpoint(kind: str) -> tuple[dict[str, Any], str]:
        nonlocal best, best_version
        t0 = time.perf_counter()
        metrics = validate(model, val_data, use_metadata)
        metrics.update({"kind": "val", "step": step, "epoch": step / steps_per_epoch, "val_seconds": time.perf_counter() - t0,
                        "elapsed_s": time.perf_counter() - t_start})
        history.append(metrics)
        extra = {**run_info, "step": step, "history_len": len(history)}
        if metrics["val_i2a_r10"] > best["val_i2a_r10"]:
            best = metrics
            best_version = save_checkpoint(model, out / BEST, metrics=metrics, extra=extra)
        metrics["best_val_i2a_r10"] = best["val_i2a_r10"]
        save_checkpoint(model, out / LAST, metrics=metrics, extra=extra)
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step, "history": history,
             "best": best, "best_version": best_version, "use_metadata": use_metadata},
            out / (LAST.removesuffix(".safetensors") + STATE_SUFFIX),
        )
        log.write(metrics)
        logger.info("step %d (%s): val I2A R@10%% %.3f (best %.3f)", step, kind, metrics["val_i2a_r10"], best["val_i2a_r10"])
        if len([h for h in history if h.get("kind") == "val"]) == 3 and stuck_at_chance(history):
            note = (f"validation I2A R@10% has stayed at chance ({CHANCE_R10:.2f}) for 3 checks, to step {step}: "
                    f"the model is not learning. Try a lower --lr than {s.lr:g} (the demo preset at "
                    "embed_dim 512 needs about 3e-4), or check the dataset")
            logger.warning(note)
            log.write({"kind": "warning", "step": step, "message": note})
        if progress:
            progress({"stage": "validate", "step": step, "total_steps": horizon[0], **metrics, "best": best["val_i2a_r10"],
                      "done": step, "total": horizon[0]})
        return metrics, best_version

    model.train()
    running: list[float] = []
    while step < horizon[0]:
        epoch = step // steps_per_epoch
        order = np.random.default_rng([seed, epoch]).permutation(len(train_data))
        for b in range(step % steps_per_epoch, steps_per_epoch):
            index = np.sort(order[b * s.batch_size : (b + 1) * s.batch_size])
            alpha = model.criterion.set_progress(step / max(horizon[0], 1))
            terms = training_loss(model, train_data, index, s, use_metadata, generator)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if s.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], s.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            value = float(terms["loss"].detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"the training loss became {value} at step {step}; lower the learning rate")
            running.append(value)
            elapsed = time.perf_counter() - t_loop
            rate = (step - step0) / max(elapsed, 1e-9)
            if step % s.log_every == 0 or step == horizon[0]:
                rec = {"kind": "train", "step": step, "epoch": step / steps_per_epoch, "loss": float(np.mean(running)),
                       "lr": scheduler.get_last_lr()[0], "alpha": alpha, "steps_per_s": rate, "elapsed_s": time.perf_counter() - t_start}
                for k in ("image_audio", "image_text", "audio_text"):
                    if k in terms:
                        rec[k] = float(terms[k].detach())
                log.write(rec)
                running = []
                if progress:
                    progress({"stage": "train", **rec, "total_steps": horizon[0], "done": step, "total": horizon[0],
                              "eta_s": (horizon[0] - step) / max(rate, 1e-9), "best": best["val_i2a_r10"]})
            if step % val_every == 0 and step < horizon[0]:
                t_val = time.perf_counter()
                checkpoint("periodic")
                model.train()
                val_cost = time.perf_counter() - t_val
            if deadline is not None and (step - step0 == 10 or (step - step0) % 25 == 0):
                left = deadline - time.perf_counter() - val_cost
                fit = step + int(max(0.0, left) * (step - step0) / max(time.perf_counter() - t_loop, 1e-9))
                horizon[0] = max(step + 1, floor, min(total_steps, fit))
                if fit < floor and not floor_noted:
                    floor_noted = True
                    note = (f"the {max_minutes:g}-minute budget fits about {fit} steps at this machine's "
                            f"{rate:.2f} steps/s; training for the floor of {floor} steps instead "
                            f"(about {(floor - step) / max(rate, 1e-9) / 60:.1f} more minutes)")
                    logger.warning(note)
                    log.write({"kind": "warning", "step": step, "message": note})
            if deadline is not None and time.perf_counter() > deadline and step >= floor:
                horizon[0] = min(horizon[0], step)
            if step >= horizon[0]:
                break
        if step >= horizon[0]:
            break
    stopped_early = step < total_steps
    checkpoint("final")
    if not best_version:
        best_version = save_checkpoint(model, out / BEST, metrics=best, extra=run_info)
    seconds = time.perf_counter() - t_start
    log.write({"kind": "end", "step": step, "seconds": seconds, "best": best, "stopped_early": stopped_early})
    return TrainResult(
        checkpoint_path=str(out / BEST),
        version=best_version,
        best_metrics=best,
        history=history,
        last_checkpoint_path=str(out / LAST),
        steps=step,
        seconds=seconds,
        stopped_early=stopped_early,
    )


__all__ = ["TrainResult", "TrainSettings", "train", "training_loss", "validate", "embed_split"]
