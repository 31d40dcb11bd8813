"""Listings and lookups of what the database holds.

Models, stored queries, region sets and regions, conditions, eval runs, jobs and their events,
tile zooms, counts and one tile's detail.

Every function takes a keyword-only ``session`` (a SQLAlchemy session; the reader role is
enough except for :func:`store_query`) and returns ORM rows, small dataclasses or plain values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from shapely.geometry.base import BaseGeometry
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from psm_db.errors import UnknownModelError, UnknownQueryError
from psm_db.functions import FindCondition, condition_args
from psm_db.geometry import geometry_arg
from psm_db.models import (
    AnnIndex,
    Condition,
    Embedding,
    EvalMetric,
    EvalRun,
    Job,
    JobEvent,
    ModelVersion,
    Region,
    RegionSet,
    StoredQuery,
    Tile,
)

if TYPE_CHECKING:
    from psm_model.condition import Condition as MetadataCondition

QUERY_KINDS = ("text", "audio", "audio+text")


@dataclass(frozen=True)
class ConditionSummary:
    """A metadata condition embedded for a model, with how many tiles it covers."""

    condition_id: int
    month: int | None
    hour: int | None
    audio_source: str | None
    caption_source: str | None
    tiles: int
    has_ann_index: bool


@dataclass(frozen=True)
class RegionSetSummary:
    """A loaded region set."""

    name: str
    description: str | None
    source: str | None
    regions: int


# --------------------------------------------------------------------------- models


def get_model(*, session: Session, model_version: str) -> ModelVersion:
    """The registered model ``model_version`` (the full version).

    Raises:
        UnknownModelError: Naming the most recent known versions.
    """
    model = session.get(ModelVersion, model_version)
    if model is None:
        known = list(session.scalars(select(ModelVersion.version).order_by(ModelVersion.created_at.desc())
                                     .limit(10)))
        raise UnknownModelError.of(model_version, known)
    return model


def list_models(*, session: Session) -> list[ModelVersion]:
    """Registered model versions, newest first."""
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc())))


# --------------------------------------------------------------------------- stored queries


def store_query(
    *,
    session: Session,
    model_version: str,
    kind: str,
    mu: np.ndarray,
    var: np.ndarray,
    text: str | None = None,
    audio_name: str | None = None,
    name: str | None = None,
) -> int:
    """Store an encoded query (mean and sigma^2) and return its id.

    Args:
        session: A writer session (the caller commits).
        model_version: The model that encoded the query.
        kind: ``text``, ``audio`` or ``audio+text``.
        mu: (d,) mean, L2-normalised by the model.
        var: (d,) sigma^2 (not log sigma^2), every value > 0.
        text: The query text, if any.
        audio_name: The audio file name, if any.
        name: A label for the query.

    Returns:
        The new query id.

    Raises:
        UnknownModelError: On an unknown model.
        ValueError: On a vector size other than the model's, a non-finite value or a
            sigma^2 <= 0.
    """
    if kind not in QUERY_KINDS:
        raise ValueError(f"kind must be one of {', '.join(QUERY_KINDS)}, got {kind!r}")
    model = get_model(session=session, model_version=model_version)
    mu = np.asarray(mu, dtype=np.float32).reshape(-1)
    var = np.asarray(var, dtype=np.float32).reshape(-1)
    if mu.shape[0] != model.embed_dim or var.shape != mu.shape:
        raise ValueError(
            f"query vectors have sizes {mu.shape[0]} and {var.shape[0]}, but model {model_version} "
            f"embeds in {model.embed_dim} dimensions"
        )
    if not (np.isfinite(mu).all() and np.isfinite(var).all()):
        raise ValueError("the query's mean or sigma^2 contains NaN or infinity")
    if not (var > 0).all():
        raise ValueError("every sigma^2 of the query must be > 0 (pass exp(logvar), not logvar)")
    row = StoredQuery(
        model_version=model_version, name=name, kind=kind, text=text, audio_name=audio_name,
        dim=int(mu.shape[0]), mu=mu, var=var, var_sum=float(var.sum(dtype=np.float64)),
    )
    session.add(row)
    session.flush()
    return int(row.id)


def get_query(*, session: Session, query_id: int, model_version: str | None = None) -> StoredQuery:
    """The stored query ``query_id``, checked against ``model_version`` when given.

    Raises:
        UnknownQueryError: When no such query exists.
        ValueError: When it was encoded by another model or in another embedding size.
    """
    query = session.get(StoredQuery, int(query_id))
    if query is None:
        raise UnknownQueryError(f"no stored query with id {query_id}; create one with `psm query embed`")
    if model_version is not None and query.model_version != model_version:
        model = session.get(ModelVersion, model_version)
        size = f" ({model.embed_dim}-d)" if model is not None else ""
        raise ValueError(
            f"query {query_id} was encoded by model {query.model_version} ({query.dim}-d), not by "
            f"{model_version}{size}; encode it again with `psm query embed --model {model_version}`"
        )
    return query


def stored_query_gaussian(query_id: int, *, session: Session) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma^2) of a stored query.

    Raises:
        UnknownQueryError: When no such query exists.
    """
    query = get_query(session=session, query_id=query_id)
    return np.asarray(query.mu, dtype=np.float32), np.asarray(query.var, dtype=np.float32)


