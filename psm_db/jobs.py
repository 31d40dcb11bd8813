"""Job rows, chunk rows, events and progress for long-running work (psm.jobs, psm.job_chunks).

Every function takes a SQLAlchemy connection or session (:data:`psm_db.engine.Db`) and works
in its transaction; those that say so commit it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Interval,
    Text,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from psm_db.engine import Db
from psm_db.models import Job, JobChunk, JobEvent, ModelVersion, table_of

log = logging.getLogger(__name__)

JOB_KINDS = ("embed_region", "train", "evaluate")
FINAL_STATES = ("succeeded", "failed", "cancelled")
MAX_ERROR_CHARS = 4_000

_jobs = table_of(Job)
_chunks = table_of(JobChunk)
_events = table_of(JobEvent)


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _id(job_id: uuid.UUID | str) -> uuid.UUID:
    return job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))


def _unfinished() -> Any:
    return _jobs.c.status.not_in(FINAL_STATES)


def create_job(
    db: Db,
    kind: str,
    params: dict[str, Any],
    *,
    model_version: str | None = None,
    status: str = "queued",
    error: str | None = None,
    job_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Insert a job row and return its id (runs in the caller's transaction).

    ``model_version`` is stored only when it names a registered model (the column is a
    foreign key); it is always kept in ``params``.
    """
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}; expected one of {', '.join(JOB_KINDS)}")
    known = None
    if model_version is not None:
        known = db.scalar(select(ModelVersion.version).where(ModelVersion.version == model_version))
    new_id = db.scalar(
        insert(_jobs).values(
            id=job_id or uuid.uuid4(), kind=kind, status=status, params=params, model_version=known,
            error=_clip(error), message=_clip(error.splitlines()[0]) if error else None,
            finished_at=func.now() if status in FINAL_STATES else None,
        ).returning(_jobs.c.id)
    )
    assert new_id is not None
    if error:
        add_event(db, new_id, "error", error)
    return _id(new_id)


def record_rejected(db: Db, kind: str, params: dict[str, Any], error: str) -> uuid.UUID:
    """Store a job that failed validation (status failed, the message in ``error``) and commit."""
    job_id = create_job(db, kind, _jsonable(params), status="failed", error=error)
    db.commit()
    return job_id


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, default=str))


def set_task_id(db: Db, job_id: uuid.UUID | str, task_id: str) -> None:
    """Remember the Celery task that runs the job."""
    db.execute(update(_jobs).where(_jobs.c.id == _id(job_id))
               .values(celery_task_id=task_id, updated_at=func.now()))


def merge_params(db: Db, job_id: uuid.UUID | str, params: dict[str, Any]) -> None:
    """Merge ``params`` into the job's stored params (top-level keys replaced; caller commits)."""
    db.execute(update(_jobs).where(_jobs.c.id == _id(job_id))
               .values(params=_jobs.c.params.op("||")(bindparam("extra", params, type_=JSONB))))


def record_chunk_skipped(db: Db, job_id: uuid.UUID | str, chunk: int, skipped: int) -> int:
    """Keep a chunk's count of tiles skipped for lack of data in the job's result; return the job's total.

    Counted per chunk (``result["skipped_nodata_chunks"]``), so a chunk that runs twice is counted
    once; ``result["tiles_skipped_nodata"]`` is their sum. Locks the job row (caller commits).
    """
    row = db.execute(select(_jobs.c.result).where(_jobs.c.id == _id(job_id)).with_for_update()).first()
    result = dict((row[0] if row is not None else None) or {})
    per_chunk = dict(result.get("skipped_nodata_chunks") or {})
    per_chunk[str(int(chunk))] = int(skipped)
    result["skipped_nodata_chunks"] = per_chunk
    result["tiles_skipped_nodata"] = total = sum(int(v) for v in per_chunk.values())
    db.execute(update(_jobs).where(_jobs.c.id == _id(job_id))
               .values(result=bindparam("result", result, type_=JSONB)))
    return total


def append_message(db: Db, job_id: uuid.UUID | str, text: str) -> None:
    """Append ``; text`` to the job's message (caller commits)."""
    db.execute(update(_jobs).where(_jobs.c.id == _id(job_id))
               .values(message=func.concat_ws("; ", _jobs.c.message, text)))


