"""Job rows, chunk rows, events and progress for long-running work (psm.jobs, psm.job_chunks)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

log = logging.getLogger(__name__)

JOB_KINDS = ("embed_region", "train", "evaluate")
FINAL_STATES = ("succeeded", "failed", "cancelled")
MAX_ERROR_CHARS = 4_000


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def create_job(
    conn: psycopg.Connection,
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
        row = conn.execute(
            "SELECT version FROM psm.model_versions WHERE version = %s", (model_version,)
        ).fetchone()
        known = row[0] if row else None
    finished = "now()" if status in FINAL_STATES else "NULL"
    row = conn.execute(
        "INSERT INTO psm.jobs (id, kind, status, params, model_version, error, message, finished_at) "
        f"VALUES (%s, %s, %s, %s, %s, %s, %s, {finished}) RETURNING id",
        (job_id or uuid.uuid4(), kind, status, Jsonb(params), known, _clip(error),
         _clip(error.splitlines()[0]) if error else None),
    ).fetchone()
    assert row is not None
    if error:
        add_event(conn, row[0], "error", error)
    return uuid.UUID(str(row[0]))


def record_rejected(conn: psycopg.Connection, kind: str, params: dict[str, Any], error: str) -> uuid.UUID:
    """Store a job that failed validation (status failed, the message in ``error``) and commit."""
    job_id = create_job(conn, kind, _jsonable(params), status="failed", error=error)
    conn.commit()
    return job_id


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, default=str))


def set_task_id(conn: psycopg.Connection, job_id: uuid.UUID | str, task_id: str) -> None:
    """Remember the Celery task that runs the job."""
    conn.execute("UPDATE psm.jobs SET celery_task_id = %s, updated_at = now() WHERE id = %s",
                 (task_id, job_id))


def get_job(conn: psycopg.Connection, job_id: uuid.UUID | str) -> dict[str, Any] | None:
    """The job row as a dict, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM psm.jobs WHERE id = %s", (str(job_id),)).fetchone()


def job_events(conn: psycopg.Connection, job_id: uuid.UUID | str) -> list[tuple[str, str]]:
    """(level, message) of a job's events, oldest first."""
    rows = conn.execute("SELECT level, message FROM psm.job_events WHERE job_id = %s ORDER BY id",
                        (str(job_id),)).fetchall()
    return [(r[0], r[1]) for r in rows]


def add_event(conn: psycopg.Connection, job_id: uuid.UUID | str, level: str, message: str) -> None:
    """Append an event to the job's log (in the caller's transaction)."""
    conn.execute("INSERT INTO psm.job_events (job_id, level, message) VALUES (%s, %s, %s)",
                 (str(job_id), level, _clip(message)))


def start_job(
    conn: psycopg.Connection, job_id: uuid.UUID | str, chunk_tiles: Sequence[int], message: str = ""
) -> bool:
    """Mark the job running and create its chunk rows (idempotent: a second call changes nothing).

    Returns False when the job is already in a final state (nothing to do).
    """
    row = conn.execute("SELECT status FROM psm.jobs WHERE id = %s FOR UPDATE", (str(job_id),)).fetchone()
    if row is None:
        raise LookupError(f"job {job_id} does not exist")
    if row[0] in FINAL_STATES:
        return False
    total = int(sum(chunk_tiles))
    conn.execute(
        "UPDATE psm.jobs SET status = 'running', total = %s, message = %s,"
        " started_at = COALESCE(started_at, now()), updated_at = now() WHERE id = %s",
        (total, message or None, str(job_id)),
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO psm.job_chunks (job_id, chunk, tiles) VALUES (%s, %s, %s)"
            " ON CONFLICT (job_id, chunk) DO NOTHING",
            [(str(job_id), i, int(n)) for i, n in enumerate(chunk_tiles)],
        )
    return True


def claim_chunk(conn: psycopg.Connection, job_id: uuid.UUID | str, chunk: int) -> str | None:
    """Count an attempt at a chunk and mark it running; return its previous status.

    Returns None when the chunk row does not exist, and the status ``succeeded`` when the
    chunk is already done (the caller then skips it). Commits.
    """
    row = conn.execute(
        "UPDATE psm.job_chunks c SET attempts = c.attempts + 1, updated_at = now(),"
        " status = CASE WHEN c.status = 'succeeded' THEN c.status ELSE 'running' END"
        " FROM psm.job_chunks old WHERE c.job_id = old.job_id AND c.chunk = old.chunk"
        " AND c.job_id = %s AND c.chunk = %s RETURNING old.status",
        (str(job_id), chunk),
    ).fetchone()
    conn.commit()
    return row[0] if row else None