def list_queries(*, session: Session, model_version: str | None = None) -> list[StoredQuery]:
    """Stored queries, newest first, optionally of one model."""
    stmt = select(StoredQuery).order_by(StoredQuery.id.desc())
    if model_version is not None:
        stmt = stmt.where(StoredQuery.model_version == model_version)
    return list(session.scalars(stmt))


# --------------------------------------------------------------------------- regions and conditions


def list_region_sets(*, session: Session) -> list[RegionSetSummary]:
    """Loaded region sets with their number of regions."""
    stmt = (
        select(RegionSet.name, RegionSet.description, RegionSet.source, func.count(Region.id))
        .outerjoin(Region, Region.set_name == RegionSet.name)
        .group_by(RegionSet.name)
        .order_by(RegionSet.name)
    )
    return [RegionSetSummary(n, d, s, int(c)) for n, d, s, c in session.execute(stmt)]


def list_regions(*, session: Session, region_set: str) -> list[Region]:
    """The regions of one set, by name.

    Raises:
        ValueError: When the region set does not exist.
    """
    if session.get(RegionSet, region_set) is None:
        raise ValueError(
            f"unknown region set {region_set!r}; load one with `psm regions load FILE --set NAME`"
        )
    return list(session.scalars(
        select(Region).where(Region.set_name == region_set).order_by(Region.name)))


def list_conditions(*, session: Session, model_version: str) -> list[ConditionSummary]:
    """The metadata conditions embedded for a model, with tile counts."""
    counts = (
        select(Embedding.condition_id, func.count().label("tiles"))
        .where(Embedding.model_version == model_version)
        .group_by(Embedding.condition_id)
        .subquery()
    )
    stmt = (
        select(Condition, counts.c.tiles, AnnIndex.index_name)
        .join(counts, counts.c.condition_id == Condition.id)
        .outerjoin(AnnIndex, (AnnIndex.condition_id == Condition.id)
                   & (AnnIndex.model_version == model_version))
        .order_by(Condition.month.nulls_first(), Condition.hour.nulls_first(),
                  Condition.audio_source.nulls_first(), Condition.caption_source.nulls_first())
    )
    return [
        ConditionSummary(c.id, c.month, c.hour, c.audio_source, c.caption_source, int(n),
                         idx is not None)
        for c, n, idx in session.execute(stmt)
    ]


def find_condition_id(condition: MetadataCondition, *, session: Session) -> int | None:
    """The id of a condition (None fields = left out), or None when it was never created."""
    return session.scalar(select(FindCondition(*condition_args(condition))))


# --------------------------------------------------------------------------- tiles


