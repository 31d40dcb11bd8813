"""The training job: run ``psm_model.train.train``, then register the checkpoint and its metrics."""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psm_db import jobs
from psm_db.engine import Db
from psm_db.registry import register_model
from psm_db.settings import Settings

log = logging.getLogger(__name__)

LOSSES = ("pcmepp", "infonce")


@dataclass(frozen=True)
class TrainRequest:
    """What ``psm.train`` needs (small JSON-able values, kept in the job row)."""

    dataset_dir: str
    preset: str = "tiny"
    loss: str = "pcmepp"
    use_metadata: bool = True
    epochs: int | None = None
    """Passes over the training split (None: the preset's default)."""
    config: dict[str, Any] = field(default_factory=dict)
    """Model config overrides (``create_model(preset, **config)``)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Further keyword arguments of ``psm_model.train.train`` (batch_size, lr, seed, ...)."""
    name: str | None = None

    def validated(self) -> TrainRequest:
        """Check the request before anything is queued.

        Raises:
            FileNotFoundError: when the dataset folder is missing.
            ValueError: on an unknown preset or loss, or epochs < 1.
        """
        from psm_model.config import PRESETS

        if not Path(self.dataset_dir).is_dir():
            raise FileNotFoundError(f"dataset folder {self.dataset_dir} does not exist; build one with "
                                    "`psm world build`")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; expected one of {', '.join(PRESETS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {', '.join(LOSSES)}")
        if self.epochs is not None and (int(self.epochs) != self.epochs or self.epochs < 1):
            raise ValueError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        return self

    def to_params(self) -> dict[str, Any]:
        """JSON-able job parameters."""
        return asdict(self)


def _train_fn() -> Callable[..., Any]:
    try:
        from psm_model.train import train  # type: ignore[import-not-found]
    except ImportError as e:
        raise RuntimeError(
            "psm_model.train.train is not available in this installation; update the psm_model package"
        ) from e
    return train  # type: ignore[no-any-return]


def call_train(
    train: Callable[..., Any], request: TrainRequest, out_dir: Path, progress: Callable[..., None]
) -> tuple[Path, dict[str, Any]]:
    """Call ``train(dataset_dir, out_dir, preset, loss, use_metadata, epochs, ..., progress=...)``.

    Model config overrides go in as keyword arguments. Keyword arguments the function does
    not take are left out. Returns the checkpoint path and its validation metrics.
    """
    kwargs: dict[str, Any] = {
        "dataset_dir": request.dataset_dir, "out_dir": out_dir, "preset": request.preset,
        "loss": request.loss, "use_metadata": request.use_metadata, "epochs": request.epochs,
        "progress": progress, **request.options, **request.config,
    }
    params = inspect.signature(train).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    out = train(**kwargs)
    metrics: dict[str, Any] = {}
    if isinstance(out, str | Path):
        path = Path(out)
    elif isinstance(out, dict):
        path, metrics = Path(out["checkpoint_path"]), dict(out.get("best_metrics") or {})
    else:  # psm_model.train.TrainResult
        path, metrics = Path(out.checkpoint_path), dict(getattr(out, "best_metrics", {}) or {})
    if path.is_dir():
        found = sorted(path.glob("*.safetensors"))
        if not found:
            raise FileNotFoundError(f"training wrote no checkpoint in {path}")
        path = found[-1]
    return path, metrics


def run_training_job(
    conn: Db,
    job_id: str,
    settings: Settings,
    *,
    progress: Callable[[int, int, str], None],
    train: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Train, write the checkpoint under ``PSM_HOME/checkpoints/<job>``, register it, store metrics."""
    job = jobs.get_job(conn, job_id)
    if job is None:
        raise LookupError(f"job {job_id} does not exist")
    request = TrainRequest(**job["params"]).validated()
    jobs.set_progress(conn, job_id, 0, 0, "training")
    out_dir = settings.checkpoints_dir / str(job_id)
    out_dir.mkdir(parents=True, exist_ok=True)

    def on_progress(*args: Any, **kwargs: Any) -> None:
        info = args[0] if args and isinstance(args[0], dict) else kwargs
        if not isinstance(info, dict):
            return
        stage = info.get("stage", "train")
        loss = info.get("loss")
        message = f"{stage}" + (f", loss {float(loss):.4f}" if isinstance(loss, int | float) else "")
        progress(int(info.get("done") or 0), int(info.get("total") or 0), message)

    checkpoint, metrics = call_train(train or _train_fn(), request, out_dir, on_progress)
    mv = register_model(conn, checkpoint, name=request.name, metrics=_json_metrics(metrics))
    result = {"version": mv.version, "checkpoint": str(checkpoint), "metrics": mv.metrics}
    jobs.set_model_version(conn, job_id, mv.version)
    jobs.succeed_job(conn, job_id, result, f"trained model {mv.version}")
    return result


def _json_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, bool | int | float | str) or v is None:
            out[k] = v
        elif hasattr(v, "item"):
            out[k] = v.item()
    return out


def submit_training(conn: Db, request: TrainRequest, send: Callable[[str], str]) -> uuid.UUID:
    """Validate, create the job row and queue ``psm.train``; bad input is stored as a failed job."""
    try:
        request.validated()
    except (ValueError, FileNotFoundError) as e:
        jobs.record_rejected(conn, "train", request.to_params(), f"invalid request: {e}")
        raise
    job_id = jobs.create_job(conn, "train", request.to_params())
    conn.commit()
    try:
        task_id = send(str(job_id))
    except Exception as e:  # the broker is down: the job must not stay queued
        conn.rollback()
        jobs.fail_job(conn, job_id, f"not queued: {e}")
        raise
    jobs.set_task_id(conn, job_id, task_id)
    conn.commit()
    return job_id
