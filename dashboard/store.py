"""Cached data access for the pages: the reader engine, psm_db.queries calls, models and encoders.

Every database read goes through ``psm_db.queries`` (or ``psm_db.queries_dashboard`` for the
reads it does not offer) on the read-only role (``settings.reader_url``). Query results are
cached with ``st.cache_data``; the engine and the models with ``st.cache_resource``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from dashboard.mapview import TileScores
from psm_db import queries_dashboard as qd
from psm_db.engine import make_engine
from psm_db.settings import get_settings

log = logging.getLogger(__name__)


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


def _queries() -> Any:
    """``psm_db.queries`` (imported lazily so a page still loads while it is being rebuilt)."""
    from psm_db import queries

    return queries


# ----------------------------------------------------------------------------- listings


@st.cache_data(ttl=30, show_spinner=False)
def models() -> list[dict[str, Any]]:
    """Registered model versions, newest first, as plain dicts."""
    with session() as s:
        rows = _queries().list_models(session=s)
        return [
            {c: getattr(m, c) for c in ("version", "name", "preset", "loss", "embed_dim", "feature_dim",
                                        "match_a", "match_b", "checkpoint_path", "config", "metrics",
                                        "created_at")}
            for m in rows
        ]


@st.cache_data(ttl=30, show_spinner=False)
def region_sets() -> list[dict[str, Any]]:
    """Loaded region sets: name, description, source, regions."""
    with session() as s:
        return [r.__dict__.copy() for r in _queries().list_region_sets(session=s)]


@st.cache_data(ttl=300, show_spinner=False)
def regions(set_name: str) -> list[tuple[int, str, Any]]:
    """(id, name, shapely geometry) of the regions of a set."""
    with session() as s:
        return qd.region_geometries(set_name, session=s)


@st.cache_data(ttl=30, show_spinner=False)
def conditions(model_version: str) -> list[dict[str, Any]]:
    """The conditions embedded for a model with their tile counts."""
    with session() as s:
        return [c.__dict__.copy() for c in _queries().list_conditions(session=s, model_version=model_version)]


@st.cache_data(ttl=60, show_spinner=False)
def zooms() -> list[int]:
    """Zoom levels that have tiles."""
    with session() as s:
        return qd.tile_zooms(session=s)


@st.cache_data(ttl=30, show_spinner=False)
def stored_queries(model_version: str) -> list[dict[str, Any]]:
    """Stored queries of a model: id, name, kind, text, audio_name."""
    with session() as s:
        return [
            {"id": q.id, "name": q.name, "kind": q.kind, "text": q.text, "audio_name": q.audio_name}
            for q in _queries().list_queries(session=s, model_version=model_version)
        ]


@st.cache_data(ttl=60, show_spinner=False)
def region_tile_count(region_wkt: str | None, zoom: int) -> int:
    """How many tiles at a zoom lie in a region."""
    import shapely

    with session() as s:
        return qd.count_region_tiles(shapely.from_wkt(region_wkt) if region_wkt else None, zoom, session=s)


@st.cache_data(ttl=60, show_spinner=False)
def tile_detail(tile_id: int) -> dict[str, Any]:
    """Where and what a tile is."""
    with session() as s:
        return qd.tile_detail(tile_id, session=s)


# ----------------------------------------------------------------------------- maps


def _scores_from_arrays(a: dict[str, np.ndarray]) -> TileScores:
    return TileScores(a["tile_id"], a["lon"], a["lat"], a["xmin"], a["ymin"], a["xmax"], a["ymax"],
                      a["probability"], a["distance"], a["var_sum"])


@st.cache_data(max_entries=96, show_spinner=False)
def map_scores(model_version: str, query: QueryKey, region_wkt: str | None, month: int | None,
               hour: int | None, audio_source: str | None, caption_source: str | None,
               zoom: int) -> TileScores:
    """Scores of every tile of a region for a query under one condition.

    A stored query is scored by ``psm_db.queries.map_scores``; an ad-hoc one (text typed or
    audio uploaded here) by its Gaussian, bound as a parameter, so nothing is written.

    Raises:
        NotEmbeddedError: When the condition is not embedded in the region.
    """
    import shapely

    region = shapely.from_wkt(region_wkt) if region_wkt else None
    with session() as s:
        if query.stored_id is not None:
            m = _queries().map_scores(session=s, query_id=query.stored_id, region=region, month=month,
                                      hour=hour, audio_source=audio_source, caption_source=caption_source,
                                      zoom=zoom, model_version=model_version)
            return TileScores(m.tile_id, m.lon, m.lat, m.bounds[:, 0], m.bounds[:, 1], m.bounds[:, 2],
                              m.bounds[:, 3], m.probability, m.distance, m.var_sum)
        arrays = qd.map_scores_vector(model_version, query.mu, query.var, region, month=month, hour=hour,
                                      audio_source=audio_source, caption_source=caption_source, zoom=zoom,
                                      session=s)
        return _scores_from_arrays(arrays)


@st.cache_data(max_entries=96, show_spinner=False)
def rank_regions(model_version: str, query: QueryKey, set_name: str, month: int | None, hour: int | None,
                 audio_source: str | None, caption_source: str | None, zoom: int, k: int = 20) -> list[dict]:
    """The top regions of a set for a query (``psm_db.queries.rank_regions`` for stored queries)."""
    with session() as s:
        if query.stored_id is not None:
            rows = _queries().rank_regions(session=s, query_id=query.stored_id, region_set=set_name,
                                           month=month, hour=hour, audio_source=audio_source,
                                           caption_source=caption_source, zoom=zoom, k=k,
                                           model_version=model_version)
            return [{"rank": i, "region": r.name, "mean probability": r.score, "tiles": r.tile_count,
                     "mean sum sigma^2": r.uncertainty} for i, r in enumerate(rows, start=1)]
        rows = qd.rank_regions_vector(model_version, query.mu, query.var, set_name, month=month, hour=hour,
                                      audio_source=audio_source, caption_source=caption_source, zoom=zoom,
                                      k=k, session=s)
        return [{"rank": r["rank"], "region": r["name"], "mean probability": r["score"], "tiles": r["tiles"],
                 "mean sum sigma^2": r["uncertainty"]} for r in rows]


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
    """(mu, sigma^2) of a free-text query."""
    import torch

    model = load_model(checkpoint_path, version)
    with torch.no_grad():
        mu, logvar = model.encode_text([text])
    return mu[0].cpu().numpy().astype(np.float32), logvar[0].exp().cpu().numpy().astype(np.float32)


@st.cache_data(max_entries=32, show_spinner="Encoding the audio query…")
def encode_audio(checkpoint_path: str, version: str, wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma^2) of an audio clip."""
    import torch

    model = load_model(checkpoint_path, version)
    with torch.no_grad():
        mu, logvar = model.encode_audio([wave], sample_rate)
    return mu[0].cpu().numpy().astype(np.float32), logvar[0].exp().cpu().numpy().astype(np.float32)


