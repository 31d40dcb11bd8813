"""Embed a region: submit and prepare a job, then embed one chunk of tiles (plain, Celery-free functions).

The job's inputs and its plan (region, grids, chunks) are in :mod:`worker.plan`.
"""

from __future__ import annotations

import contextlib
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
from psm_db.engine import TRANSIENT_ERRORS
from psm_db.models import Embedding, Tile, TileFeature
from psm_db.tiles import TileSet, upsert_tiles
from worker.model_runner import compute_gaussians, get_model, read_valid_and_compute_features
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
    and no tile or embedding is written. A ``send`` that fails (the broker is down) marks the
    job failed with its message and re-raises.
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
    task_id = send_or_fail(conn, job_id, send)
    jobs.set_task_id(conn, job_id, task_id)
    conn.commit()
    return job_id, plan


def send_or_fail(conn: Connection, job_id: uuid.UUID, send: Callable[[str], str]) -> str:
    """``send(job_id)``; when that fails (the broker is down), mark the job failed and re-raise.

    The job row is committed before the task is sent (a worker may pick it up at once), so a
    send that fails would otherwise leave it ``queued`` for ever.
    """
    try:
        return send(str(job_id))
    except Exception as e:
        conn.rollback()
        jobs.fail_job(conn, job_id, f"not queued: {e}")
        raise


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
    tiles_skipped_nodata: int = 0
    """Tiles not embedded: under the imagery's ``min_valid`` share of their pixels hold data."""
    skipped: bool = False
    job_finished: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per step: plan, read, features, fusion, write."""


def _stored_tile_ids(conn: Connection, tiles: TileSet) -> np.ndarray:
    """The ids of ``tiles`` already in psm.tiles (-1 where a tile is not stored); writes nothing."""
    out = np.full(len(tiles), -1, dtype=np.int64)
    if len(tiles) == 0:
        return out
    spec = tiles.spec
    keys = func.unnest(literal(tiles.rows.tolist(), ARRAY(Integer)), literal(tiles.cols.tolist(), ARRAY(Integer))) \
        .table_valued("grid_row", "grid_col", with_ordinality="i").render_derived(name="k")
    rows = conn.execute(
        select(keys.c.i, Tile.id).join(Tile, (Tile.grid_row == keys.c.grid_row) & (Tile.grid_col == keys.c.grid_col))
        .where(Tile.imagery_source == spec.imagery_source, Tile.gsd == float(spec.gsd),
               Tile.size_px == int(spec.size_px), Tile.zoom == int(spec.zoom))
    ).all()
    for i, tile_id in rows:
        out[int(i) - 1] = int(tile_id)
    return out


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


def _skip_message(skipped: int, of: int, min_valid: float) -> str:
    return (f"{skipped} of {of} tile(s) skipped for lack of data: under {min_valid:.0%} of their pixels hold "
            "data (nodata, masked or outside the imagery); lower --min-valid to embed them anyway")


def _finish_message(conn: Connection, job_id: str, min_valid: float) -> None:
    """After the last chunk: say in the job's message and events how many tiles had too little data."""
    row = jobs.get_job(conn, job_id)
    skipped = int(((row or {}).get("result") or {}).get("tiles_skipped_nodata") or 0)
    if row is None or not skipped:
        return
    done = int(row["done"])
    jobs.append_message(conn, job_id, f"{skipped} tile(s) skipped for lack of data")
    if skipped >= done:
        jobs.add_event(conn, job_id, "warning",
                       f"nothing was embedded: no tile holds data in {min_valid:.0%} of its pixels or more; "
                       "does the region lie in the imagery's nodata border?")
    else:
        jobs.add_event(conn, job_id, "info", _skip_message(skipped, done, min_valid))


