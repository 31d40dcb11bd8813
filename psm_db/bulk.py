"""Bulk writes of tile features and embeddings: binary COPY into a staging table, then one upsert.

The writers take the caller's SQLAlchemy connection or session and work on its psycopg
connection (:func:`psm_db.engine.driver_connection`), inside its transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg

from psm_db.engine import Db, driver_connection
from psm_db.errors import EmbeddingValidationError
from psm_db.pgbinary import COPY_HEADER, COPY_TRAILER, copy_bytes, copy_payload, copy_tuples

log = logging.getLogger(__name__)

PLAIN_ROW_LIMIT = 7_800
"""Staging rows smaller than this (bytes) are kept inline (STORAGE PLAIN): no TOAST work."""


STAGING_TEMP_BUFFERS = "256MB"
"""Session-local buffers for the staging tables (PostgreSQL's default of 8 MB spills to disk)."""


# --------------------------------------------------------------------------- validation


def check_features(features: np.ndarray, dim: int, n: int | None = None) -> np.ndarray:
    """Return ``features`` as float32 (n, dim) after checking shape and finiteness.

    Raises:
        EmbeddingValidationError: on a wrong shape or any NaN/infinite value.
    """
    arr = np.asarray(features, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != dim or (n is not None and arr.shape[0] != n):
        want = f"({n if n is not None else 'n'}, {dim})"
        raise EmbeddingValidationError(f"features have shape {arr.shape}, expected {want}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise EmbeddingValidationError(f"{bad} feature row(s) contain NaN or infinity; nothing was written")
    return arr


def check_gaussians(
    mu: np.ndarray, var: np.ndarray, dim: int, n: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check a batch of Gaussians and return (mu, var) as float32 plus var_sum as float64.

    ``var`` is sigma^2 (not its log). Every value must be finite, every sigma^2 strictly
    positive, both arrays (n, dim).

    Raises:
        EmbeddingValidationError: naming what is wrong; the caller writes nothing.
    """
    mu32 = check_features(mu, dim, n)
    var32 = np.asarray(var, dtype=np.float32)
    if var32.shape != mu32.shape:
        raise EmbeddingValidationError(f"sigma^2 has shape {var32.shape}, mu has {mu32.shape}")
    if not np.isfinite(var32).all():
        raise EmbeddingValidationError("sigma^2 contains NaN or infinity; nothing was written")
    if not (var32 > 0).all():
        bad = int((var32 <= 0).any(axis=1).sum())
        raise EmbeddingValidationError(
            f"{bad} row(s) have a sigma^2 <= 0 (underflow of exp(logvar)?); nothing was written"
        )
    var_sum = var32.sum(axis=1, dtype=np.float64)
    return mu32, var32, var_sum


# --------------------------------------------------------------------------- COPY encoding


def encode_embedding_rows(
    condition_ids: np.ndarray, tile_ids: np.ndarray, mu: np.ndarray, var: np.ndarray, var_sum: np.ndarray
) -> bytes:
    """Encode rows (condition_id int4, tile_id int8, mu vector, var vector, var_sum float8) as COPY BINARY."""
    return COPY_HEADER + _embedding_tuples(condition_ids, tile_ids, mu, var, var_sum) + COPY_TRAILER


def _embedding_tuples(
    condition_ids: np.ndarray, tile_ids: np.ndarray, mu: np.ndarray, var: np.ndarray, var_sum: np.ndarray
) -> bytes:
    return copy_tuples([("int4", condition_ids), ("int8", tile_ids), ("vector", mu), ("vector", var),
                        ("float8", var_sum)], len(tile_ids))


def encode_feature_rows(tile_ids: np.ndarray, features: np.ndarray) -> bytes:
    """Encode rows (tile_id int8, features vector) as COPY BINARY."""
    return copy_payload([("int8", tile_ids), ("vector", features)], len(tile_ids))


# --------------------------------------------------------------------------- staging tables


def _staging(conn: psycopg.Connection, name: str, columns: str, vec_columns: Sequence[str], row_bytes: int) -> None:
    if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"pg_temp.{name}",)).fetchone() == (True,):
        return
    first_temp = conn.execute("SELECT pg_my_temp_schema() = 0").fetchone()
    if first_temp == (True,):
        # Only possible before this session's first temporary table: keep staging in memory.
        conn.execute(f"SET temp_buffers = '{STAGING_TEMP_BUFFERS}'")
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} ({columns}) ON COMMIT DELETE ROWS")
    storage = "PLAIN" if row_bytes < PLAIN_ROW_LIMIT else "EXTERNAL"
    for col in vec_columns:
        conn.execute(f"ALTER TABLE {name} ALTER COLUMN {col} SET STORAGE {storage}")


def write_features(
    db: Db, model_version: str, tile_ids: np.ndarray, features: np.ndarray, dim: int
) -> int:
    """Store image features once per (tile, model); existing rows are kept as they are.

    Runs inside the caller's transaction (no commit). Returns the number of new rows.
    """
    tile_ids = np.asarray(tile_ids, dtype=np.int64)
    feats = check_features(features, dim, len(tile_ids))
    if len(tile_ids) == 0:
        return 0
    conn = driver_connection(db)
    _staging(conn, "psm_stage_features", "tile_id bigint, features vector", ["features"], 4 * dim + 64)
    copy_bytes(conn, "COPY psm_stage_features (tile_id, features) FROM STDIN (FORMAT BINARY)",
               encode_feature_rows(tile_ids, feats))
    cur = conn.execute(
        "INSERT INTO psm.tile_features (model_version, tile_id, dim, features) "
        "SELECT %s, tile_id, %s, features FROM psm_stage_features "
        "ON CONFLICT (model_version, tile_id) DO NOTHING",
        (model_version, dim),
    )
    conn.execute("TRUNCATE psm_stage_features")
    return cur.rowcount


def _copy_embedding_rows(conn: psycopg.Connection, sql: str, columns: Sequence[tuple[str, Any]], n: int,
                         dim: int) -> None:
    """COPY ``n`` embedding rows, encoding ~4 MB blocks while the server parses the previous one.

    ``columns`` are :func:`copy_tuples` columns; array columns are sliced per block, scalars kept.
    """
    block = max(1, (4 << 20) // (8 * dim + 64))
    with conn.cursor() as cur, cur.copy(sql) as copy:
        copy.write(COPY_HEADER)
        for s in range(0, n, block):
            part = [(k, v[s:s + block] if np.ndim(v) > 0 else v) for k, v in columns]
            copy.write(copy_tuples(part, min(block, n - s)))
        copy.write(COPY_TRAILER)


def _copy_embeddings_direct(
    conn: psycopg.Connection, model_version: str, condition_ids: np.ndarray, tile_ids: np.ndarray,
    mu: np.ndarray, var: np.ndarray, var_sum: np.ndarray, dim: int,
) -> bool:
    """COPY the rows straight into psm.embeddings inside a savepoint; False if some already exist.

    A fresh chunk (the common case) then costs what a plain COPY into the table costs. When a key
    exists (a re-run chunk, or an overlapping job that committed first) or two overlapping writers
    deadlock, the savepoint is rolled back and the caller upserts through staging instead, which
    keeps the existing rows. The caller's transaction stays open either way.
    """
    conn.execute("SAVEPOINT psm_direct_embeddings")
    try:
        _copy_embedding_rows(
            conn, "COPY psm.embeddings (model_version, condition_id, tile_id, dim, mu, var, var_sum)"
            " FROM STDIN (FORMAT BINARY)",
            [("bytes", model_version.encode()), ("int4", condition_ids), ("int8", tile_ids), ("int4", dim),
             ("vector", mu), ("vector", var), ("float8", var_sum)], len(tile_ids), dim)
    except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected) as e:
        conn.execute("ROLLBACK TO SAVEPOINT psm_direct_embeddings")
        conn.execute("RELEASE SAVEPOINT psm_direct_embeddings")
        log.debug("direct COPY of %d embeddings fell back to the upsert: %s", len(tile_ids), e.sqlstate)
        return False
    conn.execute("RELEASE SAVEPOINT psm_direct_embeddings")
    return True


def write_embeddings(
    db: Db,
    model_version: str,
    condition_ids: np.ndarray,
    tile_ids: np.ndarray,
    mu: np.ndarray,
    var: np.ndarray,
    dim: int,
) -> int:
    """Store (mu, sigma^2, sum sigma^2) rows for (model, condition, tile) keys; one upsert.

    The batch is validated first (dimension, finiteness, sigma^2 > 0) and nothing is written
    when any row fails. Existing rows are kept (``ON CONFLICT DO NOTHING``), so re-running a
    chunk or a job changes nothing. Runs inside the caller's transaction: commit once per
    chunk so that no condition is ever half-written. Returns the number of new rows.
    """
    tile_ids = np.asarray(tile_ids, dtype=np.int64)
    condition_ids = np.broadcast_to(np.asarray(condition_ids, dtype=np.int32), tile_ids.shape)
    mu32, var32, var_sum = check_gaussians(mu, var, dim, len(tile_ids))
    if len(tile_ids) == 0:
        return 0
    conn = driver_connection(db)
    if _copy_embeddings_direct(conn, model_version, condition_ids, tile_ids, mu32, var32, var_sum, dim):
        return len(tile_ids)
    _staging(
        conn,
        "psm_stage_embeddings",
        "condition_id integer, tile_id bigint, mu vector, var vector, var_sum float8",
        ["mu", "var"],
        8 * dim + 96,
    )
    _copy_embedding_rows(
        conn, "COPY psm_stage_embeddings (condition_id, tile_id, mu, var, var_sum) FROM STDIN (FORMAT BINARY)",
        [("int4", condition_ids), ("int8", tile_ids), ("vector", mu32), ("vector", var32), ("float8", var_sum)],
        len(tile_ids), dim)
    cur = conn.execute(
        "INSERT INTO psm.embeddings (model_version, condition_id, tile_id, dim, mu, var, var_sum) "
        "SELECT %s, condition_id, tile_id, %s, mu, var, var_sum FROM psm_stage_embeddings "
        "ON CONFLICT (model_version, condition_id, tile_id) DO NOTHING",
        (model_version, dim),
    )
    conn.execute("TRUNCATE psm_stage_embeddings")
    return cur.rowcount
