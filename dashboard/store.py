"""Cached data access for the pages: the reader engine, psm_db.catalog / psm_db.ranking calls, models and encoders.

Every database read goes through ``psm_db.catalog`` (listings) or ``psm_db.ranking`` (scores)
on the read-only role (``settings.reader_url``). Query results are
cached with ``st.cache_data``; the engine and the models with ``st.cache_resource``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import numpy as np
import streamlit as st
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from dashboard.mapview import TileScores
from psm_db import catalog, ranking, rasters
from psm_db.engine import make_engine
from psm_db.settings import get_settings
from psm_model.condition import Condition

log = logging.getLogger(__name__)
T = TypeVar("T")


@st.cache_resource(show_spinner=False)
def _engine(url: str, timeout_ms: int) -> Engine:
    return make_engine(url, statement_timeout_ms=timeout_ms, pool_size=4)


def reader_engine() -> Engine:
    """The engine on the read-only role (one per URL, shared by every session)."""
    s = get_settings()
    return _engine(s.reader_url, s.query_timeout_ms)


@contextmanager
def session() -> Iterator[Session]:
    """A read-only session; rolled back at the end (nothing is ever written)."""
    with Session(reader_engine()) as s:
        try:
            yield s
        finally:
            s.rollback()


def cached(**cache_kwargs: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """``st.cache_data`` keyed also by the reader URL, so another database never sees stale rows.

    The wrapped function takes the URL as its first argument; callers leave it out.
    """

    def deco(fn: Callable[..., T]) -> Callable[..., T]:
        inner = st.cache_data(**cache_kwargs)(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            return inner(get_settings().reader_url, *args, **kwargs)

        wrapper.clear = inner.clear  # type: ignore[attr-defined]
        return wrapper

    return deco


# ----------------------------------------------------------------------------- listings


@cached(ttl=30, show_spinner=False)
def models(db_url: str) -> list[dict[str, Any]]:
    """Registered model versions, newest first, as plain dicts."""
    with session() as s:
        rows = catalog.list_models(session=s)
        return [
            {c: getattr(m, c) for c in ("version", "name", "preset", "loss", "embed_dim", "feature_dim",
                                        "match_a", "match_b", "checkpoint_path", "config", "metrics",
                                        "created_at")}
            for m in rows
        ]


@cached(ttl=30, show_spinner=False)
def region_sets(db_url: str) -> list[dict[str, Any]]:
    """Loaded region sets: name, description, source, regions."""
    with session() as s:
        return [r.__dict__.copy() for r in catalog.list_region_sets(session=s)]


@cached(ttl=300, show_spinner=False)
def regions(db_url: str, set_name: str) -> list[tuple[int, str, Any]]:
    """(id, name, shapely geometry) of the regions of a set."""
    from geoalchemy2.shape import to_shape

    with session() as s:
        return [(int(r.id), str(r.name), to_shape(r.geom))
                for r in catalog.list_regions(session=s, region_set=set_name)]


@cached(ttl=30, show_spinner=False)
def conditions(db_url: str, model_version: str) -> list[dict[str, Any]]:
    """The conditions embedded for a model with their tile counts."""
    with session() as s:
        return [c.__dict__.copy() for c in catalog.list_conditions(session=s, model_version=model_version)]


@cached(ttl=60, show_spinner=False)
def zooms(db_url: str) -> list[int]:
    """Zoom levels that have tiles."""
    with session() as s:
        return catalog.tile_zooms(session=s)


@cached(ttl=30, show_spinner=False)
def stored_queries(db_url: str, model_version: str) -> list[dict[str, Any]]:
    """Stored queries of a model: id, name, kind, text, audio_name."""
    with session() as s:
        return [
            {"id": q.id, "name": q.name, "kind": q.kind, "text": q.text, "audio_name": q.audio_name}
            for q in catalog.list_queries(session=s, model_version=model_version)
        ]


@cached(ttl=60, show_spinner=False)
def region_tile_count(db_url: str, region_wkt: str | None, zoom: int) -> int:
    """How many tiles at a zoom lie in a region."""
    import shapely

    with session() as s:
        return catalog.count_region_tiles(shapely.from_wkt(region_wkt) if region_wkt else None, zoom, session=s)


@cached(ttl=60, show_spinner=False)
def tile_detail(db_url: str, tile_id: int) -> dict[str, Any]:
    """Where and what a tile is."""
    with session() as s:
        return catalog.tile_detail(tile_id, session=s)


@cached(ttl=60, show_spinner=False)
def tile_raster(db_url: str, imagery_source: str) -> rasters.RasterRef | None:
    """The raster file or folder behind tiles of ``imagery_source``; None for rendered (world) imagery."""
    with session() as s:
        return rasters.raster_of_source(imagery_source, s)


@st.cache_data(ttl=300, show_spinner=False, max_entries=256)
def real_tile_images(ref: rasters.RasterRef, lat: float, lon: float, sides_m: tuple[float, ...],
                     size: int = 128) -> list[np.ndarray]:
    """The real imagery around a tile: one RGB picture per side length (metres), centred on it.

    Raises:
        FileNotFoundError: When the imagery is not on this machine.
        ValueError: When it cannot be read.
    """
    return [rasters.read_area(ref, rasters.area_bounds(lat, lon, side), size)[0] for side in sides_m]


# ----------------------------------------------------------------------------- maps


@cached(max_entries=16, show_spinner=False)
def region_tiles(db_url: str, region_wkt: str | None, zoom: int) -> dict[str, np.ndarray]:
    """Where the tiles of a region lie (it does not depend on the query: ``psm_db.ranking.region_layout``).

    Calling it ahead warms the layout every map of the region reuses.
    """
    import shapely

    with session() as s:
        return ranking.region_layout(session=s, region=shapely.from_wkt(region_wkt) if region_wkt else None,
                                     zoom=zoom)


@cached(max_entries=96, show_spinner=False)
def _map_scores(db_url: str, model_version: str, query: QueryKey, region_wkt: str | None,
                condition: Condition, zoom: int) -> TileScores:
    import shapely

    with session() as s:
        m = ranking.map_scores(session=s, **query.ranking_args(model_version),
                               region=shapely.from_wkt(region_wkt) if region_wkt else None,
                               condition=condition, zoom=zoom, model_version=model_version)
    return TileScores.from_map(m)


def map_scores(model_version: str, query: QueryKey, region_wkt: str | None, condition: Condition,
               zoom: int) -> TileScores:
    """Scores of every tile of a region for a query under one condition (cached).

    A stored query and an ad-hoc one (text typed or audio uploaded here, which cannot be stored
    on the read-only role) are scored alike, by ``psm_db.ranking.map_scores``.

    Raises:
        NotEmbeddedError: When the condition is not embedded in the region.
    """
    return _map_scores(model_version, query, region_wkt, condition, zoom)


def clear_maps() -> None:
    """Forget cached scores (after an embedding job finished)."""
    _map_scores.clear()  # type: ignore[attr-defined]


@cached(max_entries=96, show_spinner=False)
def rank_regions(db_url: str, model_version: str, query: QueryKey, set_name: str, condition: Condition,
                 zoom: int, k: int = 20) -> list[dict]:
    """The top regions of a set for a query, by the mean match probability of their tiles."""
    with session() as s:
        rows = ranking.rank_regions(session=s, **query.ranking_args(model_version), region_set=set_name,
                                    condition=condition, zoom=zoom, k=k, model_version=model_version)
    return [{"rank": i, "region": r.name, "mean probability": r.score, "tiles": r.tile_count,
             "mean sum sigma^2": r.uncertainty} for i, r in enumerate(rows, start=1)]


class QueryKey:
    """A query as a cache key: a stored query id, or an ad-hoc Gaussian (mu, sigma^2)."""

    def __init__(self, label: str, mu: np.ndarray | None = None, var: np.ndarray | None = None,
                 stored_id: int | None = None) -> None:
        self.label = label
        self.stored_id = stored_id
        self.mu = None if mu is None else np.asarray(mu, dtype=np.float32).ravel()
        self.var = None if var is None else np.asarray(var, dtype=np.float32).ravel()
        h = hashlib.sha256(f"{stored_id}|{label}".encode())
        if self.mu is not None and self.var is not None:
            h.update(self.mu.tobytes())
            h.update(self.var.tobytes())
        self.digest = h.hexdigest()

    def ranking_args(self, model_version: str) -> dict[str, Any]:
        """The query arguments of ``psm_db.ranking``: a stored query's id, or the Gaussian of ``model_version``."""
        if self.stored_id is not None:
            return {"query_id": self.stored_id}
        return {"gaussian": ranking.Gaussian(model_version, self.mu, self.var)}

    def __reduce__(self) -> tuple:  # st.cache_data hashes unknown arguments through __reduce__
        return (QueryKey, (self.label, self.mu, self.var, self.stored_id))

    def __repr__(self) -> str:
        return f"QueryKey({self.label!r}, {self.digest[:12]})"


