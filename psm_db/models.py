"""SQLAlchemy 2 typed ORM mappings of every table in the ``psm`` schema (Alembic owns the DDL)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import numpy as np
from geoalchemy2 import Geometry, WKBElement
from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA = "psm"


class Base(DeclarativeBase):
    """Declarative base for the ``psm`` schema.

    The mappings mirror the migrations; they never create tables themselves (run
    ``psm db upgrade`` or ``alembic upgrade head`` for that).
    """

    metadata = MetaData(schema=SCHEMA)


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class, typed as a Table (for insert, update and delete)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class ModelVersion(Base):
    """A trained checkpoint registered for embedding and querying."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    preset: Mapped[str] = mapped_column(Text)
    loss: Mapped[str] = mapped_column(Text)
    embed_dim: Mapped[int] = mapped_column(Integer)
    feature_dim: Mapped[int] = mapped_column(Integer)
    match_a: Mapped[float] = mapped_column(Double)
    match_b: Mapped[float] = mapped_column(Double)
    checkpoint_path: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Tile(Base):
    """One imagery tile of a region grid at one zoom level."""

    __tablename__ = "tiles"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    imagery_source: Mapped[str] = mapped_column(Text)
    gsd: Mapped[float] = mapped_column(Double)
    size_px: Mapped[int] = mapped_column(Integer)
    zoom: Mapped[int] = mapped_column(SmallInteger)
    grid_row: Mapped[int] = mapped_column(Integer)
    grid_col: Mapped[int] = mapped_column(Integer)
    geom: Mapped[WKBElement] = mapped_column(
        Geometry("POLYGON", srid=4326, spatial_index=False)
    )
    centroid: Mapped[WKBElement] = mapped_column(
        Geometry("POINT", srid=4326, spatial_index=False)
    )
    pixel_ref: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TileFeature(Base):
    """Image features of a tile (before metadata fusion) under one model version."""

    __tablename__ = "tile_features"
    __table_args__ = (
        ForeignKeyConstraint(
            ["model_version", "dim"], ["psm.model_versions.version", "psm.model_versions.feature_dim"],
            ondelete="CASCADE",
        ),
    )

    model_version: Mapped[str] = mapped_column(Text, primary_key=True)
    tile_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("psm.tiles.id", ondelete="CASCADE"), primary_key=True
    )
    dim: Mapped[int] = mapped_column(Integer)
    features: Mapped[np.ndarray] = mapped_column(Vector())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Condition(Base):
    """A metadata condition; a None field means that metadata type is left out."""

    __tablename__ = "conditions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    month: Mapped[int | None] = mapped_column(SmallInteger)
    hour: Mapped[int | None] = mapped_column(SmallInteger)
    audio_source: Mapped[str | None] = mapped_column(Text)
    caption_source: Mapped[str | None] = mapped_column(Text)


class Embedding(Base):
    """A tile's Gaussian embedding (mu, sigma^2) under a model version and a condition."""

    __tablename__ = "embeddings"
    __table_args__ = (
        ForeignKeyConstraint(
            ["model_version", "dim"], ["psm.model_versions.version", "psm.model_versions.embed_dim"],
            ondelete="CASCADE",
        ),
    )

    model_version: Mapped[str] = mapped_column(Text, primary_key=True)
    condition_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("psm.conditions.id"), primary_key=True
    )
    tile_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("psm.tiles.id", ondelete="CASCADE"), primary_key=True
    )
    dim: Mapped[int] = mapped_column(Integer)
    mu: Mapped[np.ndarray] = mapped_column(Vector())
    var: Mapped[np.ndarray] = mapped_column(Vector())
    """sigma^2 per dimension (not the log-variance)."""
    var_sum: Mapped[float] = mapped_column(Double)

    tile: Mapped[Tile] = relationship(lazy="raise")
    condition: Mapped[Condition] = relationship(lazy="raise")


