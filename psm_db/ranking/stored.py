"""Rankings of stored queries and their whole-map scores.

Tiles and regions are ranked by the SQL functions (psm.rank_tiles, psm.rank_regions).

The SQL functions check their arguments and say what is not embedded; their errors come back
as Python ones (:func:`psm_db.errors.raise_sql_errors`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import BigInteger, Connection, Double, Integer, Select, Text, func, literal, select
from sqlalchemy.orm import Session

from psm_db.catalog import get_model, get_query
from psm_db.errors import NotEmbeddedError, raise_sql_errors
from psm_db.functions import FindCondition, rank_regions_table, rank_tiles_table
from psm_db.geometry import RegionLike, geometry_arg, parse_region, region_arg
from psm_db.models import Tile
from psm_db.ranking.adhoc import join_scores, region_tiles, scores_for_tiles
from psm_db.ranking.common import (
    AGGREGATES,
    METHODS,
    MapScores,
    RegionScore,
    TileScore,
    check_choice,
    check_int,
    check_k,
)

log = logging.getLogger(__name__)


def rank_tiles_stmt(
    *,
    query_id: int,
    region: RegionLike = None,
    srid: int = 4326,
    month: int | None = None,
    hour: int | None = None,
    audio_source: str | None = None,
    caption_source: str | None = None,
    zoom: int = 1,
    k: int = 100,
    method: str = "auto",
) -> Select[Any]:
    """``SELECT ... FROM psm.rank_tiles(...)`` with every value bound; geometry as WKB."""
    ranked = rank_tiles_table(
        literal(int(query_id), BigInteger), region_arg(region, srid=srid),
        literal(check_int(month, "month"), Integer), literal(check_int(hour, "hour"), Integer),
        literal(audio_source, Text), literal(caption_source, Text),
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
    query_id: int,
    region: RegionLike = None,
    srid: int = 4326,
    month: int | None = None,
    hour: int | None = None,
    audio_source: str | None = None,
    caption_source: str | None = None,
    zoom: int = 1,
    k: int = 100,
    method: str = "auto",
    model_version: str | None = None,
) -> list[TileScore]:
    """The k tiles closest (by CSD) to a stored query under one metadata condition.

    A None metadata argument means that metadata is left out, as conditions are stored.

    Args:
        session: A database session (reader or writer).
        query_id: A stored query (``psm query embed``).
        region: Where to look (see :func:`parse_region`); None ranks every tile.
        srid: SRID of the region's coordinates when it does not carry one.
        month: 1..12 or None.
        hour: 0..23 or None.
        audio_source: One of the audio sources or None.
        caption_source: One of the caption sources or None.
        zoom: Tile zoom level.
        k: How many tiles, 1..MAX_K.
        method: ``auto`` (exact for small candidate sets, HNSW otherwise), ``exact`` or ``ann``.
        model_version: When given, the query must have been encoded by this model.

    Returns:
        Tiles by increasing distance.

    Raises:
        ValueError: On bad arguments (region, metadata, k, query of another model).
        NotEmbeddedError: When nothing is embedded for that region and condition; the message
            names the command that embeds it.
    """
    if model_version is not None:
        get_query(session=session, query_id=query_id, model_version=model_version)
    stmt = rank_tiles_stmt(
        query_id=query_id, region=parse_region(region, srid=srid, db=session), month=month, hour=hour,
        audio_source=audio_source, caption_source=caption_source, zoom=zoom, k=k, method=method,
    )
    rows = raise_sql_errors(session, lambda: session.execute(stmt).all())
    return [
        TileScore(int(r.tile_id), shapely.from_wkb(r.geom), r.distance, r.probability, r.uncertainty)
        for r in rows
    ]


def rank_tiles_frame(**kwargs: Any) -> pd.DataFrame:
    """:func:`rank_tiles` as a DataFrame (geometry as shapely objects); same arguments."""
    rows = rank_tiles(**kwargs)
    return pd.DataFrame(
        [r.__dict__ for r in rows],
        columns=["tile_id", "geom", "distance", "probability", "uncertainty"],
    )


def rank_regions(
    *,
    session: Session,
    query_id: int,
    region_set: str,
    month: int | None = None,
    hour: int | None = None,
    audio_source: str | None = None,
    caption_source: str | None = None,
    zoom: int = 1,
    k: int = 100,
    agg: str = "mean",
    threshold: float = 0.5,
    model_version: str | None = None,
) -> list[RegionScore]:
    """Regions of a region set ranked by an aggregate of their tiles' match probabilities.

    Args:
        session: A database session.
        query_id: A stored query.
        region_set: The name of a loaded region set (``psm regions load``).
        month: 1..12 or None.
        hour: 0..23 or None.
        audio_source: One of the audio sources or None.
        caption_source: One of the caption sources or None.
        zoom: Tile zoom level.
        k: How many regions, 1..MAX_K.
        agg: ``mean`` probability, ``max`` probability, or ``share`` of tiles whose
            probability is >= ``threshold``.
        threshold: The probability threshold of ``share``.
        model_version: When given, the query must have been encoded by this model.

    Returns:
        Regions by decreasing score; regions without embedded tiles are left out.

    Raises:
        ValueError: On bad arguments or an unknown region set.
        NotEmbeddedError: When no tile of the set is embedded under that condition.
    """
    if model_version is not None:
        get_query(session=session, query_id=query_id, model_version=model_version)
    ranked = rank_regions_table(
        literal(int(query_id), BigInteger), literal(str(region_set), Text),
        literal(check_int(month, "month"), Integer), literal(check_int(hour, "hour"), Integer),
        literal(audio_source, Text), literal(caption_source, Text),
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
    rows = rank_regions(**kwargs)
    return pd.DataFrame(
        [r.__dict__ for r in rows],
        columns=["region_id", "name", "score", "tile_count", "uncertainty"],
    )


# --------------------------------------------------------------------------- whole maps


def map_scores(
    *,
    session: Session,
    query_id: int,
    region: RegionLike = None,
    srid: int = 4326,
    month: int | None = None,
    hour: int | None = None,
    audio_source: str | None = None,
    caption_source: str | None = None,
    zoom: int = 1,
    model_version: str | None = None,
) -> MapScores:
    """Score every embedded tile of a region under one condition, for drawing a whole map.

    The exact CSD is computed in SQL (pgvector's C kernels) and the columns come back as
    binary arrays (``array_send``), decoded straight into numpy: no ORM objects, no
    per-row Python work.

    Raises:
        ValueError: On bad arguments.
        NotEmbeddedError: When no tile of the region is embedded under that condition.
    """
    query = get_query(session=session, query_id=query_id, model_version=model_version)
    model = get_model(session=session, model_version=query.model_version)
    geom = parse_region(region, srid=srid, db=session)
    geom_arg = geometry_arg(geom)
    zoom_value = check_int(zoom, "zoom")
    month, hour = check_int(month, "month"), check_int(hour, "hour")
    raise_sql_errors(session, lambda: session.execute(select(func.psm.check_ranking_args(
        literal(month, Integer), literal(hour, Integer), literal(audio_source, Text),
        literal(caption_source, Text), literal(zoom_value, Integer), literal(1, Integer)))).all())
    cid = raise_sql_errors(session, lambda: session.scalar(select(FindCondition(
        literal(month, Integer), literal(hour, Integer),
        literal(audio_source, Text), literal(caption_source, Text)))))
    started = time.perf_counter()
    scores = None
    if cid is not None:
        tiles = raise_sql_errors(session, lambda: region_layout(session=session, region=geom, zoom=int(zoom_value or 1)))
        if len(tiles["tile_id"]):
            scores = raise_sql_errors(session, lambda: scores_for_tiles(
                model, np.asarray(query.mu, dtype=np.float32), float(query.var_sum), cid, tiles["tile_id"],
                session=session))
    if scores is None or len(scores["tile_id"]) == 0:
        # Reuse the SQL diagnosis so both APIs say the same thing.
        raise_sql_errors(session, lambda: session.execute(select(func.psm.raise_not_embedded(
            literal(query.model_version, Text), literal(cid, Integer),
            literal(month, Integer), literal(hour, Integer), literal(audio_source, Text),
            literal(caption_source, Text), literal(zoom_value, Integer),
            func.psm.region_4326(geom_arg), literal(None, Text)))).all())
        raise NotEmbeddedError(f"nothing embedded for query {query_id} under this condition")
    m = join_scores(tiles, scores)
    out = MapScores(
        tile_id=m["tile_id"], lon=m["lon"], lat=m["lat"],
        bounds=np.stack([m[c] for c in ("xmin", "ymin", "xmax", "ymax")], axis=1),
        probability=m["probability"], distance=m["distance"], var_sum=m["var_sum"],
    )
    log.debug("map_scores: %d tiles in %.3f s", len(out), time.perf_counter() - started)
    return out


_LAYOUTS: OrderedDict[tuple[Any, ...], dict[str, np.ndarray]] = OrderedDict()
_LAYOUT_CACHE_SIZE = 8
_LAYOUT_LOCK = threading.Lock()


def region_layout(*, session: Session, region: BaseGeometry | None, zoom: int) -> dict[str, np.ndarray]:
    """Ids, centres and bounds of every tile of a region at ``zoom``, sorted by tile id.

    The layout does not depend on the query or the condition, so it is kept per process
    (the last few regions) and reused by every map of the same region; it is read again as
    soon as a tile was added to the table since (``max(psm.tiles.id)`` moved).
    """
    stamp = session.scalar(select(func.max(Tile.id)))
    bind = session.get_bind()
    url = bind.engine.url if isinstance(bind, Connection) else bind.url
    key = (str(url), None if region is None else shapely.to_wkb(region), int(zoom), stamp)
    with _LAYOUT_LOCK:
        hit = _LAYOUTS.get(key)
        if hit is not None:
            _LAYOUTS.move_to_end(key)
            return hit
    layout = region_tiles(region, int(zoom), session=session)
    for arr in layout.values():
        arr.setflags(write=False)  # shared between callers
    with _LAYOUT_LOCK:
        _LAYOUTS[key] = layout
        while len(_LAYOUTS) > _LAYOUT_CACHE_SIZE:
            _LAYOUTS.popitem(last=False)
    return layout


__all__ = [
    "map_scores", "rank_regions", "rank_regions_frame", "rank_tiles", "rank_tiles_frame", "rank_tiles_stmt",
    "region_layout",
]
