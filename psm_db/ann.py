"""ANN (HNSW) indexes of (model, condition) slices: their names, build memory and the build itself."""

from __future__ import annotations

import logging
import math
import time

from sqlalchemy import Engine, String, func, literal, select
from sqlalchemy.orm import Session

from psm_db.catalog import get_model
from psm_db.models import AnnIndex, Condition, Embedding
from psm_db.settings import MEMORY_SIZE

log = logging.getLogger(__name__)


def ann_index_name(model_version: str, condition_id: int) -> str:
    """The name of the HNSW index of one (model, condition) slice."""
    return f"embeddings_ann_{model_version[:16]}_{int(condition_id)}"


ANN_KEY_TYPES = ("vector", "halfvec")
DEFAULT_M = 16
"""HNSW graph degree of :func:`build_ann_index` (see its ``m``)."""
DEFAULT_EF_CONSTRUCTION = 128
"""HNSW build beam width of :func:`build_ann_index`."""
"""How an HNSW key can be stored: float32 (the default) or float16 (half the index)."""


def hnsw_build_memory(rows: int, dim: int, m: int, key_type: str) -> str:
    """maintenance_work_mem that holds the whole HNSW graph of ``rows`` keys while it is built.

    Per element: the key (2 or 4 bytes per dimension), 2m layer-0 neighbours plus the upper
    layers' (about one more per element) at 16 bytes each, and a fixed overhead; plus a fifth
    for slack. At least 64 MB, at most 8 GB (pass ``maintenance_work_mem`` for more).
    """
    per_key = dim * (2 if key_type == "halfvec" else 4) + 8
    per_element = per_key + 16 * (2 * m + 1) + 200
    mb = min(8192, max(64, math.ceil(rows * per_element * 1.2 / (1 << 20))))
    return f"{mb}MB"


def build_ann_index(
    *,
    engine: Engine,
    model_version: str,
    condition_id: int,
    m: int = DEFAULT_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    key_type: str = "vector",
    concurrently: bool = True,
    maintenance_work_mem: str | None = None,
    workers: int = 1,
) -> AnnIndex:
    """Build (or rebuild) the HNSW index of one (model, condition) slice and register it.

    The index is a partial expression index on ``psm.ann_vector(mu, var_sum)::vector(d+1)``
    (or ``::halfvec(d+1)``) with the matching L2 operator class; ``psm.rank_tiles`` uses it for
    large candidate sets and re-ranks what it proposes with the exact CSD. Needs the table
    owner (the migration role), not psm_writer.

    Args:
        engine: An engine connected as the owner of psm.embeddings.
        model_version: A registered model version.
        condition_id: A condition id (``psm.find_condition``).
        m: HNSW graph degree. 16 (the default) with ef_construction 128 gave recall@100 0.989
            at p50 8.5 ms on a learned d = 512 model's embeddings at 1M tiles, where m = 8 and
            64 stayed at 0.978 (docs/benchmarks.md, "ANN on a learned d = 512 model").
        ef_construction: HNSW build beam width.
        key_type: ``vector`` (float32 key, the default) or ``halfvec`` (float16: half the index,
            but float16 rounds sqrt(sum sigma^2) to ~0.002, which costs recall when sigma^2
            barely varies between tiles; docs/benchmarks.md, "Queries").
        concurrently: Build without blocking writers (CREATE INDEX CONCURRENTLY).
        maintenance_work_mem: Memory for the build, like ``2GB``; None sizes it so the whole
            graph fits (a build that spills is several times slower).
        workers: Parallel maintenance workers.

    Returns:
        The registry row.

    Raises:
        UnknownModelError: On an unknown model.
        ValueError: On an unknown condition or bad HNSW parameters.
    """
    if not (2 <= m <= 100 and 4 <= ef_construction <= 1000 and ef_construction >= 2 * m):
        raise ValueError(
            f"HNSW needs 2 <= m <= 100 and 2*m <= ef_construction <= 1000, got m={m}, "
            f"ef_construction={ef_construction}"
        )
    if key_type not in ANN_KEY_TYPES:
        raise ValueError(f"key_type must be one of {', '.join(ANN_KEY_TYPES)}, got {key_type!r}")
    if maintenance_work_mem is not None and not MEMORY_SIZE.fullmatch(maintenance_work_mem):
        raise ValueError(f"maintenance_work_mem must look like 512MB or 2GB, got {maintenance_work_mem!r}")
    if not 0 <= workers <= 64:
        raise ValueError(f"workers must be in 0..64, got {workers}")
    with Session(engine) as session:
        model = get_model(session=session, model_version=model_version)
        if session.get(Condition, int(condition_id)) is None:
            raise ValueError(f"unknown condition id {condition_id}")
        rows = session.scalar(select(func.count()).select_from(Embedding).where(
            Embedding.model_version == model_version, Embedding.condition_id == condition_id))
    name = ann_index_name(model.version, condition_id)
    dim = model.embed_dim + 1
    memory = maintenance_work_mem or hnsw_build_memory(int(rows or 0), dim, m, key_type)
    quote = engine.dialect.identifier_preparer.quote
    version = literal(model.version, String).compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    conc = "CONCURRENTLY" if concurrently else ""
    ddl = (
        f"CREATE INDEX {conc} {quote(name)} ON psm.embeddings USING hnsw "
        f"((psm.ann_vector(mu, var_sum)::{key_type}({int(dim)})) {key_type}_l2_ops) "
        f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) "
        f"WHERE model_version = {version} AND condition_id = {int(condition_id)}"
    )
    # CREATE INDEX CONCURRENTLY runs outside a transaction block; the settings are the session's.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        try:
            conn.execute(select(func.set_config("maintenance_work_mem", memory, False)))
            conn.execute(select(func.set_config("max_parallel_maintenance_workers", str(workers), False)))
            conn.exec_driver_sql(f"DROP INDEX {conc} IF EXISTS psm.{quote(name)}")
            started = time.perf_counter()
            conn.exec_driver_sql(ddl)
            seconds = time.perf_counter() - started
        finally:
            if not conn.invalidated and not conn.closed:
                conn.exec_driver_sql("RESET maintenance_work_mem")
                conn.exec_driver_sql("RESET max_parallel_maintenance_workers")
    with Session(engine, expire_on_commit=False) as session, session.begin():
        entry = session.get(AnnIndex, (model_version, int(condition_id)))
        if entry is None:
            entry = AnnIndex(model_version=model_version, condition_id=int(condition_id))
            session.add(entry)
        entry.index_name, entry.dim, entry.m, entry.key_type = name, dim, int(m), key_type
        entry.ef_construction, entry.rows, entry.build_seconds = int(ef_construction), int(rows or 0), seconds
    log.info("built %s over %s rows in %.1f s", name, rows, seconds)
    return entry


__all__ = ["ANN_KEY_TYPES", "ann_index_name", "build_ann_index", "hnsw_build_memory"]