def set_model_version(db: Db, job_id: uuid.UUID | str, version: str) -> None:
    """Point the job at the model version it made (caller commits)."""
    db.execute(update(_jobs).where(_jobs.c.id == _id(job_id)).values(model_version=version))


def get_job(db: Db, job_id: uuid.UUID | str) -> dict[str, Any] | None:
    """The job row as a dict (every column of psm.jobs), or None."""
    row = db.execute(select(_jobs).where(_jobs.c.id == _id(job_id))).mappings().first()
    return None if row is None else dict(row)


def job_events(db: Db, job_id: uuid.UUID | str) -> list[tuple[str, str]]:
    """(level, message) of a job's events, oldest first."""
    rows = db.execute(select(_events.c.level, _events.c.message)
                      .where(_events.c.job_id == _id(job_id)).order_by(_events.c.id)).all()
    return [(r[0], r[1]) for r in rows]


def add_event(db: Db, job_id: uuid.UUID | str, level: str, message: str) -> None:
    """Append an event to the job's log (in the caller's transaction)."""
    db.execute(insert(_events).values(job_id=_id(job_id), level=level, message=_clip(message)))


def _lock_status(db: Db, job_id: uuid.UUID | str) -> str | None:
    """The job's status, its row locked until the transaction ends (None: no such job)."""
    status: str | None = db.scalar(select(_jobs.c.status).where(_jobs.c.id == _id(job_id)).with_for_update())
    return status


def start_job(db: Db, job_id: uuid.UUID | str, chunk_tiles: Sequence[int], message: str = "") -> bool:
    """Mark the job running and create its chunk rows (idempotent: a second call changes nothing).

    Returns False when the job is already in a final state (nothing to do).
    """
    status = _lock_status(db, job_id)
    if status is None:
        raise LookupError(f"job {job_id} does not exist")
    if status in FINAL_STATES:
        return False
    jid = _id(job_id)
    db.execute(update(_jobs).where(_jobs.c.id == jid).values(
        status="running", total=int(sum(chunk_tiles)), message=message or None,
        started_at=func.coalesce(_jobs.c.started_at, func.now()), updated_at=func.now(),
    ))
    if chunk_tiles:
        db.execute(pg_insert(_chunks).on_conflict_do_nothing(index_elements=[_chunks.c.job_id, _chunks.c.chunk]),
                   [{"job_id": jid, "chunk": i, "tiles": int(n)} for i, n in enumerate(chunk_tiles)])
    return True


def claim_chunk(db: Db, job_id: uuid.UUID | str, chunk: int, worker: str | None = None) -> str | None:
    """Count an attempt at a chunk and mark it running; return its previous status.

    Returns None when the chunk row does not exist, and the status ``succeeded`` when the
    chunk is already done (the caller then skips it). A chunk it marks running gets a fresh
    lease (``heartbeat_at``) held by ``worker``, which :func:`renew_lease` keeps renewing.
    Commits.
    """
    old = _chunks.alias("old")
    done = _chunks.c.status == "succeeded"
    previous = db.scalar(
        update(_chunks)
        .where(_chunks.c.job_id == old.c.job_id, _chunks.c.chunk == old.c.chunk,
               _chunks.c.job_id == _id(job_id), _chunks.c.chunk == int(chunk))
        .values(attempts=_chunks.c.attempts + 1, updated_at=func.now(),
                status=case((done, _chunks.c.status), else_=literal("running")),
                heartbeat_at=case((done, _chunks.c.heartbeat_at), else_=func.now()),
                worker=case((done, _chunks.c.worker), else_=literal(worker, Text)))
        .returning(old.c.status)
    )
    db.commit()
    return previous


def renew_lease(db: Db, job_id: uuid.UUID | str, chunk: int, worker: str | None) -> bool:
    """The heartbeat of a running chunk: renew its lease while ``worker`` still holds it. Commits.

    Returns False when the chunk is no longer running under ``worker`` (it finished, failed, or
    was re-queued as stale and claimed by another worker): the caller then stops beating.
    """
    c = _chunks.c
    held = db.execute(update(_chunks).where(
        c.job_id == _id(job_id), c.chunk == int(chunk), c.status == "running",
        c.worker.is_(None) if worker is None else c.worker == worker,
    ).values(heartbeat_at=func.now()).returning(c.chunk)).first()
    db.commit()
    return held is not None


