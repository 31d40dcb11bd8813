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


def send_task(name: str, job_id: str) -> str:
    """Queue the Celery task ``name`` for the job row ``job_id``; return the task id."""
    from worker.celery import app as celery_app

    return str(celery_app.send_task(name, args=[job_id]).id)


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
    """
    from worker.training import TrainRequest
    from worker.training import submit_training as _submit

    request = TrainRequest(dataset_dir, preset, loss, use_metadata, epochs, options=options or {},
                           name=name)
    return str(_submit(conn, request, lambda j: send("psm.train", j)))