class StoredQuery(Base):
    """A text and/or audio query encoded by a model and stored as a Gaussian."""

    __tablename__ = "queries"
    __table_args__ = (
        ForeignKeyConstraint(
            ["model_version", "dim"], ["psm.model_versions.version", "psm.model_versions.embed_dim"],
            ondelete="CASCADE",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    model_version: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    audio_name: Mapped[str | None] = mapped_column(Text)
    dim: Mapped[int] = mapped_column(Integer)
    mu: Mapped[np.ndarray] = mapped_column(Vector())
    var: Mapped[np.ndarray] = mapped_column(Vector())
    var_sum: Mapped[float] = mapped_column(Double)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RegionSet(Base):
    """A named collection of polygons (for example US counties) to aggregate over."""

    __tablename__ = "region_sets"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    description: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    regions: Mapped[list[Region]] = relationship(
        back_populates="region_set", lazy="raise", passive_deletes=True
    )


class Region(Base):
    """One named polygon of a region set."""

    __tablename__ = "regions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    set_name: Mapped[str] = mapped_column(
        Text, ForeignKey("psm.region_sets.name", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(Text)
    properties: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    geom: Mapped[WKBElement] = mapped_column(
        Geometry("MULTIPOLYGON", srid=4326, spatial_index=False)
    )

    region_set: Mapped[RegionSet] = relationship(back_populates="regions", lazy="raise")


class Job(Base):
    """A long-running job (embedding a region, training, evaluating)."""

    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()
    )
    kind: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="queued")
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    model_version: Mapped[str | None] = mapped_column(
        Text, ForeignKey("psm.model_versions.version", ondelete="SET NULL")
    )
    total: Mapped[int] = mapped_column(Integer, server_default="0")
    done: Mapped[int] = mapped_column(Integer, server_default="0")
    message: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    celery_task_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    chunks: Mapped[list[JobChunk]] = relationship(lazy="raise", passive_deletes=True)
    events: Mapped[list[JobEvent]] = relationship(lazy="raise", passive_deletes=True)


class JobChunk(Base):
    """One chunk of tiles of a job, retried independently."""

    __tablename__ = "job_chunks"

    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("psm.jobs.id", ondelete="CASCADE"), primary_key=True
    )
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(Text, server_default="queued")
    tiles: Mapped[int] = mapped_column(Integer, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When the worker running the chunk last renewed its lease (NULL unless running; 0010)."""
    worker: Mapped[str | None] = mapped_column(Text)
    """The worker (host:pid) that last claimed the chunk (0010)."""


class JobEvent(Base):
    """A log line attached to a job."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("psm.jobs.id", ondelete="CASCADE")
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    level: Mapped[str] = mapped_column(Text, server_default="info")
    message: Mapped[str] = mapped_column(Text)


class EvalRun(Base):
    """One evaluation of a model version on a dataset split."""

    __tablename__ = "eval_runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    model_version: Mapped[str] = mapped_column(
        Text, ForeignKey("psm.model_versions.version", ondelete="CASCADE")
    )
    dataset: Mapped[str] = mapped_column(Text)
    split: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    results: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    metrics: Mapped[list[EvalMetric]] = relationship(lazy="raise", passive_deletes=True)


class EvalMetric(Base):
    """One retrieval metric row (R@10%, median rank) of an evaluation run."""

    __tablename__ = "eval_metrics"

    run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("psm.eval_runs.id", ondelete="CASCADE"), primary_key=True
    )
    scorer: Mapped[str] = mapped_column(Text, primary_key=True, server_default="model")
    direction: Mapped[str] = mapped_column(Text, primary_key=True)
    zoom: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    with_text: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    metadata_: Mapped[str] = mapped_column("metadata", Text, primary_key=True)
    r_at_10: Mapped[float] = mapped_column(Double)
    median_rank: Mapped[float] = mapped_column(Double)
    n: Mapped[int] = mapped_column(Integer)


class AnnIndex(Base):
    """An HNSW index over one (model version, condition) slice of the embeddings (baseline revision 0007)."""

    __tablename__ = "ann_indexes"

    model_version: Mapped[str] = mapped_column(
        Text, ForeignKey("psm.model_versions.version", ondelete="CASCADE"), primary_key=True
    )
    condition_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("psm.conditions.id", ondelete="CASCADE"), primary_key=True
    )
    index_name: Mapped[str] = mapped_column(Text)
    dim: Mapped[int] = mapped_column(Integer)
    key_type: Mapped[str] = mapped_column(Text, server_default="vector")  # migration 0007
    m: Mapped[int] = mapped_column(Integer)
    ef_construction: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(BigInteger)
    build_seconds: Mapped[float] = mapped_column(Double)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


__all__ = [
    "SCHEMA", "AnnIndex", "Base", "Condition", "Embedding", "EvalMetric", "EvalRun", "Job",
    "JobChunk", "JobEvent", "ModelVersion", "Region", "RegionSet", "StoredQuery", "Tile",
    "TileFeature", "table_of",
]