def run_chunk(
    conn: Connection,
    job_id: str,
    chunk: int,
    limits: Limits,
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
    worker: str | None = None,
) -> ChunkResult:
    """Embed one chunk of a job; safe to run twice or concurrently (idempotent writes).

    Steps: find which of the chunk's tiles lack an embedding (reads only); read their imagery
    with its share of valid pixels and compute the image features of those that hold enough
    data and have none stored for this model; run fusion and heads for each condition. Only
    then write the chunk in one transaction: its tiles, features, embeddings and the chunk's
    success. A tile with less than the imagery's ``min_valid`` share of data is skipped (no
    tile, features or embeddings row) and counted in the job's result. Any error (e.g. a
    truncated file) leaves nothing of the chunk behind. ``worker`` names who holds the chunk's
    lease (:func:`psm_db.jobs.claim_chunk`); the caller keeps it renewed while this runs.
    """
    report = progress or (lambda done, total, msg: None)
    clock = [time.perf_counter()]
    seconds: dict[str, float] = {}

    def lap(step: str) -> None:
        now = time.perf_counter()
        seconds[step] = seconds.get(step, 0.0) + now - clock[0]
        clock[0] = now

    previous = jobs.claim_chunk(conn, job_id, chunk, worker)
    if previous is None:
        raise LookupError(f"job {job_id} has no chunk {chunk}")
    job, plan = load_plan(conn, job_id, limits)
    if previous == "succeeded" or job["status"] in jobs.FINAL_STATES:
        return ChunkResult(chunk, 0, skipped=True)
    spec = plan.specs[plan.chunks[chunk][0]]
    tiles = plan.tiles(chunk)
    n = len(tiles)
    min_valid = plan.min_valid
    report(0, n, f"chunk {chunk}: {n} tiles")
    try:
        cond_ids = ensure_conditions(conn, plan.conditions)  # created by prepare_job: nothing new
        stored_ids = _stored_tile_ids(conn, tiles)
        mv = plan.model
        existing = _existing_embeddings(conn, mv.version, cond_ids, stored_ids[stored_ids >= 0])
        todo = {cid: np.array([t < 0 or (cid, int(t)) not in existing for t in stored_ids]) for cid in cond_ids}
        need = np.zeros(n, dtype=bool)
        for mask in todo.values():
            need |= mask
        stored = _existing_features(conn, mv.version, stored_ids[need & (stored_ids >= 0)]) if need.any() else {}
        conn.rollback()  # nothing was written: end the read-only transaction before the long part
        lap("plan")
        result = ChunkResult(chunk, n, seconds=seconds)
        features = np.zeros((n, mv.feature_dim), dtype=np.float32)
        keep = need.copy()  # tiles to write: needed and holding enough data
        computed = np.zeros(n, dtype=bool)
        if need.any():
            missing = np.array([need[i] and int(t) not in stored for i, t in enumerate(stored_ids)], dtype=bool)
            # a tile with stored features is read again only to learn its share of valid pixels,
            # which a complete source (the world) does not need: new conditions then cost fusion only
            idx = np.flatnonzero(missing if plan.source.complete else need)
            if len(idx):
                sub = TileSet(spec, tiles.rows[idx], tiles.cols[idx])
                model = get_model(mv, device)
                lap("model")
                report(0, n, f"chunk {chunk}: reading {len(idx)} tiles, computing features of {int(missing.sum())}")
                feats, valid = read_valid_and_compute_features(plan.source, sub, model, limits.batch_size,
                                                               compute=missing[idx], min_valid=min_valid, lap=lap)
                enough = valid >= min_valid
                keep[idx] = enough
                computed[idx] = missing[idx] & enough
                if computed.any():
                    features[computed] = bulk.check_features(feats[computed[idx]], mv.feature_dim, int(computed.sum()))
                result.tiles_skipped_nodata = int(len(idx) - enough.sum())
            for i in np.flatnonzero(keep & ~computed):
                features[i] = stored[int(stored_ids[i])]
            result.features_computed = int(computed.sum())
            result.features_reused = int(keep.sum() - computed.sum())
        lat, lon = tiles.centroids()
        gaussians: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        for k, (cid, cond) in enumerate(zip(cond_ids, plan.conditions, strict=True)):
            mask = todo[cid] & keep
            if not mask.any():
                continue
            model = get_model(mv, device)
            mu, var = compute_gaussians(model, features[mask], lat[mask], lon[mask], cond, limits.batch_size)
            gaussians.append((cid, np.flatnonzero(mask), mu, var))
            report(n * (k + 1) // len(cond_ids), n, f"chunk {chunk}: condition {k + 1}/{len(cond_ids)}")
        lap("fusion")

        # ---- everything below is one transaction: the chunk is written whole or not at all
        written = np.flatnonzero(keep)
        tile_ids = np.full(n, -1, dtype=np.int64)
        if len(written):
            tile_ids[written] = upsert_tiles(conn, TileSet(spec, tiles.rows[written], tiles.cols[written]))
        if computed.any():
            order = np.flatnonzero(computed)[np.argsort(tile_ids[computed], kind="stable")]  # lock order
            bulk.write_features(conn, mv.version, tile_ids[order], features[order], mv.feature_dim)
        if gaussians:
            c = np.concatenate([np.full(len(i), cid, dtype=np.int32) for cid, i, _, _ in gaussians])
            t = np.concatenate([tile_ids[i] for _, i, _, _ in gaussians])
            mu_all = np.concatenate([mu for _, _, mu, _ in gaussians])
            var_all = np.concatenate([var for _, _, _, var in gaussians])
            order = np.lexsort((t, c))
            result.embeddings_written = bulk.write_embeddings(conn, mv.version, c[order], t[order],
                                                              mu_all[order], var_all[order], mv.embed_dim)
        if result.tiles_skipped_nodata:
            jobs.record_chunk_skipped(conn, job_id, chunk, result.tiles_skipped_nodata)
            jobs.add_event(conn, job_id, "info",
                           f"chunk {chunk}: " + _skip_message(result.tiles_skipped_nodata, n, min_valid))
        result.job_finished = jobs.finish_chunk(conn, job_id, chunk, rows_written=result.embeddings_written)
        if result.job_finished:
            _finish_message(conn, job_id, min_valid)
        conn.commit()
    except BaseException:
        with contextlib.suppress(*TRANSIENT_ERRORS):  # a lost connection has rolled back already
            conn.rollback()
        raise
    lap("write")
    log.info("job %s chunk %s: %d tiles (%d skipped for lack of data), %s", job_id, chunk, n,
             result.tiles_skipped_nodata, ", ".join(f"{k} {v:.2f}s" for k, v in seconds.items()))
    report(n, n, f"chunk {chunk}: done")
    return result


__all__ = [
    "ChunkResult", "ConditionSpec", "EmbedRequest", "Limits", "Plan", "ProgressFn", "cached_grid", "cached_source",
    "ensure_conditions", "expected_rows", "load_plan", "plan_job", "prepare_job", "resolve_region", "run_chunk",
    "send_or_fail", "submit", "tiles_per_chunk_hint",
]
