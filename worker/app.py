"""The Celery app, made from the settings: Redis broker and results, late acks, explicit limits."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from psm_db.settings import Settings


class WorkerSettings(Settings):
    """The service settings plus the worker's own knobs (``PSM_QUEUE`` and friends)."""

    queue: str = "psm"
    """Queue the tasks go to and workers consume (one per deployment or test session)."""
    visibility_timeout: int = 0
    """Seconds before Redis hands an unacknowledged task (its worker died) to another worker;
    0 means the hard time limit plus five minutes. It must exceed the longest task."""
    torch_threads: int = 0
    """CPU threads per worker process for PyTorch; 0: a prefork process gets cores // concurrency
    (at least 1), a solo worker PyTorch's default (worker.tasks.default_torch_threads)."""
    restore_interval: int = 10
    """Seconds between a worker's scans for tasks whose worker died (their visibility timed out)."""
    task_max_retries: int = 20
    """Retries of a chunk on transient errors (database restart, deadlock, lost connection)."""
    heartbeat_interval: float = 0.0
    """Seconds between the heartbeats of a running chunk; 0 means a quarter of PSM_CHUNK_LEASE."""
    stale_scan_interval: float = 0.0
    """Seconds between a worker's scans for stale chunks to re-queue; 0 means a quarter of
    PSM_CHUNK_LEASE. Every worker scans (at start-up and then on this period)."""
    broker_connect_timeout: float = 4.0
    """Seconds to wait for the broker (and the Redis result store) to answer a connection; a
    submission fails after about twice this when they are down, instead of hanging."""

    @property
    def chunk_heartbeat_seconds(self) -> float:
        """The effective seconds between a running chunk's heartbeats."""
        return self.heartbeat_interval or max(0.2, self.chunk_lease / 4)

    @property
    def stale_scan_seconds(self) -> float:
        """The effective seconds between a worker's scans for stale chunks."""
        return self.stale_scan_interval or max(0.2, self.chunk_lease / 4)

    @property
    def broker_visibility_timeout(self) -> int:
        """The effective Redis visibility timeout in seconds."""
        return self.visibility_timeout or self.task_time_limit + 300


UNACKED_MUTEX_EXPIRE = 5
"""Seconds the lock of a restore scan (unacknowledged tasks back to the queue) outlives its holder."""


@lru_cache(maxsize=1)
def get_worker_settings() -> WorkerSettings:
    """The process-wide worker settings, read once from the environment."""
    return WorkerSettings()


def create_app(settings: WorkerSettings | None = None) -> Celery:
    """Build the Celery app for ``settings`` (default: read from the environment).

    * Redis is both broker and result backend; job state also lives in ``psm.jobs``.
    * ``task_acks_late`` with a prefetch of 1 and ``task_reject_on_worker_lost``: a task whose
      worker dies is delivered again (all tasks are idempotent).
    * Soft and hard time limits from the settings; explicit task names (``psm.*``).
    """
    s = settings or get_worker_settings()
    app = Celery("psm", broker=s.broker, backend=s.results, include=["worker.tasks"])
    transport = {
        "visibility_timeout": s.broker_visibility_timeout,
        "unacked_restore_interval": max(1, s.restore_interval),
        "unacked_restore_throttle": 1,
        # Each restore scan holds a Redis lock shared by every worker. Kombu's default lease on it
        # is 300 s, so a worker SIGKILLed mid-scan (a scan runs right after each task, when the
        # loop catches up) stopped all restores for five minutes; a scan takes milliseconds.
        "unacked_mutex_expire": UNACKED_MUTEX_EXPIRE,
        "socket_connect_timeout": s.broker_connect_timeout,
    }
    app.conf.update(
        task_default_queue=s.queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=s.task_soft_time_limit,
        task_time_limit=s.task_time_limit,
        task_track_started=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=7 * 24 * 3600,
        result_extended=True,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=s.broker_connect_timeout,
        redis_socket_connect_timeout=s.broker_connect_timeout,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app
