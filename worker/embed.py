"""Embed a region: submit and prepare a job, then embed one chunk of tiles (plain, Celery-free functions).

The job's inputs and its plan (region, grids, chunks) are in :mod:`worker.plan`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    Text,
    any_,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY

from psm_db import bulk, jobs
from psm_db.models import Embedding, TileFeature
from psm_db.tiles import TileSet, upsert_tiles
from worker.model_runner import compute_gaussians, get_model, read_and_compute_features
from worker.plan import (
    ConditionSpec,
    EmbedRequest,
    Limits,
    Plan,
    cached_grid,
    cached_source,
    expected_rows,
    plan_job,
    resolve_region,
    tiles_per_chunk_hint,
)

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]
"""progress(done, total, message)."""


# --------------------------------------------------------------------------- jobs


def submit(
    conn: Connection,
    request: EmbedRequest,
    limits: Limits,
    send: Callable[[str], str],
) -> tuple[uuid.UUID, Plan]:
    """Validate, create the job row and queue it with ``send(job_id) -> task_id``.

    Bad input is stored as a failed job (with the message) and re-raised; nothing is queued
    and no tile or embedding is written.
    """
    # Fix the chunk size now: every worker must cut the region the same way.
    request = replace(request, chunk_tiles=int(request.chunk_tiles or limits.chunk_tiles))
    params = request.to_params()
    try:
        plan = plan_job(conn, request, limits)
    except (ValueError, LookupError, FileNotFoundError) as e:
        conn.rollback()
        jobs.record_rejected(conn, "embed_region", params, f"invalid request: {e}")
        raise
    job_id = jobs.create_job(conn, "embed_region", params, model_version=plan.model.version)
    jobs.add_event(conn, job_id, "info",
                   f"queued: {plan.total} tiles in {len(plan.chunks)} chunk(s), "
                   f"{len(plan.conditions)} condition(s)")
    conn.commit()
    task_id = send(str(job_id))
    jobs.set_task_id(conn, job_id, task_id)
    conn.commit()
    return job_id, plan


def load_plan(conn: Connection, job_id: str, limits: Limits) -> tuple[dict[str, Any], Plan]:
    """The job row and its plan (validated again: files may have gone since submission)."""
    job = jobs.get_job(conn, job_id)
    if job is None:
        raise LookupError(f"job {job_id} does not exist")
    request = EmbedRequest.from_params(job["params"])
    resolved = job["params"].get("resolved")
    if resolved:
        # Chunks use what the planner resolved, even if a stored region changes meanwhile.
        request = replace(request, region=resolved["region"], model_version=resolved["model_version"])
    plan = plan_job(conn, request, limits)
    conn.rollback()
    return job, plan


def prepare_job(conn: Connection, job_id: str, limits: Limits) -> list[int]:
    """The planner step: validate, create conditions and chunk rows, mark running.

    Returns the chunks still to run (all but succeeded ones), so a redelivered planner only
    re-sends unfinished work. A permanent error fails the job and returns [].
    """
    try:
        job, plan = load_plan(conn, job_id, limits)
    except (ValueError, LookupError, FileNotFoundError) as e:
        conn.rollback()
        jobs.fail_job(conn, job_id, f"invalid request: {e}")
        return []
    if job["status"] in jobs.FINAL_STATES:
        return []
    ensure_conditions(conn, plan.conditions)
    resolved = {"region": plan.region.wkt, "model_version": plan.model.version}
    jobs.merge_params(conn, job_id, {"resolved": resolved})
    started = jobs.start_job(conn, job_id, [stop - start for _, start, stop in plan.chunks],
                             message=f"0/{len(plan.chunks)} chunks")
    if started:
        jobs.add_event(conn, job_id, "info", f"running: {plan.total} tiles, {len(plan.chunks)} chunk(s)")
    conn.commit()
    if not started:
        return []
    return [c["chunk"] for c in jobs.chunk_states(conn, job_id) if c["status"] != "succeeded"]


def ensure_conditions(conn: Connection, conditions: Sequence[ConditionSpec]) -> list[int]:
    """Get or create the condition rows; returns their ids in order (caller commits)."""
    ids = []
    for c in conditions:
        cid = conn.scalar(select(func.psm.ensure_condition(
            literal(c.month, Integer), literal(c.hour, Integer), literal(c.audio_source, Text),
            literal(c.caption_source, Text))))
        assert cid is not None
        ids.append(int(cid))
    return ids


# --------------------------------------------------------------------------- one chunk


@dataclass
class ChunkResult:
    """What one chunk did."""

    chunk: int
    tiles: int
    features_computed: int = 0
    features_reused: int = 0
    embeddings_written: int = 0
    skipped: bool = False
    job_finished: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per step: plan, tiles, read, features, fusion, write."""


def _existing_features(conn: Connection, version: str, tile_ids: np.ndarray) -> dict[int, np.ndarray]:
    rows = conn.execute(
        select(TileFeature.tile_id, TileFeature.features)
        .where(TileFeature.model_version == version,
               TileFeature.tile_id == any_(literal(tile_ids.tolist(), ARRAY(BigInteger))))
    ).all()
    return {int(t): np.asarray(f.to_numpy() if hasattr(f, "to_numpy") else f, dtype=np.float32) for t, f in rows}


