"""Retrieval evaluation on a split: R@10% and median rank, I2A and A2I, per zoom, text and metadata.

Protocol (paper and facts page): the whole split is both the queries and the gallery; query i's
true match is item i; the score is -CSD between the Gaussians (for an InfoNCE model, whose variance
heads are never trained, the variances are left out, which ranks like its cosine similarity);
"with text" adds the caption of the ground-truth clip to the query by a rule of
:func:`psm_model.query.compose` (default ``unit``: mean = normalise(unit query mean + unit text mean); the facts page's ``raw`` adds the raw means,
log-variances summed). Each metadata condition keeps only some metadata types in the image fusion:
``all``, ``none``, one type alone (paper Table 4), or ``all-caption_source`` (every type but the
caption source, whose value a caption's style gives away). Ties are handled by
:mod:`psm_model.metrics` (expected value under random tie-breaking by default).

Beside every model the oracle of :mod:`psm_model.bayes` is scored with the same metadata: without
text the best ranking any model could reach; with text the caption-aware oracle
(:func:`psm_model.bayes.caption_oracle_scores`), told what the caption tells.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from psm_model.bayes import SOUND_METADATA, caption_oracle_scores, oracle_scores
from psm_model.features import SplitData
from psm_model.files import atomic_write
from psm_model.metadata import METADATA_TYPES
from psm_model.metrics import rank_counts, recall_at_fraction
from psm_model.model import PSMModel
from psm_model.query import COMPOSE_RULES, DEFAULT_RULE, compose

logger = logging.getLogger(__name__)

NO_CAPTION_SOURCE = "all-caption_source"
"""Every metadata type but the caption source (a caption's style gives its source away)."""
METADATA_CONDITIONS: tuple[str, ...] = ("all", NO_CAPTION_SOURCE, "none", *METADATA_TYPES)
"""Metadata labels: every type, every type but the caption source, no type, or one type alone
(named as in METADATA_TYPES)."""
DEFAULT_CONDITIONS: tuple[str, ...] = ("all", "none", *METADATA_TYPES)
"""The conditions evaluated when none are named (the paper's table and Table 4)."""
DIRECTIONS: tuple[str, ...] = ("i2a", "a2i")

Gaussian = tuple[torch.Tensor, torch.Tensor]


def metadata_keep(label: str) -> tuple[str, ...]:
    """The metadata types a condition label keeps."""
    if label == "all":
        return METADATA_TYPES
    if label == NO_CAPTION_SOURCE:
        return tuple(t for t in METADATA_TYPES if t != "caption_source")
    if label == "none":
        return ()
    if label in METADATA_TYPES:
        return (label,)
    raise ValueError(f"unknown metadata condition {label!r}; choose one of {', '.join(METADATA_CONDITIONS)}")


@dataclass
class SplitEmbeddings:
    """Embeddings of a split: pre-fusion image features per zoom, and raw-mean audio / text Gaussians."""

    image_features: dict[int, torch.Tensor]
    audio: Gaussian
    text: Gaussian


def _batches(n: int, size: int) -> list[np.ndarray]:
    return [np.arange(a, min(a + size, n)) for a in range(0, n, size)]


@torch.no_grad()
def embed_split(
    model: PSMModel, data: SplitData, zooms: Sequence[int] = (1, 3, 5), batch_size: int = 256
) -> SplitEmbeddings:
    """Encode every tile (per zoom), clip and caption of a split (model in eval mode)."""
    was_training = model.training
    model.eval()
    try:
        feats = {}
        for z in zooms:
            slot = data.zoom_slot(int(z))
            feats[int(z)] = torch.cat(
                [model.image_features(data.tiles(i, slot), data.gsd, int(z)) for i in _batches(len(data), batch_size)]
            )
        audio = [model.encode_audio_inputs(data.audio(i), raw_mean=True) for i in _batches(len(data), batch_size)]
        text = [encode_captions(model, data, i, raw_mean=True) for i in _batches(len(data), batch_size)]
    finally:
        model.train(was_training)
    cat = lambda parts: (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))  # noqa: E731
    return SplitEmbeddings(feats, cat(audio), cat(text))