def _stale(lease_seconds: float) -> Any:
    """Running chunks of running jobs whose lease ran out (no heartbeat for ``lease_seconds``)."""
    c = _chunks.c
    last = func.coalesce(c.heartbeat_at, c.updated_at)
    return (c.status == "running") & (last < func.now() - literal(timedelta(seconds=float(lease_seconds)), Interval))


def stale_chunks(db: Db, job_id: uuid.UUID | str, lease_seconds: float) -> list[dict[str, Any]]:
    """The chunks of a job marked running whose worker has not renewed their lease for ``lease_seconds``.

    Each is a dict of chunk, worker and silent_s (seconds since the last heartbeat).
    """
    c = _chunks.c
    silent = func.extract("epoch", func.now() - func.coalesce(c.heartbeat_at, c.updated_at))
    rows = db.execute(select(c.chunk, c.worker, silent.label("silent_s"))
                      .where(c.job_id == _id(job_id), _stale(lease_seconds)).order_by(c.chunk)).mappings()
    return [{"chunk": int(r["chunk"]), "worker": r["worker"], "silent_s": float(r["silent_s"])} for r in rows]


def requeue_stale_chunks(db: Db, lease_seconds: float,
                         send: Callable[[str, int], object]) -> list[tuple[str, int]]:
    """Re-queue every stale chunk of a running job: ``send(job_id, chunk)``, then mark it queued.

    A chunk is stale when it is marked running but its worker has not renewed the lease for
    ``lease_seconds`` (the worker was killed, or lost its machine). The rows are locked with SKIP
    LOCKED, so of several workers scanning at once each chunk is re-sent by one; a send that
    fails (the broker is down) rolls everything back and raises, and the next scan tries again.
    Re-running a chunk is safe: its writes are idempotent and a chunk that succeeded is skipped.
    Returns the (job id, chunk) pairs re-sent. Commits.
    """
    c = _chunks.c
    rows = db.execute(
        select(c.job_id, c.chunk, c.worker).join(_jobs, _jobs.c.id == c.job_id)
        .where(_stale(lease_seconds), _jobs.c.status == "running")
        .order_by(c.job_id, c.chunk).with_for_update(of=_chunks, skip_locked=True)
    ).all()
    done: list[tuple[str, int]] = []
    try:
        for job_id, chunk, worker in rows:
            send(str(job_id), int(chunk))
            note = (f"re-queued: its worker {worker or '?'} sent no heartbeat for {lease_seconds:g} s "
                    "(PSM_CHUNK_LEASE); it probably died")
            db.execute(update(_chunks).where(c.job_id == job_id, c.chunk == chunk)
                       .values(status="queued", heartbeat_at=None, error=note, updated_at=func.now()))
            add_event(db, job_id, "warning", f"chunk {chunk}: {note}")
            done.append((str(job_id), int(chunk)))
    except BaseException:
        db.rollback()
        raise
    db.commit()
    return done