def _existing_embeddings(
    conn: Connection, version: str, cond_ids: list[int], tile_ids: np.ndarray
) -> set[tuple[int, int]]:
    rows = conn.execute(
        select(Embedding.condition_id, Embedding.tile_id)
        .where(Embedding.model_version == version,
               Embedding.condition_id == any_(literal(cond_ids, ARRAY(Integer))),
               Embedding.tile_id == any_(literal(tile_ids.tolist(), ARRAY(BigInteger))))
    ).all()
    return {(int(c), int(t)) for c, t in rows}


def run_chunk(
    conn: Connection,
    job_id: str,
    chunk: int,
    limits: Limits,
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> ChunkResult:
    """Embed one chunk of a job; safe to run twice or concurrently (idempotent writes).

    Steps: upsert the chunk's tiles; compute the image features of tiles that have none for
    this model (others are reused); run fusion and heads for each condition on tiles that
    lack that embedding; write all embeddings and mark the chunk done in one transaction.
    """
    report = progress or (lambda done, total, msg: None)
    clock = [time.perf_counter()]
    seconds: dict[str, float] = {}

    def lap(step: str) -> None:
        now = time.perf_counter()
        seconds[step] = seconds.get(step, 0.0) + now - clock[0]
        clock[0] = now

    previous = jobs.claim_chunk(conn, job_id, chunk)
    if previous is None:
        raise LookupError(f"job {job_id} has no chunk {chunk}")
    job, plan = load_plan(conn, job_id, limits)
    if previous == "succeeded" or job["status"] in jobs.FINAL_STATES:
        return ChunkResult(chunk, 0, skipped=True)
    spec = plan.specs[plan.chunks[chunk][0]]
    tiles = plan.tiles(chunk)
    n = len(tiles)
    report(0, n, f"chunk {chunk}: {n} tiles")
    lap("plan")
    tile_ids = upsert_tiles(conn, tiles)
    cond_ids = ensure_conditions(conn, plan.conditions)
    conn.commit()
    lap("tiles")

    mv = plan.model
    result = ChunkResult(chunk, n, seconds=seconds)
    existing = _existing_embeddings(conn, mv.version, cond_ids, tile_ids)
    todo = {cid: np.array([(cid, int(t)) not in existing for t in tile_ids]) for cid in cond_ids}
    need = np.zeros(n, dtype=bool)
    for mask in todo.values():
        need |= mask
    features = np.zeros((n, mv.feature_dim), dtype=np.float32)
    if need.any():
        stored = _existing_features(conn, mv.version, tile_ids[need])
        conn.rollback()
        missing = np.array([need[i] and int(t) not in stored for i, t in enumerate(tile_ids)], dtype=bool)
        for i, t in enumerate(tile_ids):
            if need[i] and not missing[i]:
                features[i] = stored[int(t)]
        result.features_reused = int(need.sum() - missing.sum())
        if missing.any():
            model = get_model(mv, device)
            sub = tiles.slice(0, n)
            idx = np.flatnonzero(missing)
            lap("model")
            report(0, n, f"chunk {chunk}: computing features of {len(idx)} tiles")
            feats = read_and_compute_features(plan.source, TileSet(spec, sub.rows[idx], sub.cols[idx]), model,
                                              limits.batch_size, lap)
            features[idx] = bulk.check_features(feats, mv.feature_dim, len(idx))
            bulk.write_features(conn, mv.version, tile_ids[idx], features[idx], mv.feature_dim)
            conn.commit()
            lap("write")
            result.features_computed = len(idx)
    lat, lon = tiles.centroids()
    all_c, all_t, all_mu, all_var = [], [], [], []
    for k, (cid, cond) in enumerate(zip(cond_ids, plan.conditions, strict=True)):
        mask = todo[cid]
        if not mask.any():
            continue
        model = get_model(mv, device)
        mu, var = compute_gaussians(model, features[mask], lat[mask], lon[mask], cond, limits.batch_size)
        all_c.append(np.full(int(mask.sum()), cid, dtype=np.int32))
        all_t.append(tile_ids[mask])
        all_mu.append(mu)
        all_var.append(var)
        report(n * (k + 1) // len(cond_ids), n, f"chunk {chunk}: condition {k + 1}/{len(cond_ids)}")
    lap("fusion")
    if all_c:
        result.embeddings_written = bulk.write_embeddings(
            conn, mv.version, np.concatenate(all_c), np.concatenate(all_t),
            np.concatenate(all_mu), np.concatenate(all_var), mv.embed_dim,
        )
    result.job_finished = jobs.finish_chunk(conn, job_id, chunk, rows_written=result.embeddings_written)
    conn.commit()
    lap("write")
    log.info("job %s chunk %s: %d tiles, %s", job_id, chunk, n,
             ", ".join(f"{k} {v:.2f}s" for k, v in seconds.items()))
    report(n, n, f"chunk {chunk}: done")
    return result


__all__ = [
    "ChunkResult", "ConditionSpec", "EmbedRequest", "Limits", "Plan", "ProgressFn", "cached_grid", "cached_source",
    "ensure_conditions", "expected_rows", "load_plan", "plan_job", "prepare_job", "resolve_region", "run_chunk",
    "submit", "tiles_per_chunk_hint",
]
