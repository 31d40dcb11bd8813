"""Scores of a query Gaussian bound as parameters (nothing stored: this runs on the reader role).

The dashboard scores typed text and uploaded audio this way. The whole-map path reads the
columns back as binary arrays (``array_send``, :mod:`psm_db.pgbinary`) decoded into numpy, so
a 100k-tile map costs no per-row Python work; :func:`psm_db.ranking.map_scores` reuses it for
stored queries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pgvector.sqlalchemy import Vector
from shapely.geometry.base import BaseGeometry
from sqlalchemy import ARRAY, BigInteger, and_, bindparam, func, literal, select
from sqlalchemy.orm import Session

from psm_db.catalog import find_condition_id, get_model
from psm_db.errors import NotEmbeddedError
from psm_db.geometry import geometry_arg
from psm_db.models import Embedding, ModelVersion, Region, Tile
from psm_db.pgbinary import array_send_row, decode_array

TILE_COLUMNS = ("tile_id", "lon", "lat", "xmin", "ymin", "xmax", "ymax")
MAP_COLUMNS = (*TILE_COLUMNS, "distance", "var_sum")
RANGE_SLACK = 4
"""condition_scores reads a tile-id range when it spans at most this many times the region's tiles."""


def region_tiles(region: BaseGeometry | None, zoom: int, *, session: Session) -> dict[str, np.ndarray]:
    """Where every tile of a region at ``zoom`` lies: arrays keyed by TILE_COLUMNS, sorted by tile id.

    This does not depend on the query or the condition, so callers cache it per (region, zoom).
    """
    q = (select(Tile.id.label("tile_id"), func.ST_X(Tile.centroid).label("lon"),
                func.ST_Y(Tile.centroid).label("lat"), func.ST_XMin(Tile.geom).label("xmin"),
                func.ST_YMin(Tile.geom).label("ymin"), func.ST_XMax(Tile.geom).label("xmax"),
                func.ST_YMax(Tile.geom).label("ymax"))
         .where(Tile.zoom == zoom).order_by(Tile.id))
    if region is not None:
        q = q.where(func.ST_Intersects(geometry_arg(region), Tile.centroid))
    row = array_send_row(session, q.subquery(), TILE_COLUMNS)
    if row[0] is None:
        return {name: np.empty(0, dtype=np.int64 if name == "tile_id" else np.float64) for name in TILE_COLUMNS}
    out = {name: decode_array(row[i], "i8" if name == "tile_id" else "f8") for i, name in enumerate(TILE_COLUMNS)}
    order = np.argsort(out["tile_id"], kind="stable")  # array_agg keeps no order by itself
    return {k: v[order] for k, v in out.items()}


def condition_scores(
    model_version: str,
    mu: np.ndarray,
    var: np.ndarray,
    region: BaseGeometry | None,
    *,
    month: int | None,
    hour: int | None,
    audio_source: str | None,
    caption_source: str | None,
    zoom: int,
    tile_ids: np.ndarray | None = None,
    session: Session,
) -> dict[str, np.ndarray]:
    """CSD, sum sigma^2 and match probability of every embedded tile of a region to a query Gaussian.

    The query is bound as parameters (nothing is stored), so this runs on the read-only role.
    When the caller already knows the region's tile ids (``region_tiles``) and they are compact
    (the usual case: a region's tiles are inserted together), the embeddings are read by a
    primary-key range scan and filtered with numpy instead of joining the tiles and testing
    every centroid against the region.

    Returns:
        Arrays ``tile_id``, ``distance``, ``var_sum``, ``probability`` (unordered).

    Raises:
        UnknownModelError: On an unknown model.
        NotEmbeddedError: When the model has no embeddings for this condition in the region.
        ValueError: When the query's dimension is not the model's.
    """
    mu = np.asarray(mu, dtype=np.float32).ravel()
    var = np.asarray(var, dtype=np.float64).ravel()
    model = get_model(session=session, model_version=model_version)
    if mu.shape[0] != model.embed_dim:
        raise ValueError(f"query has {mu.shape[0]} dimensions but model {model_version} embeds in {model.embed_dim}")
    cid = find_condition_id(month, hour, audio_source, caption_source, session=session)
    label = _condition_label(month, hour, audio_source, caption_source, zoom)
    if cid is None:
        raise NotEmbeddedError(f"model {model_version} has no embeddings for {label}: this condition was never embedded")
    if tile_ids is not None:
        out = scores_for_tiles(model, mu, float(var.sum()), cid, tile_ids, session=session)
    else:
        qmu = bindparam("qmu", mu, type_=Vector(model.embed_dim))
        d = (func.vector_l2_squared_distance(Embedding.mu, qmu) + Embedding.var_sum
             + literal(float(var.sum()))).label("distance")
        q = (select(Embedding.tile_id.label("tile_id"), d, Embedding.var_sum.label("var_sum"))
             .where(Embedding.model_version == model_version, Embedding.condition_id == cid)
             .join(Tile, Tile.id == Embedding.tile_id).where(Tile.zoom == zoom))
        if region is not None:
            q = q.where(func.ST_Intersects(geometry_arg(region), Tile.centroid))
        out = _score_arrays(session, q, model)
    if len(out["tile_id"]) == 0:
        raise NotEmbeddedError(f"model {model_version} has no embeddings for {label} in this region")
    return out