def tile_zooms(*, session: Session) -> list[int]:
    """The zoom levels that have tiles."""
    return [int(z) for z in session.scalars(select(Tile.zoom).distinct().order_by(Tile.zoom))]


def count_region_tiles(region: BaseGeometry | None, zoom: int, *, session: Session) -> int:
    """How many tiles at ``zoom`` have their centre in the (checked, lon/lat) region."""
    q = select(func.count()).select_from(Tile).where(Tile.zoom == zoom)
    if region is not None:
        q = q.where(func.ST_Intersects(geometry_arg(region), Tile.centroid))
    return int(session.scalar(q) or 0)


def tile_detail(tile_id: int, *, session: Session) -> dict[str, Any]:
    """Where and what a tile is.

    Raises:
        LookupError: When there is no such tile.
    """
    q = select(Tile.id, Tile.imagery_source, Tile.gsd, Tile.size_px, Tile.zoom, Tile.pixel_ref,
               func.ST_X(Tile.centroid).label("lon"), func.ST_Y(Tile.centroid).label("lat")).where(Tile.id == tile_id)
    row = session.execute(q).first()
    if row is None:
        raise LookupError(f"no tile with id {tile_id}")
    return dict(row._mapping)


def table_counts(*, session: Session) -> dict[str, int]:
    """Row counts of the main tables (estimates are not used: these are exact)."""
    out = {}
    for name, model in (("model versions", ModelVersion), ("tiles", Tile), ("conditions", Condition),
                        ("embeddings", Embedding), ("stored queries", StoredQuery), ("regions", Region),
                        ("jobs", Job), ("eval runs", EvalRun)):
        out[name] = int(session.scalar(select(func.count()).select_from(model)) or 0)
    return out


# --------------------------------------------------------------------------- evaluations and jobs


def eval_runs(*, session: Session, model_version: str | None = None) -> list[EvalRun]:
    """Evaluation runs, newest first."""
    stmt = select(EvalRun).order_by(EvalRun.created_at.desc(), EvalRun.id.desc())
    if model_version is not None:
        stmt = stmt.where(EvalRun.model_version == model_version)
    return list(session.scalars(stmt))


def eval_metrics_frame(*, session: Session, run_id: int) -> pd.DataFrame:
    """The metric rows of one evaluation run as a DataFrame."""
    rows = session.scalars(select(EvalMetric).where(EvalMetric.run_id == run_id)).all()
    return pd.DataFrame(
        [{"scorer": r.scorer, "direction": r.direction, "zoom": r.zoom, "with_text": r.with_text,
          "metadata": r.metadata_, "r_at_10": r.r_at_10, "median_rank": r.median_rank, "n": r.n}
         for r in rows],
        columns=["scorer", "direction", "zoom", "with_text", "metadata", "r_at_10",
                 "median_rank", "n"],
    )


def jobs(*, session: Session, status: str | None = None, limit: int = 50) -> list[Job]:
    """Recent jobs, newest first, optionally with one status."""
    stmt = select(Job).order_by(Job.created_at.desc()).limit(int(limit))
    if status is not None:
        stmt = stmt.where(Job.status == status)
    return list(session.scalars(stmt))


def job_events(job_id: Any, limit: int = 500, *, session: Session) -> list[dict[str, Any]]:
    """Log lines of a job, oldest first."""
    q = (select(JobEvent.at, JobEvent.level, JobEvent.message).where(JobEvent.job_id == job_id)
         .order_by(JobEvent.at, JobEvent.id).limit(limit))
    return [dict(r._mapping) for r in session.execute(q)]


__all__ = [
    "QUERY_KINDS", "ConditionSummary", "RegionSetSummary", "count_region_tiles", "eval_metrics_frame", "eval_runs",
    "find_condition_id", "get_model", "get_query", "job_events", "jobs", "list_conditions", "list_models",
    "list_queries", "list_region_sets", "list_regions", "store_query", "stored_query_gaussian", "table_counts",
    "tile_detail", "tile_zooms",
]
