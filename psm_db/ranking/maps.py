"""Whole maps: the score of every tile of a region for a stored query or a query Gaussian.

One path serves both: a stored query is scored as its Gaussian (:func:`query_gaussian`). The
exact CSD is computed in SQL (pgvector's C kernels) over a primary-key range of the embeddings,
and the columns come back as binary arrays (``array_send``, :mod:`psm_db.pgbinary`) decoded
into numpy, so a 100k-tile map costs no per-row Python work. The region's tile layout does not
depend on the query or the condition and is kept per process (:func:`region_layout`).

Nothing is written: this runs on the reader role.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import shapely
from pgvector.sqlalchemy import Vector
from shapely.geometry.base import BaseGeometry
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Connection,
    Integer,
    Text,
    bindparam,
    func,
    literal,
    select,
)
from sqlalchemy.orm import Session

from psm_db.catalog import get_model, get_query
from psm_db.errors import NotEmbeddedError, raise_sql_errors
from psm_db.functions import FindCondition, condition_args
from psm_db.geometry import RegionLike, geometry_arg, parse_region
from psm_db.models import Embedding, ModelVersion, Tile
from psm_db.pgbinary import array_send_row, decode_array
from psm_db.ranking.common import Gaussian, MapScores, check_int
from psm_db.ranking.ranked import ANY_CONDITION, check_query, query_args
from psm_model.condition import Condition

log = logging.getLogger(__name__)

TILE_COLUMNS = ("tile_id", "lon", "lat", "xmin", "ymin", "xmax", "ymax")
MAP_COLUMNS = (*TILE_COLUMNS, "distance", "var_sum")
RANGE_SLACK = 4
"""scores_for_tiles reads a tile-id range when it spans at most this many times the region's tiles."""
MIN_RUN = 8
"""Otherwise it reads one range per run of consecutive ids when the runs average this many ids."""


# --------------------------------------------------------------------------- layouts


def _is_rectangle(region: BaseGeometry) -> bool:
    """Whether a lon/lat region is one axis-aligned rectangle (its own bounding box)."""
    return region.geom_type == "Polygon" and bool(shapely.equals(region, shapely.box(*region.bounds)))


def region_tiles(region: BaseGeometry | None, zoom: int, *, session: Session) -> dict[str, np.ndarray]:
    """Where every tile of a region at ``zoom`` lies: arrays keyed by TILE_COLUMNS, sorted by tile id.

    This does not depend on the query or the condition: :func:`region_layout` keeps it.
    """
    q = (select(Tile.id.label("tile_id"), Tile.lon, Tile.lat, Tile.west.label("xmin"),
                Tile.south.label("ymin"), Tile.east.label("xmax"), Tile.north.label("ymax"))
         .where(Tile.zoom == zoom).order_by(Tile.id))
    if region is not None and _is_rectangle(region):
        # The same tiles as ST_Intersects(region, centroid), boundary included: the centroid
        # index's bounding-box test, then an exact test on the stored coordinates (the index
        # boxes are float4, rounded outwards). No geometry test per tile: 15-20 ms instead of
        # 55-120 ms for 100k tiles (docs/benchmarks.md). psm.region_tile_ids is the same test
        # for the SQL rankings; reading these columns through its id array took 140-600 ms,
        # so the predicate is written here too (one test checks both at the edges).
        x0, y0, x1, y1 = region.bounds
        q = q.where(Tile.centroid.op("&&")(geometry_arg(region)), Tile.lon.between(x0, x1),
                    Tile.lat.between(y0, y1))
    elif region is not None:
        q = q.where(func.ST_Intersects(geometry_arg(region), Tile.centroid))
    row = array_send_row(session, q.subquery(), TILE_COLUMNS)
    if row[0] is None:
        return {name: np.empty(0, dtype=np.int64 if name == "tile_id" else np.float64) for name in TILE_COLUMNS}
    out = {name: decode_array(row[i], "i8" if name == "tile_id" else "f8") for i, name in enumerate(TILE_COLUMNS)}
    order = np.argsort(out["tile_id"], kind="stable")  # array_agg keeps no order by itself
    return {k: v[order] for k, v in out.items()}


_LAYOUTS: OrderedDict[tuple[Any, ...], dict[str, np.ndarray]] = OrderedDict()
_LAYOUT_CACHE_SIZE = 8
_LAYOUT_LOCK = threading.Lock()