def finish_chunk(db: Db, job_id: uuid.UUID | str, chunk: int, rows_written: int = 0) -> bool:
    """Mark a chunk succeeded, update the job's progress, and finish the job after its last chunk.

    Call it in the same transaction as the chunk's writes, so the chunk is counted exactly
    when its rows are committed. The job row is locked, so concurrent chunks count
    correctly. Returns True when this call completed the job.
    """
    status = _lock_status(db, job_id)
    if status is None:
        raise LookupError(f"job {job_id} does not exist")
    jid = _id(job_id)
    # How many rows this job itself inserted (rows another job wrote first are not counted).
    so_far = func.coalesce(_jobs.c.result["rows_written"].astext.cast(BigInteger), 0)
    db.execute(update(_jobs).where(_jobs.c.id == jid).values(result=func.jsonb_set(
        func.coalesce(_jobs.c.result, cast(literal("{}"), JSONB)), literal(["rows_written"], ARRAY(Text)),
        func.to_jsonb(so_far + cast(literal(int(rows_written)), BigInteger)), type_=JSONB,
    )))
    db.execute(update(_chunks).where(_chunks.c.job_id == jid, _chunks.c.chunk == int(chunk))
               .values(status="succeeded", error=None, heartbeat_at=None, updated_at=func.now()))
    succeeded = _chunks.c.status == "succeeded"
    counts = db.execute(select(
        func.coalesce(func.sum(_chunks.c.tiles).filter(succeeded), 0),
        func.count().filter(_chunks.c.status != "succeeded"), func.count(),
    ).where(_chunks.c.job_id == jid)).one_or_none()
    done, left, n_chunks = counts if counts is not None else (0, 0, 0)
    if status in FINAL_STATES:
        return False
    if left == 0:
        db.execute(update(_jobs).where(_jobs.c.id == jid).values(
            status="succeeded", done=done, finished_at=func.now(), updated_at=func.now(),
            message=f"done: {n_chunks} chunk(s), {done} tile(s)",
        ))
        add_event(db, jid, "info", f"job finished: {n_chunks} chunk(s), {done} tile(s)")
        return True
    db.execute(update(_jobs).where(_jobs.c.id == jid).values(
        done=done, updated_at=func.now(), message=f"{n_chunks - left}/{n_chunks} chunks"))
    return False


def fail_chunk(db: Db, job_id: uuid.UUID | str, chunk: int, error: str, *, final: bool) -> None:
    """Record a chunk error; when ``final`` (no retries left or a permanent error) fail the job. Commits."""
    jid = _id(job_id)
    db.execute(update(_chunks)
               .where(_chunks.c.job_id == jid, _chunks.c.chunk == int(chunk), _chunks.c.status != "succeeded")
               .values(status="failed" if final else "queued", error=_clip(error), heartbeat_at=None,
                       updated_at=func.now()))
    add_event(db, jid, "error" if final else "warning", f"chunk {chunk}: {error}")
    if final:
        fail_job(db, jid, f"chunk {chunk} failed: {error}", commit=False)
    db.commit()


def fail_job(db: Db, job_id: uuid.UUID | str, error: str, *, commit: bool = True) -> None:
    """Mark a job failed with a clear message (unless it already finished)."""
    jid = _id(job_id)
    db.execute(update(_jobs).where(_jobs.c.id == jid, _unfinished()).values(
        status="failed", error=_clip(error), message=_clip(error.splitlines()[0] if error else None),
        finished_at=func.now(), updated_at=func.now(),
    ))
    add_event(db, jid, "error", error)
    if commit:
        db.commit()


def succeed_job(db: Db, job_id: uuid.UUID | str, result: dict[str, Any], message: str = "done") -> None:
    """Mark a single-step job (train, evaluate) succeeded with its result. Commits."""
    jid = _id(job_id)
    db.execute(update(_jobs).where(_jobs.c.id == jid).values(
        status="succeeded", result=_jsonable(result), message=message, done=_jobs.c.total,
        finished_at=func.now(), updated_at=func.now(),
    ))
    add_event(db, jid, "info", message)
    db.commit()


def set_progress(db: Db, job_id: uuid.UUID | str, done: int, total: int, message: str | None = None) -> None:
    """Write progress of a single-step job (commits)."""
    db.execute(update(_jobs).where(_jobs.c.id == _id(job_id), _unfinished()).values(
        status="running", done=max(0, int(done)), total=max(0, int(total)),
        message=func.coalesce(bindparam("new_message", message, type_=Text), _jobs.c.message),
        started_at=func.coalesce(_jobs.c.started_at, func.now()), updated_at=func.now(),
    ))
    db.commit()


def chunk_states(db: Db, job_id: uuid.UUID | str) -> list[dict[str, Any]]:
    """All chunk rows of a job (chunk, status, tiles, attempts, error), in chunk order."""
    c = _chunks.c
    rows = db.execute(select(c.chunk, c.status, c.tiles, c.attempts, c.error)
                      .where(c.job_id == _id(job_id)).order_by(c.chunk)).mappings()
    return [dict(r) for r in rows]