def finish_chunk(conn: psycopg.Connection, job_id: uuid.UUID | str, chunk: int, rows_written: int = 0) -> bool:
    """Mark a chunk succeeded, update the job's progress, and finish the job after its last chunk.

    Call it in the same transaction as the chunk's writes, so the chunk is counted exactly
    when its rows are committed. The job row is locked, so concurrent chunks count
    correctly. Returns True when this call completed the job.
    """
    job = conn.execute("SELECT status FROM psm.jobs WHERE id = %s FOR UPDATE", (str(job_id),)).fetchone()
    if job is None:
        raise LookupError(f"job {job_id} does not exist")
    # How many rows this job itself inserted (rows another job wrote first are not counted).
    conn.execute(
        "UPDATE psm.jobs SET result = jsonb_set(COALESCE(result, '{}'::jsonb), '{rows_written}',"
        " to_jsonb(COALESCE((result->>'rows_written')::bigint, 0) + %s::bigint)) WHERE id = %s",
        (int(rows_written), str(job_id)),
    )
    conn.execute(
        "UPDATE psm.job_chunks SET status = 'succeeded', error = NULL, updated_at = now()"
        " WHERE job_id = %s AND chunk = %s",
        (str(job_id), chunk),
    )
    done, left, n_chunks = conn.execute(
        "SELECT COALESCE(sum(tiles) FILTER (WHERE status = 'succeeded'), 0),"
        " count(*) FILTER (WHERE status <> 'succeeded'), count(*)"
        " FROM psm.job_chunks WHERE job_id = %s",
        (str(job_id),),
    ).fetchone() or (0, 0, 0)
    if job[0] in FINAL_STATES:
        return False
    if left == 0:
        conn.execute(
            "UPDATE psm.jobs SET status = 'succeeded', done = %s, finished_at = now(), updated_at = now(),"
            " message = %s WHERE id = %s",
            (done, f"done: {n_chunks} chunk(s), {done} tile(s)", str(job_id)),
        )
        add_event(conn, job_id, "info", f"job finished: {n_chunks} chunk(s), {done} tile(s)")
        return True
    conn.execute(
        "UPDATE psm.jobs SET done = %s, updated_at = now(), message = %s WHERE id = %s",
        (done, f"{n_chunks - left}/{n_chunks} chunks", str(job_id)),
    )
    return False


def fail_chunk(
    conn: psycopg.Connection, job_id: uuid.UUID | str, chunk: int, error: str, *, final: bool
) -> None:
    """Record a chunk error; when ``final`` (no retries left or a permanent error) fail the job. Commits."""
    conn.execute(
        "UPDATE psm.job_chunks SET status = %s, error = %s, updated_at = now()"
        " WHERE job_id = %s AND chunk = %s AND status <> 'succeeded'",
        ("failed" if final else "queued", _clip(error), str(job_id), chunk),
    )
    add_event(conn, job_id, "error" if final else "warning", f"chunk {chunk}: {error}")
    if final:
        fail_job(conn, job_id, f"chunk {chunk} failed: {error}", commit=False)
    conn.commit()


def fail_job(conn: psycopg.Connection, job_id: uuid.UUID | str, error: str, *, commit: bool = True) -> None:
    """Mark a job failed with a clear message (unless it already finished)."""
    conn.execute(
        "UPDATE psm.jobs SET status = 'failed', error = %s, message = %s, finished_at = now(),"
        " updated_at = now() WHERE id = %s AND status NOT IN ('succeeded', 'failed', 'cancelled')",
        (_clip(error), _clip(error.splitlines()[0] if error else None), str(job_id)),
    )
    add_event(conn, job_id, "error", error)
    if commit:
        conn.commit()


def succeed_job(conn: psycopg.Connection, job_id: uuid.UUID | str, result: dict[str, Any], message: str = "done") -> None:
    """Mark a single-step job (train, evaluate) succeeded with its result. Commits."""
    conn.execute(
        "UPDATE psm.jobs SET status = 'succeeded', result = %s, message = %s, done = total,"
        " finished_at = now(), updated_at = now() WHERE id = %s",
        (Jsonb(_jsonable(result)), message, str(job_id)),
    )
    add_event(conn, job_id, "info", message)
    conn.commit()


def set_progress(
    conn: psycopg.Connection, job_id: uuid.UUID | str, done: int, total: int, message: str | None = None
) -> None:
    """Write progress of a single-step job (commits)."""
    conn.execute(
        "UPDATE psm.jobs SET status = 'running', done = %s, total = %s, message = COALESCE(%s, message),"
        " started_at = COALESCE(started_at, now()), updated_at = now() WHERE id = %s"
        " AND status NOT IN ('succeeded', 'failed', 'cancelled')",
        (max(0, int(done)), max(0, int(total)), message, str(job_id)),
    )
    conn.commit()


def chunk_states(conn: psycopg.Connection, job_id: uuid.UUID | str) -> list[dict[str, Any]]:
    """All chunk rows of a job, in chunk order."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT chunk, status, tiles, attempts, error FROM psm.job_chunks WHERE job_id = %s ORDER BY chunk",
            (str(job_id),),
        ).fetchall()