def region_layout(*, session: Session, region: BaseGeometry | None, zoom: int) -> dict[str, np.ndarray]:
    """:func:`region_tiles`, kept per process (the last few regions) and shared by every map.

    It is read again as soon as a tile was added to the table since (``max(psm.tiles.id)``
    moved). The arrays are read-only: they are shared between callers.
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


# --------------------------------------------------------------------------- scores


def scores_for_tiles(
    model: ModelVersion, mu: np.ndarray, var_sum: float, condition_id: int, tile_ids: np.ndarray, *,
    session: Session,
) -> dict[str, np.ndarray]:
    """Exact CSD from a query Gaussian to the embedded tiles among ``tile_ids``, under one condition.

    The query is given by its mean ``mu`` and its sum of sigma^2 ``var_sum``; ``tile_ids`` are sorted.
    When the ids are compact (the usual case: a region's tiles are inserted together) the
    embeddings are read by a primary-key range scan and filtered with numpy. When they fall in
    long runs of consecutive ids (a rectangle cut from a larger grid: one run per grid row),
    one index range per run. Otherwise by an index probe per id. No geometry is touched.

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
    breaks = np.empty(0, dtype=np.int64) if by_range else np.flatnonzero(np.diff(ids) != 1) + 1
    by_runs = not by_range and (len(breaks) + 1) * MIN_RUN <= len(ids)
    if by_range:
        q = q.where(Embedding.tile_id.between(int(ids[0]), int(ids[-1])))
    elif by_runs:
        # 100k tiles in 317 runs: 35k buffer reads against 334k for a probe per id
        starts = ids[np.r_[0, breaks]].tolist()
        ends = ids[np.r_[breaks - 1, len(ids) - 1]].tolist()
        runs = func.unnest(bindparam("starts", starts, type_=ARRAY(BigInteger)),
                           bindparam("ends", ends, type_=ARRAY(BigInteger))).table_valued("a", "b").render_derived()
        q = q.join(runs, Embedding.tile_id.between(runs.c.a, runs.c.b))
    else:
        q = q.where(Embedding.tile_id == func.any(bindparam("tile_ids", ids.tolist(), type_=ARRAY(BigInteger))))
    if by_runs:
        # the planner cannot size the runs and costs the join high enough to JIT-compile it,
        # which took longer than the query (about 60 ms); off for this statement only
        # (a failed statement ends the transaction, and the setting with it)
        jit = session.scalar(select(func.current_setting("jit")))
        session.execute(select(func.set_config("jit", "off", True)))
        out = _score_arrays(session, q, model)
        session.execute(select(func.set_config("jit", jit, True)))
    else:
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


# --------------------------------------------------------------------------- whole maps


def query_gaussian(*, session: Session, query_id: int, model_version: str | None = None) -> Gaussian:
    """The Gaussian of a stored query.

    Raises:
        UnknownQueryError: When no such query exists.
        ValueError: When it was encoded by another model than ``model_version`` (when given).
    """
    query = get_query(session=session, query_id=query_id, model_version=model_version)
    return Gaussian(query.model_version, query.mu, query.var)


def map_scores(*, session: Session, query_id: int | None = None, gaussian: Gaussian | None = None,
               region: RegionLike = None, srid: int = 4326, condition: Condition = ANY_CONDITION, zoom: int = 1,
               model_version: str | None = None) -> MapScores:
    """Score every embedded tile of a region under one condition, for drawing a whole map.

    The arguments are those of :func:`psm_db.ranking.rank_tiles` (a stored query or a query
    Gaussian, the region, the condition, the zoom), without ``k`` and ``method``: every tile
    is scored, exactly.

    Returns:
        The scores, by increasing tile id. The distances are those of ``rank_tiles`` (the
        query's sum of sigma^2 added up as ``psm.check_query_gaussian`` does).

    Raises:
        ValueError: On bad arguments, or a query Gaussian that does not fit its model.
        NotEmbeddedError: When no tile of the region is embedded under that condition (the
            message and hint of the SQL rankings).
    """
    check_query(session, query_id, gaussian, model_version)
    if gaussian is None:
        gaussian = query_gaussian(session=session, query_id=int(query_id))  # type: ignore[arg-type]
    model = get_model(session=session, model_version=gaussian.model_version)
    geom = parse_region(region, srid=srid, db=session)
    zoom_value = check_int(zoom, "zoom")
    cond = condition_args(condition)
    _, mu, var = query_args(None, gaussian)
    var_sum, cid = raise_sql_errors(session, lambda: session.execute(select(
        func.psm.check_ranking_args(*cond, literal(zoom_value, Integer), literal(1, Integer)),
        select(func.psm.check_query_gaussian(literal(model.version, Text), mu, var).table_valued("var_sum")
               .c.var_sum).scalar_subquery(),
        FindCondition(*cond))).one()[1:])
    started = time.perf_counter()
    scores = None
    if cid is not None:
        tiles = raise_sql_errors(session, lambda: region_layout(session=session, region=geom, zoom=int(zoom_value or 1)))
        if len(tiles["tile_id"]):
            scores = raise_sql_errors(session, lambda: scores_for_tiles(
                model, gaussian.mu, float(var_sum), cid, tiles["tile_id"], session=session))
    if scores is None or len(scores["tile_id"]) == 0:
        # The SQL rankings' diagnosis, so that every API says the same thing.
        raise_sql_errors(session, lambda: session.execute(select(func.psm.raise_not_embedded(
            literal(model.version, Text), literal(cid, Integer), *cond, literal(zoom_value, Integer),
            func.psm.region_4326(geometry_arg(geom)), literal(None, Text)))).all())
        raise NotEmbeddedError(f"nothing embedded for this query under {condition.label()}")
    m = join_scores(tiles, scores)
    out = MapScores(
        tile_id=m["tile_id"], lon=m["lon"], lat=m["lat"],
        bounds=np.stack([m[c] for c in ("xmin", "ymin", "xmax", "ymax")], axis=1),
        probability=m["probability"], distance=m["distance"], var_sum=m["var_sum"],
    )
    log.debug("map_scores: %d tiles in %.3f s", len(out), time.perf_counter() - started)
    return out


__all__ = [
    "MAP_COLUMNS", "MIN_RUN", "RANGE_SLACK", "TILE_COLUMNS", "join_scores", "map_scores", "query_gaussian", "region_layout",
    "region_tiles", "scores_for_tiles",
]
