"""The workers' public interface: validate a job, write its row and queue its Celery task.

This is the one module of ``worker`` that other packages import (the dashboard; the import
contracts in pyproject.toml forbid the rest). It takes plain values and the caller's settings,
imports the worker's internals (and with them torch) only when a job is submitted, and sends
tasks by name (``psm.embed_region``, ``psm.train``): the work itself runs on the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psm_db.settings import Settings
    from psm_model.condition import Condition


PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.5, "interval_max": 1.0}
"""Retries of a publish that fails once the broker has answered (a dropped connection): bounded,
so a submission never waits long on a broker that went away."""


def broker_down_message(what: str, url: str, error: BaseException) -> str:
    """What to say when ``what`` (the broker, the result store) at ``url`` cannot be reached (no password)."""
    from kombu.utils.url import maybe_sanitize_url

    reason = " ".join(str(error).split()) or type(error).__name__
    return (f"cannot reach the Celery {what} at {maybe_sanitize_url(url)} ({reason}); nothing was queued. "
            "Start the project's Redis with `psm services up`, or point PSM_BROKER_URL and "
            "PSM_RESULT_BACKEND at a Redis that runs.")


def publish(app: Any, name: str, args: Sequence[Any]) -> str:
    """Send the task ``name`` with ``args`` through the Celery ``app``; return its task id.

    The broker, and a Redis result store, are asked first with the app's short connection timeout
    (``PSM_BROKER_CONNECT_TIMEOUT``, 4 s), and the publish itself retries at most twice, so a
    broker that is down fails the call in seconds rather than after Celery's ~20 s of retries.

    Raises:
        psm_db.errors.BrokerUnavailableError: When the broker or the result store cannot be reached.
    """
    from psm_db.errors import BrokerUnavailableError

    timeout = float(app.conf.broker_connection_timeout or 4.0)
    what, url = "broker", str(app.conf.broker_url or "")
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, interval_max=0.2,
                                   timeout=timeout)
        client = getattr(app.backend, "client", None)
        if client is not None and hasattr(client, "ping"):  # the Redis result store
            what, url = "result store", str(app.conf.result_backend or "")
            client.ping()
        what, url = "broker", str(app.conf.broker_url or "")
        return str(app.send_task(name, args=list(args), retry=True, retry_policy=PUBLISH_RETRY).id)
    except Exception as e:  # kombu, redis and socket errors, and Celery's RuntimeError after its retries
        raise BrokerUnavailableError(broker_down_message(what, url, e)) from e


def send_task(name: str, job_id: str) -> str:
    """Queue the Celery task ``name`` for the job row ``job_id``; return the task id.

    Raises:
        psm_db.errors.BrokerUnavailableError: When the broker cannot be reached (within seconds).
    """
    from worker.celery import app as celery_app

    return publish(celery_app, name, [job_id])


def submit_embed_region(conn: Any, settings: Settings, *, region: str, model_version: str,
                        zooms: Sequence[int], conditions: Sequence[Condition], world_seed: int = 0,
                        imagery: str = "world", imagery_path: str | None = None,
                        bands: Sequence[int] | None = None, min_valid: float = 0.5,
                        send: Callable[[str, str], str] = send_task) -> tuple[str, Any]:
    """Queue ``psm.embed_region``; return (job id, plan).

    The imagery is the synthetic world's (``world``), a GeoTIFF/COG (``geotiff``) or a folder of
    GeoTIFF tiles (``folder``); the workers must see ``imagery_path`` at the same place.

    Args:
        conn: A SQLAlchemy connection (or session) on the writer role (the job row is written on it).
        settings: Supplies the limits (:meth:`worker.plan.Limits.from_settings`).
        region: bbox, WKT or GeoJSON polygon, or a stored region set/name.
        model_version: A registered model version (or a unique prefix).
        zooms: Zoom levels to embed.
        conditions: The metadata conditions to embed (:class:`psm_model.condition.Condition`).
        world_seed: Seed of the synthetic world the tiles are rendered from.
        imagery: ``world``, ``geotiff`` or ``folder``.
        imagery_path: The GeoTIFF/COG (file or URL) or folder (geotiff, folder).
        bands: 1-based bands read as red, green, blue (geotiff, folder; None: 1, 2, 3).
        min_valid: Tiles with a smaller share of pixels holding data are skipped.
        send: ``send(task name, job id) -> task id`` (default: :func:`send_task`).

    Raises:
        ValueError, LookupError, FileNotFoundError: On a request the workers refuse (kept as a
            failed job when it gets as far as the planner).
        psm_db.errors.BrokerUnavailableError: When the broker is down (the job row is marked
            failed with that message; nothing is left queued).
    """
    from worker.embed import EmbedRequest, Limits, submit
    from worker.imagery import ImagerySpec

    request = EmbedRequest(
        region=region, model_version=model_version, zooms=tuple(int(z) for z in zooms),
        imagery=ImagerySpec(kind=imagery, path=imagery_path or None, seed=int(world_seed),
                            bands=tuple(bands) if bands else None, min_valid=float(min_valid)),
        conditions=tuple(conditions),
    )
    job_id, plan = submit(conn, request, Limits.from_settings(settings), lambda j: send("psm.embed_region", j))
    return str(job_id), plan


def submit_training(conn: Any, *, dataset_dir: str, preset: str, loss: str, use_metadata: bool,
                    epochs: int | None, options: dict[str, Any] | None = None, name: str | None = None,
                    send: Callable[[str, str], str] = send_task) -> str:
    """Queue ``psm.train`` on a world dataset; return the job id.

    Raises:
        ValueError, FileNotFoundError: On a request the workers refuse (kept as a failed job).
        psm_db.errors.BrokerUnavailableError: When the broker is down (the job is marked failed).
    """
    from worker.training import TrainRequest
    from worker.training import submit_training as _submit

    request = TrainRequest(dataset_dir, preset, loss, use_metadata, epochs, options=options or {},
                           name=name)
    return str(_submit(conn, request, lambda j: send("psm.train", j)))
