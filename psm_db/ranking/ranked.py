"""Top-k tiles and regions of a stored query or a query Gaussian, ranked by the SQL functions.

A stored query goes through ``psm.rank_tiles`` / ``psm.rank_regions`` (which look it up and call
the Gaussian forms); a query Gaussian that is not stored (typed text, an uploaded clip, on the
read-only role) through ``psm.rank_tiles_gaussian`` / ``psm.rank_regions_gaussian``. Either way
one statement builder and one row conversion serve, and every argument, aggregate and error is
the SQL functions' own (:func:`psm_db.errors.raise_sql_errors` turns the errors into Python ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import shapely
from pgvector.sqlalchemy import Vector
from sqlalchemy import BigInteger, Double, Integer, Select, Text, bindparam, func, literal, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from psm_db.catalog import get_model, get_query
from psm_db.errors import raise_sql_errors
from psm_db.functions import (
    condition_args,
    rank_regions_gaussian_table,
    rank_regions_table,
    rank_tiles_gaussian_table,
    rank_tiles_table,
)
from psm_db.geometry import RegionLike, parse_region, region_arg
from psm_db.ranking.common import (
    AGGREGATES,
    METHODS,
    Gaussian,
    RegionScore,
    TileScore,
    check_choice,
    check_int,
    check_k,
)
from psm_model.condition import Condition

ANY_CONDITION = Condition()
"""The condition that leaves every metadata out (the default of every ranking)."""


def query_args(query_id: int | None, gaussian: Gaussian | None) -> tuple[ColumnElement[Any], ...]:
    """The leading arguments of a ranking function: ``(query_id)`` or ``(model_version, mu, var)``.

    Raises:
        ValueError: Unless exactly one of ``query_id`` and ``gaussian`` is given.
    """
    if (query_id is None) == (gaussian is None):
        raise ValueError("give either query_id (a stored query) or gaussian (a query Gaussian), not both or neither")
    if gaussian is None:
        return (literal(int(query_id), BigInteger),)  # type: ignore[arg-type]
    return (literal(str(gaussian.model_version), Text), bindparam("q_mu", gaussian.mu, type_=Vector()),
            bindparam("q_var", gaussian.var, type_=Vector()))


def check_query(session: Session, query_id: int | None, gaussian: Gaussian | None,
                model_version: str | None) -> None:
    """Refuse an unknown model, or a query of another model than ``model_version`` (when given).

    Raises:
        UnknownQueryError, UnknownModelError: On an unknown query or model.
        ValueError: On a query of another model, or both or neither of query_id and gaussian.
    """
    query_args(query_id, gaussian)
    if gaussian is None:
        if model_version is not None:
            get_query(session=session, query_id=int(query_id), model_version=model_version)  # type: ignore[arg-type]
        return
    get_model(session=session, model_version=gaussian.model_version)
    if model_version is not None and model_version != gaussian.model_version:
        raise ValueError(f"the query Gaussian is of model {gaussian.model_version}, not of {model_version}")


def rank_tiles_stmt(*, query_id: int | None = None, gaussian: Gaussian | None = None, region: RegionLike = None,
                    srid: int = 4326, condition: Condition = ANY_CONDITION, zoom: int = 1, k: int = 100,
                    method: str = "auto") -> Select[Any]:
    """The statement of :func:`rank_tiles` (same arguments): ``SELECT ... FROM psm.rank_tiles(...)``.

    ``psm.rank_tiles_gaussian(...)`` for a query Gaussian; every value bound; geometry as WKB.
    """
    table = rank_tiles_table if gaussian is None else rank_tiles_gaussian_table
    ranked = table(
        *query_args(query_id, gaussian), region_arg(region, srid=srid), *condition_args(condition),
        literal(check_int(zoom, "zoom"), Integer), literal(check_k(k), Integer),
        literal(check_choice(method, METHODS, "method"), Text),
    )
    return select(
        ranked.c.tile_id, func.ST_AsBinary(ranked.c.geom).label("geom"), ranked.c.distance,
        ranked.c.probability, ranked.c.uncertainty,
    )


def rank_tiles(
    *,
    session: Session,
    query_id: int | None = None,
    gaussian: Gaussian | None = None,
    region: RegionLike = None,
    srid: int = 4326,
    condition: Condition = ANY_CONDITION,
    zoom: int = 1,
    k: int = 100,
    method: str = "auto",
    model_version: str | None = None,
) -> list[TileScore]:
    """The k tiles closest (by CSD) to a query under one metadata condition.

    Args:
        session: A database session (the reader role is enough).
        query_id: A stored query (``psm query embed``); or else
        gaussian: A query Gaussian that is not stored.
        region: Where to look (see :func:`parse_region`); None ranks every tile.
        srid: SRID of the region's coordinates when it does not carry one.
        condition: The metadata condition (a field left out is matched as left out).
        zoom: Tile zoom level.
        k: How many tiles, 1..MAX_K.
        method: ``auto`` (exact for small candidate sets, HNSW otherwise), ``exact`` or ``ann``.
        model_version: When given, the query must be of this model.

    Returns:
        Tiles by increasing distance.

    Raises:
        ValueError: On bad arguments (region, k, query of another model).
        NotEmbeddedError: When nothing is embedded for that region and condition; the message
            names the command that embeds it.
    """
    check_query(session, query_id, gaussian, model_version)
    stmt = rank_tiles_stmt(
        query_id=query_id, gaussian=gaussian, region=parse_region(region, srid=srid, db=session),
        condition=condition, zoom=zoom, k=k, method=method,
    )
    rows = raise_sql_errors(session, lambda: session.execute(stmt).all())
    return [
        TileScore(int(r.tile_id), shapely.from_wkb(r.geom), r.distance, r.probability, r.uncertainty)
        for r in rows
    ]


def _frame(rows: Sequence[TileScore] | Sequence[RegionScore], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame([r.__dict__ for r in rows], columns=columns)


def rank_tiles_frame(**kwargs: Any) -> pd.DataFrame:
    """:func:`rank_tiles` as a DataFrame (geometry as shapely objects); same arguments."""
    return _frame(rank_tiles(**kwargs), ["tile_id", "geom", "distance", "probability", "uncertainty"])


def rank_regions(
    *,
    session: Session,
    region_set: str,
    query_id: int | None = None,
    gaussian: Gaussian | None = None,
    condition: Condition = ANY_CONDITION,
    zoom: int = 1,
    k: int = 100,
    agg: str = "mean",
    threshold: float = 0.5,
    model_version: str | None = None,
) -> list[RegionScore]:
    """Regions of a region set ranked by an aggregate of their tiles' match probabilities to a query.

    Args:
        session: A database session.
        region_set: The name of a loaded region set (``psm regions load``).
        query_id: A stored query; or else
        gaussian: A query Gaussian that is not stored.
        condition: The metadata condition.
        zoom: Tile zoom level.
        k: How many regions, 1..MAX_K.
        agg: ``mean`` probability, ``max`` probability, or ``share`` of tiles whose
            probability is >= ``threshold``.
        threshold: The probability threshold of ``share``.
        model_version: When given, the query must be of this model.

    Returns:
        Regions by decreasing score; regions without embedded tiles are left out.

    Raises:
        ValueError: On bad arguments or an unknown region set.
        NotEmbeddedError: When no tile of the set is embedded under that condition.
    """
    check_query(session, query_id, gaussian, model_version)
    table = rank_regions_table if gaussian is None else rank_regions_gaussian_table
    ranked = table(
        *query_args(query_id, gaussian), literal(str(region_set), Text), *condition_args(condition),
        literal(check_int(zoom, "zoom"), Integer), literal(check_k(k), Integer),
        literal(check_choice(agg, AGGREGATES, "agg"), Text), literal(float(threshold), Double),
    )
    rows = raise_sql_errors(session, lambda: session.execute(select(ranked)).all())
    return [
        RegionScore(int(r.region_id), r.region_name, r.score, int(r.tile_count), r.uncertainty)
        for r in rows
    ]


def rank_regions_frame(**kwargs: Any) -> pd.DataFrame:
    """:func:`rank_regions` as a DataFrame; same arguments."""
    return _frame(rank_regions(**kwargs), ["region_id", "name", "score", "tile_count", "uncertainty"])


__all__ = [
    "ANY_CONDITION", "check_query", "query_args", "rank_regions", "rank_regions_frame", "rank_tiles",
    "rank_tiles_frame", "rank_tiles_stmt",
]
