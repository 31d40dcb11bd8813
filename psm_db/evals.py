"""Store evaluation runs (psm.eval_runs) and their metric rows (psm.eval_metrics)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select

from psm_db.engine import Db
from psm_db.models import EvalMetric, EvalRun, ModelVersion, table_of

log = logging.getLogger(__name__)

_METRIC_KEYS = ("scorer", "direction", "zoom", "with_text", "metadata", "r_at_10", "median_rank", "n")
"""The keys of a metric row, and the columns of psm.eval_metrics after ``run_id``."""


def store_eval(db: Db, version: str, results: Mapping[str, Any]) -> int:
    """Insert one evaluation run and its metric rows; returns the run id (the caller commits).

    Args:
        db: A SQLAlchemy connection or session on the PSM database.
        version: The evaluated model version; it must be registered in psm.model_versions.
        results: What ``psm_model.evaluate.db_records`` returns (``{"run": {...}, "metrics": [...]}``),
            or the dict of ``psm_model.evaluate.evaluate_checkpoint`` (its ``records`` are used).

    Raises:
        LookupError: When the version is not registered.
        ValueError: When the results are not shaped as described, or a row repeats a setting.
    """
    records = results.get("records", results)
    run = records.get("run")
    metrics = records.get("metrics")
    if not isinstance(run, Mapping) or not isinstance(metrics, list) or not metrics:
        raise ValueError("results must hold a 'run' dict and a non-empty 'metrics' list (psm_model.evaluate.db_records)")
    known = db.scalar(select(ModelVersion.version).where(ModelVersion.version == version))
    if known is None:
        raise LookupError(f"model version {version} is not registered; run `psm register-model <checkpoint>` first")
    rows = []
    seen = set()
    for m in metrics:
        missing = [k for k in _METRIC_KEYS if k not in m]
        if missing:
            raise ValueError(f"metric row {m} lacks {missing}")
        key = (m["scorer"], m["direction"], int(m["zoom"]), bool(m["with_text"]), m["metadata"])
        if key in seen:
            raise ValueError(f"metric row {key} appears twice")
        seen.add(key)
        rows.append((*key, float(m["r_at_10"]), float(m["median_rank"]), int(m["n"])))
    runs = table_of(EvalRun)
    run_id = db.scalar(insert(runs).values(
        model_version=version, dataset=str(run.get("dataset", "")), split=str(run.get("split", "")),
        config=dict(run.get("config") or {}), results=dict(run.get("results") or {}),
    ).returning(runs.c.id))
    assert run_id is not None
    db.execute(insert(table_of(EvalMetric)),
               [{"run_id": run_id, **dict(zip(_METRIC_KEYS, r, strict=True))} for r in rows])
    log.info("stored evaluation run %d of %s with %d metric rows", run_id, version, len(rows))
    return run_id