def encode_captions(model: PSMModel, data: SplitData, index: np.ndarray, raw_mean: bool = False) -> Gaussian:
    """Text Gaussians of rows ``index``: from cached frozen-backbone features when the split has them."""
    if data.text_features is not None:
        feats = torch.from_numpy(data.text_features[index]).to(model.device)
        return model.text_head(model.text_tower.project(feats), raw_mean=raw_mean)
    return model.encode_text([data.captions[i] for i in index], raw_mean=raw_mean)


@torch.no_grad()
def fused_images(
    model: PSMModel, features: torch.Tensor, data: SplitData, keep: tuple[str, ...], batch_size: int = 512
) -> Gaussian:
    """Raw-mean image Gaussians with only the metadata types ``keep``."""
    was_training = model.training
    model.eval()
    try:
        parts = [
            model.fuse_image(features[i], data.metadata(i, keep), raw_mean=True) for i in _batches(len(data), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _query(g: Gaussian, text: Gaussian | None, rule: str = DEFAULT_RULE) -> Gaussian:
    mu, logvar = g
    if text is None:
        return F.normalize(mu, dim=-1), logvar
    return compose(mu, logvar, text[0], text[1], rule)


def neg_csd(query: Gaussian, gallery: Gaussian, use_variance: bool = True) -> np.ndarray:
    """(Q, N) float64 scores -CSD between unit-mean query and gallery Gaussians."""
    mq, lq = (t.double() for t in query)
    mg, lg = (t.double() for t in gallery)
    mg = F.normalize(mg, dim=-1)
    d = (mq * mq).sum(1, keepdim=True) + (mg * mg).sum(1)[None] - 2.0 * mq @ mg.T
    d = d.clamp_min(0.0)
    if use_variance:
        d = d + lq.exp().sum(1, keepdim=True) + lg.exp().sum(1)[None]
    return (-d).cpu().numpy()


def _metric_row(scorer: str, direction: str, zoom: int, with_text: bool, meta: str, scores: np.ndarray,
                ties: str) -> tuple[dict[str, Any], np.ndarray]:
    counts = rank_counts(scores)
    ranks = counts.ranks(ties)
    row = {
        "scorer": scorer,
        "direction": direction,
        "zoom": int(zoom),
        "with_text": bool(with_text),
        "metadata": meta,
        "r_at_10": recall_at_fraction(counts, 0.1, ties),
        "median_rank": float(np.median(ranks)),
        "n": int(len(ranks)),
    }
    return row, ranks


def rank_key(row: dict[str, Any]) -> str:
    """Key of a row's per-query ranks in the ranks npz, e.g. ``model/i2a/z1/text/all``."""
    return f"{row['scorer']}/{row['direction']}/z{row['zoom']}/{'text' if row['with_text'] else 'notext'}/{row['metadata']}"


@dataclass
class EvalResult:
    """Rows shaped like ``psm.eval_metrics`` plus per-query ranks and the run's settings."""

    rows: list[dict[str, Any]]
    ranks: dict[str, np.ndarray]
    config: dict[str, Any] = field(default_factory=dict)

    def get(self, scorer: str = "model", direction: str = "i2a", zoom: int = 1, with_text: bool = False,
            metadata: str = "all") -> dict[str, Any]:
        """The row for one setting."""
        for r in self.rows:
            if (r["scorer"], r["direction"], r["zoom"], r["with_text"], r["metadata"]) == (
                scorer, direction, zoom, with_text, metadata
            ):
                return r
        raise KeyError(f"no row {scorer}/{direction}/z{zoom}/text={with_text}/{metadata}")


def oracle_known(meta: str) -> tuple[str, ...]:
    """Sound-relevant metadata the oracle may use under a metadata condition."""
    return tuple(m for m in metadata_keep(meta) if m in SOUND_METADATA)


def _load_cached(path: Path | None, keys: np.ndarray, digest: str = "") -> dict[str, np.ndarray] | None:
    """Cached oracle matrices at ``path`` when they were made for these keys (and input digest)."""
    if path is None or not path.is_file():
        return None
    with np.load(path) as z:
        same = z["keys"].shape == keys.shape and bool((z["keys"] == keys.astype(str)).all())
        stored = str(z["digest"]) if "digest" in z.files else ""
        if same and stored == digest:
            return {"i2a": z["i2a"], "a2i": z["a2i"]}
    return None


def _save_cached(path: Path | None, keys: np.ndarray, out: dict[str, np.ndarray], digest: str = "") -> None:
    if path is None:
        return
    try:
        arrays: dict[str, Any] = {"keys": keys.astype(str), **out}
        if digest:
            arrays["digest"] = np.array(digest)
        with atomic_write(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
    except OSError as e:
        logger.warning("could not cache the oracle under %s: %s", path, e)


def _digest(facts: list[Any]) -> str:
    """A short hash of the inputs an oracle was scored from (so a rebuilt world is never served stale scores)."""
    return hashlib.sha256(json.dumps(facts, default=lambda a: np.asarray(a).tolist()).encode()).hexdigest()[:16]


def compute_oracle(data: SplitData, known: tuple[str, ...], cache_dir: Path | None = None) -> dict[str, np.ndarray]:
    """Oracle score matrices for a split, cached as ``oracle-<known>.npz`` under ``cache_dir``."""
    if data.fractions is None:
        raise ValueError("this split has no land-cover fractions; the oracle needs a world dataset index")
    path = Path(cache_dir) / f"oracle-{data.name}-{'+'.join(known) or 'none'}.npz" if cache_dir is not None else None
    digest = _digest([data.classes, data.fractions, data.lat, data.month, data.hour, data.audio_source])
    cached = _load_cached(path, data.keys, digest)
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    out = oracle_scores(data.fractions, data.lat, data.month, data.hour, data.audio_source, data.classes, known)
    logger.info("oracle (%s) for %d samples in %.1f s", known, len(data), time.perf_counter() - t0)
    _save_cached(path, data.keys, out, digest)
    return out


def compute_caption_oracle(data: SplitData, meta: str, cache_dir: Path | None = None,
                           base: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Caption-aware oracle matrices (with text) for a split under a metadata condition.

    Cached as ``oracle-text-<split>-<checked types>.npz`` under ``cache_dir`` with a digest of
    what the captions name, so a world rebuilt with other captions is not served stale scores.
    An index without ``caption_named`` (older worlds) falls back to the sound set and the caption
    source (see :func:`psm_model.bayes.caption_oracle_scores`), with a warning. ``base`` is
    :func:`compute_oracle` under the same condition when the caller has it already.
    """
    if data.fractions is None:
        raise ValueError("this split has no land-cover fractions; the oracle needs a world dataset index")
    if data.caption_named is None:
        logger.warning("split %s has no caption_named column (an older world): the oracle with text uses the "
                       "sound sets and caption sources only", data.name)
    keep = metadata_keep(meta)
    checked = tuple(t for t in METADATA_TYPES if t in keep and t != "latlon")
    facts = [data.classes, data.caption_named, data.caption_source, data.month, data.hour, data.audio_source,
             data.fractions.argmax(1)]
    digest = _digest(facts)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"oracle-text-{data.name}-{'+'.join(checked) or 'none'}.npz"
    cached = _load_cached(path, data.keys, digest)
    if cached is not None:
        return cached
    if base is None:
        base = compute_oracle(data, oracle_known(meta), cache_dir)
    out = caption_oracle_scores(base, data.classes, data.caption_named, data.fractions, data.month, data.hour,
                                data.audio_source, data.caption_source, keep)
    _save_cached(path, data.keys, out, digest)
    return out


def evaluate(
    model: PSMModel | None,
    data: SplitData,
    *,
    zooms: Sequence[int] = (1, 3, 5),
    text: Sequence[bool] = (False, True),
    metadata: Sequence[str] = DEFAULT_CONDITIONS,
    oracle: bool = True,
    ties: str = "random",
    batch_size: int = 256,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    compose: str = DEFAULT_RULE,
) -> EvalResult:
    """Evaluate a model (and / or the oracle) on a split under every requested setting.

    Args:
        model: The model, or None for the oracle alone.
        data: The split (queries = gallery).
        zooms: Zoom levels of the image side.
        text: Whether to add the caption to the query, per setting.
        metadata: Metadata condition labels (see :data:`METADATA_CONDITIONS`).
        oracle: Also score the oracle under each metadata condition: without text always, and
            the caption-aware oracle when ``text`` holds True (zoom-independent, so its rows are
            repeated for each zoom).
        ties: Tie rule of :mod:`psm_model.metrics`.
        batch_size: Encoding batch size.
        cache_dir: Where to cache oracle matrices (they depend only on the split).
        progress: Optional ``callback(dict)`` after each setting.
        compose: How the caption is added to a query (:data:`psm_model.query.COMPOSE_RULES`).

    Returns:
        The rows and per-query ranks.
    """
    for m in metadata:
        metadata_keep(m)
    if compose not in COMPOSE_RULES:
        raise ValueError(f"unknown compose rule {compose!r}; choose one of {', '.join(COMPOSE_RULES)}")
    rows: list[dict[str, Any]] = []
    ranks: dict[str, np.ndarray] = {}
    total = len(zooms) * len(metadata) * (len(text) if model is not None else 0) + (len(metadata) if oracle else 0)
    done = 0

    def add(row: dict[str, Any], r: np.ndarray) -> None:
        nonlocal done
        rows.append(row)
        ranks[rank_key(row)] = r.astype(np.float32)

    if model is not None:
        use_var = model.config.loss == "pcmepp"
        emb = embed_split(model, data, zooms, batch_size)
        for z in zooms:
            for m in metadata:
                img = fused_images(model, emb.image_features[int(z)], data, metadata_keep(m))
                for t in text:
                    tx = emb.text if t else None
                    i2a = neg_csd(_query(img, tx, compose), (F.normalize(emb.audio[0], dim=-1), emb.audio[1]),
                                  use_var)
                    a2i = neg_csd(_query(emb.audio, tx, compose), (F.normalize(img[0], dim=-1), img[1]), use_var)
                    for direction, s in (("i2a", i2a), ("a2i", a2i)):
                        add(*_metric_row("model", direction, int(z), bool(t), m, s, ties))
                    done += 1
                    if progress:
                        progress({"stage": "evaluate", "done": done, "total": total})
    if oracle:
        cache = Path(cache_dir) if cache_dir is not None else None
        seen: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
        for m in metadata:
            known = oracle_known(m)
            if known not in seen:
                seen[known] = compute_oracle(data, known, cache)
            scored = [(False, seen[known])]
            if any(text):
                scored.append((True, compute_caption_oracle(data, m, cache, base=seen[known])))
            for with_text, scores in scored:
                for direction in DIRECTIONS:
                    row, r = _metric_row("oracle", direction, int(zooms[0]), with_text, m, scores[direction], ties)
                    for z in zooms:
                        add({**row, "zoom": int(z)}, r)
            done += 1
            if progress:
                progress({"stage": "oracle", "done": done, "total": total})
    config = {
        "split": data.name,
        "n": len(data),
        "zooms": [int(z) for z in zooms],
        "text": [bool(t) for t in text],
        "metadata": list(metadata),
        "ties": ties,
        "compose": compose,
        "score": "-csd" if model is None or model.config.loss == "pcmepp" else "-csd without variances (cosine)",
    }
    return EvalResult(rows, ranks, config)


def results_markdown(rows: Sequence[dict[str, Any]], title: str | None = None) -> str:
    """A Markdown table of model rows with the oracle of the same setting beside them.

    A text row is paired with the caption-aware oracle, a row without text with the plain oracle.
    """
    oracle = {(r["direction"], r["zoom"], r["with_text"], r["metadata"]): r for r in rows if r["scorer"] == "oracle"}
    lines = [f"### {title}", ""] if title else []
    lines += [
        "| zoom | text | metadata | I2A R@10% | I2A med. rank | A2I R@10% | A2I med. rank | oracle I2A R@10% | oracle I2A med. | oracle A2I R@10% | oracle A2I med. |",
        "|---:|:---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    model = {(r["zoom"], r["with_text"], r["metadata"], r["direction"]): r for r in rows if r["scorer"] == "model"}
    settings = sorted({k[:3] for k in model} or {k[1:] for k in oracle},
                      key=lambda k: (k[0], k[1], METADATA_CONDITIONS.index(k[2])))
    for z, t, m in settings:
        cells = [str(z), "yes" if t else "no", m]
        for d in DIRECTIONS:
            r = model.get((z, t, m, d))
            cells += [f"{r['r_at_10']:.3f}", f"{r['median_rank']:.1f}"] if r else ["", ""]
        for d in DIRECTIONS:
            o = oracle.get((d, z, t, m))
            cells += [f"{o['r_at_10']:.3f}", f"{o['median_rank']:.1f}"] if o else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def db_records(result: EvalResult, version: str, dataset: str, split: str) -> dict[str, Any]:
    """The evaluation shaped for ``psm.eval_runs`` (``run``) and ``psm.eval_metrics`` (``metrics``) rows."""
    keys = ("scorer", "direction", "zoom", "with_text", "metadata", "r_at_10", "median_rank", "n")
    return {
        "run": {
            "model_version": version,
            "dataset": dataset,
            "split": split,
            "config": result.config,
            "results": {"rows": len(result.rows)},
        },
        "metrics": [{k: r[k] for k in keys} for r in result.rows],
    }


def write_results(result: EvalResult, out_dir: str | os.PathLike, extra: dict[str, Any] | None = None,
                  title: str | None = None) -> dict[str, str]:
    """Write ``results.json``, ``results.md`` and ``ranks.npz`` (per-query ranks) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {**(extra or {}), "config": result.config, "rows": result.rows}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "results.md").write_text(results_markdown(result.rows, title))
    np.savez_compressed(out / "ranks.npz", **result.ranks)
    return {"json": str(out / "results.json"), "markdown": str(out / "results.md"), "ranks": str(out / "ranks.npz")}


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    *,
    split: str = "test",
    out_dir: str | os.PathLike | None = None,
    zooms: Sequence[int] = (1, 3, 5),
    text: Sequence[bool] = (False, True),
    metadata: Sequence[str] | None = None,
    oracle: bool = True,
    ties: str = "random",
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    compose: str = DEFAULT_RULE,
) -> dict[str, Any]:
    """Load a checkpoint and a split, evaluate, and write the results when ``out_dir`` is given.

    A model trained without metadata is evaluated with ``metadata=("none",)`` unless told otherwise.
    ``compose`` is the rule that adds the caption to a query (see :func:`evaluate`).

    Returns:
        ``{"version", "rows", "config", "records" (see :func:`db_records`), "files"}``.
    """
    from psm_model.checkpoint import load_checkpoint
    from psm_model.features import load_split

    model, info = load_checkpoint(checkpoint)
    if metadata is None:
        used = info.get("extra", {}).get("use_metadata", True)
        metadata = DEFAULT_CONDITIONS if used else ("none",)
    data = load_split(dataset_dir, split, model, cache_dir=cache_dir)
    root = Path(cache_dir) if cache_dir is not None else Path(dataset_dir) / "cache"
    result = evaluate(model, data, zooms=zooms, text=text, metadata=metadata, oracle=oracle, ties=ties,
                      cache_dir=root, progress=progress, compose=compose)
    result.config.update({"checkpoint": str(checkpoint), "dataset": str(dataset_dir)})
    files = write_results(result, out_dir, {"version": info["version"]}, f"{info['version']} on {split}") if out_dir else {}
    return {
        "version": info["version"],
        "rows": result.rows,
        "config": result.config,
        "records": db_records(result, info["version"], str(dataset_dir), split),
        "files": files,
    }