def scores_for_tiles(
    model: ModelVersion, mu: np.ndarray, var_sum: float, condition_id: int, tile_ids: np.ndarray, *,
    session: Session,
) -> dict[str, np.ndarray]:
    """Exact CSD from a query Gaussian to the embedded tiles among ``tile_ids``, under one condition.

    The query is given by its mean ``mu`` and its sum of sigma^2 ``var_sum``; ``tile_ids`` are sorted.
    When the ids are compact (the usual case: a region's tiles are inserted together) the
    embeddings are read by a primary-key range scan and filtered with numpy; otherwise by an
    index probe per id. No geometry is touched.

    Returns:
        Arrays ``tile_id``, ``distance``, ``var_sum``, ``probability`` (unordered; empty when
        none of the tiles is embedded under the condition).
    """
    ids = np.asarray(tile_ids, dtype=np.int64)
    if len(ids) == 0:
        return _score_arrays(session, None, model)
    qmu = bindparam("qmu", np.asarray(mu, dtype=np.float32), type_=Vector(model.embed_dim))
    d = (func.vector_l2_squared_distance(Embedding.mu, qmu) + Embedding.var_sum
         + literal(float(var_sum))).label("distance")
    q = (select(Embedding.tile_id.label("tile_id"), d, Embedding.var_sum.label("var_sum"))
         .where(Embedding.model_version == model.version, Embedding.condition_id == int(condition_id)))
    by_range = int(ids[-1] - ids[0]) + 1 <= RANGE_SLACK * len(ids)
    if by_range:
        q = q.where(Embedding.tile_id.between(int(ids[0]), int(ids[-1])))
    else:
        q = q.where(Embedding.tile_id == func.any(bindparam("tile_ids", ids.tolist(), type_=ARRAY(BigInteger))))
    out = _score_arrays(session, q, model)
    if by_range and len(out["tile_id"]):
        keep = np.isin(out["tile_id"], ids, assume_unique=True)
        out = {k: v[keep] for k, v in out.items()}
    return out


def _score_arrays(session: Session, q: Any, model: ModelVersion) -> dict[str, np.ndarray]:
    """Run a (tile_id, distance, var_sum) select as binary arrays; add the match probability."""
    row = None if q is None else array_send_row(session, q.subquery(), ("tile_id", "distance", "var_sum"))
    if row is None or row[0] is None:
        empty = np.empty(0, dtype=np.float64)
        return {"tile_id": np.empty(0, dtype=np.int64), "distance": empty, "var_sum": empty, "probability": empty}
    out = {"tile_id": decode_array(row[0], "i8"), "distance": decode_array(row[1], "f8"),
           "var_sum": decode_array(row[2], "f8")}
    z = np.clip(model.match_a * out["distance"] - model.match_b, -700, 700)
    out["probability"] = 1.0 / (1.0 + np.exp(z))
    return out


