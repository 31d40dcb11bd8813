"""Thin Celery tasks (``psm.embed_region``, ``psm.embed_chunk``, ``psm.train``) over plain functions."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import group, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_init, worker_process_init
from sqlalchemy import Connection

from psm_db import jobs
from psm_db.bulk import EmbeddingValidationError
from psm_db.engine import TRANSIENT_ERRORS, shared_engine
from worker import embed
from worker.app import WorkerSettings, get_worker_settings

log = logging.getLogger(__name__)

PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, LookupError, FileNotFoundError, EmbeddingValidationError,
)


@worker_init.connect
@worker_process_init.connect
def _limit_threads(**_: Any) -> None:
    """Apply PSM_TORCH_THREADS in every process that runs tasks (solo: the worker itself)."""
    threads = get_worker_settings().torch_threads
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


@contextmanager
def open_db(settings: WorkerSettings) -> Iterator[Connection]:
    """A connection for one task from the process's engine (rolled back when the task ends).

    Connection errors are in TRANSIENT_ERRORS (retryable).
    """
    with shared_engine(settings.db_url, application_name="psm-worker").connect() as conn:
        yield conn


def _backoff(retries: int) -> float:
    return float(min(30, 1 + 2 ** min(retries, 5)))


def _record(settings: WorkerSettings, fn: Any, *args: Any, **kwargs: Any) -> None:
    """Write a failure to the database on a best-effort basis (it may be the thing that is down)."""
    try:
        with open_db(settings) as conn:
            fn(conn, *args, **kwargs)
    except Exception as e:  # noqa: BLE001 - reporting must not mask the original error
        log.warning("could not record a failure in the database: %s", e)


@shared_task(name="psm.embed_region", bind=True, max_retries=None)
def embed_region(self: Any, job_id: str) -> dict[str, Any]:
    """Plan a region job, then fan its chunks out as ``psm.embed_chunk`` tasks."""
    settings = get_worker_settings()
    try:
        with open_db(settings) as conn:
            chunks = embed.prepare_job(conn, job_id, embed.Limits.from_settings(settings))
    except TRANSIENT_ERRORS as e:
        log.warning("job %s: planning hit %s; retrying", job_id, e)
        raise self.retry(exc=e, countdown=_backoff(self.request.retries),
                         max_retries=settings.task_max_retries) from e
    if chunks:
        group(embed_chunk.s(job_id, c) for c in chunks).apply_async()
    self.update_state(state="PROGRESS", meta={"job_id": job_id, "chunks_sent": len(chunks)})
    return {"job_id": job_id, "chunks_sent": len(chunks)}


@shared_task(name="psm.embed_chunk", bind=True, max_retries=None)
def embed_chunk(self: Any, job_id: str, chunk: int) -> dict[str, Any]:
    """Embed one chunk of a job; retried on transient errors, the job failed on permanent ones."""
    settings = get_worker_settings()

    def progress(done: int, total: int, message: str) -> None:
        self.update_state(state="PROGRESS",
                          meta={"job_id": job_id, "chunk": chunk, "done": done, "total": total,
                                "message": message})

    try:
        with open_db(settings) as conn:
            result = embed.run_chunk(conn, job_id, chunk, embed.Limits.from_settings(settings), device=settings.device,
                                     progress=progress)
    except TRANSIENT_ERRORS as e:
        retries = self.request.retries
        if retries >= settings.task_max_retries:
            _record(settings, jobs.fail_chunk, job_id, chunk, f"gave up after {retries} retries: {e}",
                    final=True)
            raise
        log.warning("job %s chunk %s: %s; retry %d", job_id, chunk, e, retries + 1)
        _record(settings, jobs.fail_chunk, job_id, chunk, f"retrying after: {e}", final=False)
        raise self.retry(exc=e, countdown=_backoff(retries), max_retries=settings.task_max_retries) from e
    except SoftTimeLimitExceeded:
        _record(settings, jobs.fail_chunk, job_id, chunk,
                f"hit the soft time limit of {settings.task_soft_time_limit} s; lower PSM_CHUNK_TILES "
                "or raise PSM_TASK_SOFT_TIME_LIMIT", final=True)
        raise
    except PERMANENT_ERRORS as e:
        _record(settings, jobs.fail_chunk, job_id, chunk, str(e), final=True)
        raise
    except Exception as e:
        # Anything unforeseen fails the job with its message rather than leaving it running.
        _record(settings, jobs.fail_chunk, job_id, chunk, f"{type(e).__name__}: {e}", final=True)
        raise
    return {
        "job_id": job_id, "chunk": chunk, "tiles": result.tiles, "skipped": result.skipped,
        "features_computed": result.features_computed, "features_reused": result.features_reused,
        "embeddings_written": result.embeddings_written, "tiles_skipped_nodata": result.tiles_skipped_nodata,
        "job_finished": result.job_finished,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "pid": os.getpid(),
    }


@shared_task(name="psm.train", bind=True, max_retries=0)
def train(self: Any, job_id: str) -> dict[str, Any]:
    """Train a model from a dataset folder, register its version and store its metrics."""
    from worker import training

    settings = get_worker_settings()

    def progress(done: int, total: int, message: str) -> None:
        self.update_state(state="PROGRESS", meta={"job_id": job_id, "done": done, "total": total,
                                                  "message": message})
        _record(settings, jobs.set_progress, job_id, done, total, message)

    try:
        with open_db(settings) as conn:
            result = training.run_training_job(conn, job_id, settings, progress=progress)
    except Exception as e:
        _record(settings, jobs.fail_job, job_id, f"training failed: {e}")
        raise
    return result