# ----------------------------------------------------------------------------- models


@st.cache_resource(max_entries=3, show_spinner="Loading the model checkpoint…")
def load_model(checkpoint_path: str, version: str) -> Any:
    """Load a checkpoint (verified against its content hash) in eval mode.

    Raises:
        CheckpointError: When the file is missing, corrupt or of another version.
    """
    import torch

    from psm_model import CheckpointError, load_checkpoint

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    model, info = load_checkpoint(checkpoint_path)
    if info["version"] != version:
        raise CheckpointError(
            f"the checkpoint at {checkpoint_path} is version {info['version']}, but the database "
            f"registers it as {version}; re-register the model"
        )
    return model


@st.cache_data(max_entries=256, show_spinner="Encoding the text query…")
def encode_text(checkpoint_path: str, version: str, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma^2) of a free-text query (``psm_model.encode_query``, as ``psm query embed``)."""
    from psm_model import encode_query

    q = encode_query(load_model(checkpoint_path, version), text=text)
    return q.mu, q.var


@st.cache_data(max_entries=32, show_spinner="Encoding the audio query…")
def encode_audio(checkpoint_path: str, version: str, wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma^2) of an audio clip (``psm_model.encode_query``, as ``psm query embed``)."""
    from psm_model import encode_query

    s = get_settings()
    q = encode_query(load_model(checkpoint_path, version), audio=(wave, sample_rate),
                     max_audio_seconds=s.max_audio_seconds, min_audio_seconds=s.min_audio_seconds)
    return q.mu, q.var