# ----------------------------------------------------------------------------- metrics, jobs, data


@st.cache_data(ttl=30, show_spinner=False)
def eval_runs(model_version: str | None = None) -> list[dict[str, Any]]:
    """Evaluation runs, newest first."""
    with session() as s:
        return [
            {"id": r.id, "model_version": r.model_version, "dataset": r.dataset, "split": r.split,
             "config": r.config, "results": r.results, "created_at": r.created_at}
            for r in _queries().eval_runs(session=s, model_version=model_version)
        ]


@st.cache_data(ttl=30, show_spinner=False)
def eval_metrics(run_id: int) -> Any:
    """Metric rows of one run (a DataFrame)."""
    with session() as s:
        return _queries().eval_metrics_frame(session=s, run_id=run_id)


def jobs(limit: int = 100) -> list[dict[str, Any]]:
    """Recent jobs (not cached: the Jobs page polls it)."""
    with session() as s:
        return qd.list_jobs(limit, session=s)


def job_events(job_id: Any) -> list[dict[str, Any]]:
    """Log lines of one job, oldest first (not cached)."""
    with session() as s:
        return qd.job_events(job_id, session=s)


@st.cache_data(ttl=30, show_spinner=False)
def table_counts() -> dict[str, int]:
    """Row counts of the main tables."""
    with session() as s:
        return qd.table_counts(session=s)


# ----------------------------------------------------------------------------- job submission


def submit_embed_region(model_version: str, region_wkt: str | None, meta: Any) -> str:
    """Queue a ``psm.embed_region`` job through the worker's submission helper; return its id.

    Raises:
        RuntimeError: When the worker package offers no submission helper (the message gives
            the command line instead).
    """
    try:
        from worker import submit  # type: ignore[attr-defined]
    except ImportError as e:
        raise RuntimeError(
            "this installation has no job submission helper (worker.submit); run "
            f"`psm embed-region --model {model_version} ...` instead"
        ) from e
    return str(submit.embed_region(model_version=model_version, region=region_wkt, month=meta.month,
                                   hour=meta.hour, audio_source=meta.audio_source,
                                   caption_source=meta.caption_source, zoom=meta.zoom))


def submit_train(params: dict[str, Any]) -> str:
    """Queue a ``psm.train`` job through the worker's submission helper; return its id."""
    try:
        from worker import submit  # type: ignore[attr-defined]
    except ImportError as e:
        raise RuntimeError("this installation has no job submission helper (worker.submit); run `psm train` instead") from e
    return str(submit.train(**params))
