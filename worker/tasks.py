"""Thin Celery tasks (``psm.embed_region``, ``psm.embed_chunk``, ``psm.train``) over plain functions."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import group, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown
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


_POOL_SHARE = 0
"""Torch threads per task slot when PSM_TORCH_THREADS is unset, worked out by :func:`_share_cores`
before the pool forks (0: PyTorch's default). Prefork children inherit it."""


def default_torch_threads(concurrency: int, pool: str, cores: int) -> int:
    """Torch threads for each task slot when PSM_TORCH_THREADS is unset.

    A solo worker runs one task at a time and keeps PyTorch's default (every core). Any other pool
    runs ``concurrency`` tasks at once, so each gets ``cores // concurrency`` threads (at least
    one): a full set of threads in every prefork process makes them fight over the cores.
    """
    if concurrency < 1:
        raise ValueError(f"worker concurrency must be at least 1, got {concurrency}")
    if pool == "solo":
        return 0
    return max(1, cores // concurrency)


def _pool_name(pool_cls: Any) -> str:
    """``solo``, ``prefork``, ``threads``... from a pool given by name or as a class."""
    if isinstance(pool_cls, str):
        return pool_cls.rsplit(":", 1)[0].rsplit(".", 1)[-1]
    return str(getattr(pool_cls, "__module__", "")).rsplit(".", 1)[-1]


def _cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@worker_init.connect
def _share_cores(sender: Any = None, **_: Any) -> None:
    """At worker start (before the pool forks): work out each task slot's share of the cores."""
    global _POOL_SHARE
    pool = _pool_name(getattr(sender, "pool_cls", "prefork"))
    concurrency = getattr(sender, "concurrency", None)
    if get_worker_settings().torch_threads <= 0 and isinstance(concurrency, int) and concurrency >= 1:
        cores = _cores()
        _POOL_SHARE = default_torch_threads(concurrency, pool, cores)
        if _POOL_SHARE:
            log.info("torch threads per task slot: %d (%d cores, %d %s slots; PSM_TORCH_THREADS overrides)",
                     _POOL_SHARE, cores, concurrency, pool)
    # prefork children and the solo pool send worker_process_init; these pools run tasks here without it
    if pool in {"thread", "threads", "gevent", "eventlet"}:
        _limit_threads()


@worker_process_init.connect
def _limit_threads(**_: Any) -> None:
    """Apply PSM_TORCH_THREADS, or else the worker's share of the cores, where tasks run.

    That is every prefork child, and for solo the worker itself.
    """
    threads = get_worker_settings().torch_threads or _POOL_SHARE
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
        log.info("process %d: %d torch threads", os.getpid(), torch.get_num_threads())


def worker_id() -> str:
    """Who holds a chunk's lease: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def chunk_lease(settings: WorkerSettings, job_id: str, chunk: int, worker: str) -> Iterator[None]:
    """Renew the chunk's lease every ``chunk_heartbeat_seconds`` from a thread while the block runs.

    A worker that is killed stops beating; once PSM_CHUNK_LEASE has passed, any live worker's
    scan (:func:`requeue_stale`) re-queues the chunk. The beats use a connection of their own.
    """
    stop = threading.Event()

    def beat() -> None:
        held = False  # until the task has claimed the chunk, a refused renewal means "not yet"
        while not stop.wait(settings.chunk_heartbeat_seconds):
            try:
                with open_db(settings) as conn:
                    renewed = jobs.renew_lease(conn, job_id, chunk, worker)
            except Exception as e:  # noqa: BLE001 - the database may be restarting: beat again later
                log.warning("job %s chunk %s: heartbeat failed: %s", job_id, chunk, e)
                continue
            if held and not renewed:
                return  # finished, failed, or re-queued and claimed by another worker
            held = held or renewed

    thread = threading.Thread(target=beat, name=f"lease-{job_id[:8]}-{chunk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def requeue_stale(settings: WorkerSettings) -> list[tuple[str, int]]:
    """Re-send every chunk whose worker stopped renewing its lease (one scan); returns them."""
    with open_db(settings) as conn:
        sent = jobs.requeue_stale_chunks(conn, settings.chunk_lease,
                                         lambda job_id, chunk: embed_chunk.apply_async(args=[job_id, chunk]))
    for job_id, chunk in sent:
        log.warning("job %s chunk %s: its worker stopped sending heartbeats; re-queued", job_id, chunk)
    return sent


_scanner_stop = threading.Event()


@worker_ready.connect
def _start_stale_scan(**_: Any) -> None:
    """Every worker scans for stale chunks at start-up and then every ``stale_scan_seconds``.

    The scan runs in a thread of the worker's main process, so it goes on whatever the pool is
    doing; no beat process is needed.
    """
    settings = get_worker_settings()
    _scanner_stop.clear()

    def scan() -> None:
        while True:
            try:
                requeue_stale(settings)
            except Exception as e:  # noqa: BLE001 - the database or broker may be down: scan again later
                log.warning("scan for stale chunks failed: %s", e)
            if _scanner_stop.wait(settings.stale_scan_seconds):
                return

    threading.Thread(target=scan, name="psm-stale-chunks", daemon=True).start()


@worker_shutdown.connect
def _stop_stale_scan(**_: Any) -> None:
    _scanner_stop.set()


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

    me = worker_id()
    try:
        with chunk_lease(settings, job_id, chunk, me), open_db(settings) as conn:
            result = embed.run_chunk(conn, job_id, chunk, embed.Limits.from_settings(settings), device=settings.device,
                                     progress=progress, worker=me)
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