# ----------------------------------------------------------------------------- metrics, jobs, data


@cached(ttl=30, show_spinner=False)
def eval_runs(db_url: str, model_version: str | None = None) -> list[dict[str, Any]]:
    """Evaluation runs, newest first."""
    with session() as s:
        return [
            {"id": r.id, "model_version": r.model_version, "dataset": r.dataset, "split": r.split,
             "config": r.config, "results": r.results, "created_at": r.created_at}
            for r in catalog.eval_runs(session=s, model_version=model_version)
        ]


@cached(ttl=30, show_spinner=False)
def eval_metrics(db_url: str, run_id: int) -> Any:
    """Metric rows of one run (a DataFrame)."""
    with session() as s:
        return catalog.eval_metrics_frame(session=s, run_id=run_id)


JOB_FIELDS = ("id", "kind", "status", "model_version", "total", "done", "message", "error", "params",
              "created_at", "started_at", "finished_at")


def jobs(limit: int = 100) -> list[dict[str, Any]]:
    """Recent jobs, newest first (not cached: the Jobs page polls it)."""
    with session() as s:
        return [{f: getattr(j, f) for f in JOB_FIELDS} for j in catalog.jobs(session=s, limit=limit)]


def job_events(job_id: Any) -> list[dict[str, Any]]:
    """Log lines of one job, oldest first (not cached)."""
    with session() as s:
        return catalog.job_events(job_id, session=s)


@cached(ttl=30, show_spinner=False)
def table_counts(db_url: str) -> dict[str, int]:
    """Row counts of the main tables."""
    with session() as s:
        return catalog.table_counts(session=s)


# ----------------------------------------------------------------------------- job submission


def _send_task(name: str, job_id: str) -> str:
    """Queue a Celery task by name on the broker; return its task id (tests replace this)."""
    from worker.api import send_task

    return send_task(name, job_id)


def _writer() -> AbstractContextManager[Connection]:
    """A connection on the writer role (committed at the end of its block)."""
    from psm_db.engine import connection

    return connection(get_settings().db_url)


def submit_embed_region(model_version: str, region_wkt: str | None, meta: Any, world_seed: int = 0, *,
                        imagery: str = "world", imagery_path: str | None = None,
                        bands: tuple[int, ...] | None = None, min_valid: float = 0.5) -> str:
    """Queue ``psm.embed_region`` for one condition over a region (``worker.api``).

    The job row is written by ``worker.api.submit_embed_region`` on the writer role (the only
    write the dashboard makes); the embedding itself runs on the workers. ``imagery`` is
    ``world`` (the synthetic renderer), ``geotiff`` or ``folder`` (``imagery_path``).

    Raises:
        ValueError: On a request the worker refuses (kept as a failed job, message says why).
        FileNotFoundError: For imagery that is not there.
    """
    from worker.api import submit_embed_region as submit

    if region_wkt is None:
        raise ValueError("choose a region to embed; the whole world is too large for one job")
    with _writer() as conn:
        job_id, _plan = submit(conn, get_settings(), region=region_wkt, model_version=model_version,
                               zooms=(int(meta.zoom),), world_seed=int(world_seed),
                               conditions=(meta.condition,),
                               imagery=imagery, imagery_path=imagery_path, bands=bands, min_valid=min_valid,
                               send=lambda name, j: _send_task(name, j))
    return job_id


def submit_train(dataset_dir: str, preset: str, loss: str, use_metadata: bool, epochs: int,
                 name: str | None = None) -> str:
    """Queue ``psm.train`` (``worker.api``); return the job id.

    Raises:
        ValueError, FileNotFoundError: On a request the worker refuses (kept as a failed job).
    """
    from worker.api import submit_training

    with _writer() as conn:
        return submit_training(conn, dataset_dir=dataset_dir, preset=preset, loss=loss,
                               use_metadata=use_metadata, epochs=int(epochs), name=name or None,
                               send=lambda n, j: _send_task(n, j))