def join_scores(tiles: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Scores aligned with tile positions (from :func:`region_tiles`): only embedded tiles are kept."""
    pos = np.searchsorted(tiles["tile_id"], scores["tile_id"])
    pos = np.clip(pos, 0, max(len(tiles["tile_id"]) - 1, 0))
    ok = tiles["tile_id"][pos] == scores["tile_id"] if len(tiles["tile_id"]) else np.zeros(0, bool)
    pos = pos[ok]
    out = {k: v[pos] for k, v in tiles.items()}
    out.update({k: scores[k][ok] for k in ("distance", "var_sum", "probability")})
    return out


def map_scores_vector(
    model_version: str,
    mu: np.ndarray,
    var: np.ndarray,
    region: BaseGeometry | None,
    *,
    month: int | None,
    hour: int | None,
    audio_source: str | None,
    caption_source: str | None,
    zoom: int,
    session: Session,
) -> dict[str, np.ndarray]:
    """:func:`region_tiles` joined with :func:`condition_scores`: every scored tile with its bounds.

    Returns:
        Dict of arrays keyed by :data:`MAP_COLUMNS` plus ``probability`` (sigmoid(-a d + b)).

    Raises:
        NotEmbeddedError: When the model has no embeddings for this condition in the region.
    """
    tiles = region_tiles(region, zoom, session=session)
    scores = condition_scores(model_version, mu, var, region, month=month, hour=hour, audio_source=audio_source,
                              caption_source=caption_source, zoom=zoom, tile_ids=tiles["tile_id"], session=session)
    return join_scores(tiles, scores)


def rank_regions_vector(
    model_version: str,
    mu: np.ndarray,
    var: np.ndarray,
    set_name: str,
    *,
    month: int | None,
    hour: int | None,
    audio_source: str | None,
    caption_source: str | None,
    zoom: int,
    k: int = 20,
    session: Session,
) -> list[dict[str, Any]]:
    """Regions of a set ranked by the mean match probability of their tiles to a query Gaussian.

    Raises:
        NotEmbeddedError: When no tile of the set is embedded under this condition.
    """
    mu = np.asarray(mu, dtype=np.float32).ravel()
    model = get_model(session=session, model_version=model_version)
    cid = find_condition_id(month, hour, audio_source, caption_source, session=session)
    label = _condition_label(month, hour, audio_source, caption_source, zoom)
    if cid is None:
        raise NotEmbeddedError(f"model {model_version} has no embeddings for {label}")
    qmu = bindparam("qmu", mu, type_=Vector(model.embed_dim))
    d = func.vector_l2_squared_distance(Embedding.mu, qmu) + Embedding.var_sum + literal(float(np.sum(var)))
    p = func.psm.match_probability(d, model.match_a, model.match_b)
    q = (
        select(Region.id, Region.name, func.avg(p).label("score"), func.max(p).label("max_probability"),
               func.count().label("tiles"), func.avg(Embedding.var_sum).label("uncertainty"))
        .join(Tile, and_(Tile.zoom == zoom, func.ST_Intersects(Region.geom, Tile.centroid)))
        .join(Embedding, and_(Embedding.tile_id == Tile.id, Embedding.model_version == model_version,
                              Embedding.condition_id == cid))
        .where(Region.set_name == set_name)
        .group_by(Region.id, Region.name)
        .order_by(func.avg(p).desc(), Region.name)
        .limit(k)
    )
    rows = [dict(r._mapping) for r in session.execute(q)]
    if not rows:
        raise NotEmbeddedError(f"model {model_version} has no embeddings for {label} in region set {set_name!r}")
    for rank, r in enumerate(rows, start=1):
        r["rank"] = rank
    return rows


def _condition_label(month: int | None, hour: int | None, audio_source: str | None,
                     caption_source: str | None, zoom: int) -> str:
    def show(v: object) -> str:
        return "left out" if v is None else str(v)

    return (f"month {show(month)}, hour {show(hour)}, audio source {show(audio_source)}, "
            f"caption source {show(caption_source)} at zoom {zoom}")


__all__ = [
    "MAP_COLUMNS", "RANGE_SLACK", "TILE_COLUMNS", "condition_scores", "join_scores", "map_scores_vector",
    "rank_regions_vector", "region_tiles", "scores_for_tiles",
]
