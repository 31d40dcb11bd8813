"""Store evaluation runs (psm.eval_runs) and their metric rows (psm.eval_metrics)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

log = logging.getLogger(__name__)

_METRIC_KEYS = ("scorer", "direction", "zoom", "with_text", "metadata", "r_at_10", "median_rank", "n")


def store_eval(conn: psycopg.Connection, version: str, results: Mapping[str, Any]) -> int:
    """Insert one evaluation run and its metric rows; returns the run id (the caller commits).

    Args:
        conn: A connection to the PSM database.
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
    known = conn.execute("SELECT 1 FROM psm.model_versions WHERE version = %s", (version,)).fetchone()
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
    row = conn.execute(
        "INSERT INTO psm.eval_runs (model_version, dataset, split, config, results) VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (version, str(run.get("dataset", "")), str(run.get("split", "")), Jsonb(dict(run.get("config") or {})),
         Jsonb(dict(run.get("results") or {}))),
    ).fetchone()
    assert row is not None
    run_id = int(row[0])
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO psm.eval_metrics (run_id, scorer, direction, zoom, with_text, metadata, r_at_10, median_rank, n) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(run_id, *r) for r in rows],
        )
    log.info("stored evaluation run %d of %s with %d metric rows", run_id, version, len(rows))
    return run_id
