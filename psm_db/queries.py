"""Python API over the ranking SQL: stored queries, tile and region rankings, whole-map scores."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import numpy as np
import pandas as pd
import psycopg
import shapely
import shapely.errors
import shapely.geometry
import shapely.ops
from geoalchemy2 import Geometry
from shapely.geometry.base import BaseGeometry
from sqlalchemy import (
    BigInteger,
    Connection,
    Double,
    Engine,
    Integer,
    LargeBinary,
    Select,
    Text,
    func,
    literal,
    select,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from psm_db.errors import NotEmbeddedError
from psm_db.functions import (
    FindCondition,
    rank_regions_table,
    rank_tiles_table,
)
from psm_db.models import (
    AnnIndex,
    Condition,
    Embedding,
    EvalMetric,
    EvalRun,
    Job,
    ModelVersion,
    Region,
    RegionSet,
    StoredQuery,
    Tile,
)
from psm_db.queries_dashboard import join_scores, region_tiles, scores_for_tiles
from psm_db.settings import MEMORY_SIZE

log = logging.getLogger(__name__)

MAX_K = 10_000
"""Largest k the ranking functions accept (``psm.max_k()``)."""

METHODS = ("auto", "exact", "ann")
AGGREGATES = ("mean", "max", "share")
QUERY_KINDS = ("text", "audio", "audio+text")

RegionLike: TypeAlias = BaseGeometry | str | dict[str, Any] | None
"""A region: a shapely geometry, WKT/EWKT or GeoJSON text, a GeoJSON dict, or None (anywhere)."""

T = TypeVar("T")


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class TileScore:
    """One ranked tile."""

    tile_id: int
    geom: BaseGeometry
    distance: float
    """CSD between the tile's Gaussian and the query's."""
    probability: float
    """sigmoid(-a * distance + b) with the model's learned a, b."""
    uncertainty: float
    """The tile's sum of sigma^2."""


@dataclass(frozen=True)
class RegionScore:
    """One ranked region of a region set."""

    region_id: int
    name: str
    score: float
    tile_count: int
    uncertainty: float
    """Mean over the region's tiles of their sum of sigma^2."""


@dataclass(frozen=True)
class MapScores:
    """Scores of every tile of a region under one condition, as parallel numpy arrays."""

    tile_id: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    bounds: np.ndarray
    """(n, 4) float64: xmin, ymin, xmax, ymax of each tile."""
    probability: np.ndarray
    distance: np.ndarray
    var_sum: np.ndarray

    def __len__(self) -> int:
        return int(self.tile_id.shape[0])

    def to_frame(self) -> pd.DataFrame:
        """The scores as a DataFrame, one row per tile."""
        return pd.DataFrame({
            "tile_id": self.tile_id, "lon": self.lon, "lat": self.lat,
            "xmin": self.bounds[:, 0], "ymin": self.bounds[:, 1],
            "xmax": self.bounds[:, 2], "ymax": self.bounds[:, 3],
            "probability": self.probability, "distance": self.distance, "var_sum": self.var_sum,
        })


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


# --------------------------------------------------------------------------- input checks


def parse_region(region: RegionLike, *, srid: int = 4326) -> BaseGeometry | None:
    """Turn a region argument into a valid shapely (Multi)Polygon in EPSG:4326.

    Args:
        region: A shapely geometry, WKT or EWKT text (``SRID=3857;POLYGON(...)``), GeoJSON
            text or dict (a geometry, Feature or FeatureCollection), or None for "anywhere".
        srid: The SRID of the coordinates when the text does not say; transformed to 4326.

    Returns:
        The geometry in lon/lat, or None.

    Raises:
        ValueError: On text that is neither WKT nor GeoJSON, an empty or non-polygonal or
            invalid geometry, an unknown SRID, or coordinates outside lon/lat bounds.
    """
    if region is None:
        return None
    try:
        if isinstance(region, BaseGeometry):
            geom = region
        elif isinstance(region, dict):
            geom = _geojson_geometry(region)
        elif isinstance(region, str):
            text = region.strip()
            if text.startswith("{"):
                geom = _geojson_geometry(json.loads(text))
            else:
                match = re.match(r"(?i)^SRID=(\d+);(.*)$", text, flags=re.S)
                if match:
                    srid, text = int(match.group(1)), match.group(2)
                geom = shapely.from_wkt(text)
        else:
            raise TypeError(f"unsupported region type {type(region).__name__}")
    except (shapely.errors.ShapelyError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(
            f"cannot read the region as WKT or GeoJSON ({e}); example: "
            "POLYGON((-94 41, -93 41, -93 42, -94 42, -94 41))"
        ) from e
    if geom is None or geom.is_empty:
        raise ValueError("the region geometry is empty")
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise ValueError(
            f"the region must be a Polygon or MultiPolygon, got {geom.geom_type}; buffer a point "
            "to make an area around it"
        )
    if srid != 4326:
        geom = _to_4326(geom, srid)
    xmin, ymin, xmax, ymax = geom.bounds
    if xmin < -180 - 1e-7 or xmax > 180 + 1e-7 or ymin < -90 - 1e-7 or ymax > 90 + 1e-7:
        raise ValueError(
            f"the region lies outside lon/lat bounds ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}); it is "
            "probably in another coordinate system: pass srid=... so that it can be transformed"
        )
    if not geom.is_valid:
        raise ValueError(
            f"the region geometry is not valid: {shapely.is_valid_reason(geom)}; repair it with "
            "shapely.make_valid"
        )
    return geom


def _geojson_geometry(obj: dict[str, Any]) -> BaseGeometry:
    kind = obj.get("type")
    if kind == "FeatureCollection":
        geoms = [_geojson_geometry(f) for f in obj["features"]]
        return shapely.union_all(geoms)
    if kind == "Feature":
        return shapely.geometry.shape(obj["geometry"])
    return shapely.geometry.shape(obj)


def _to_4326(geom: BaseGeometry, srid: int) -> BaseGeometry:
    from pyproj import Transformer
    from pyproj.exceptions import CRSError

    try:
        transformer = Transformer.from_crs(srid, 4326, always_xy=True)
    except CRSError as e:
        raise ValueError(f"unknown SRID {srid}; give the region in EPSG:4326 or a known EPSG code") from e
    return shapely.transform(geom, transformer.transform, interleaved=False)


def check_k(k: int) -> int:
    """Return ``k`` when it is an integer in 1..MAX_K, else raise ValueError."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= int(k) <= MAX_K:
        raise ValueError(f"k must be an integer in 1..{MAX_K}, got {k!r}")
    return int(k)


def _check_int(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer or None, got {value!r}")
    return int(value)


def _check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


# --------------------------------------------------------------------------- errors


def _run(session: Session, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a savepoint and turn our SQL errors into Python ones.

    SQLSTATE PSM01 becomes NotEmbeddedError, invalid_parameter_value (22023) a ValueError;
    both carry the server's message and hint. The caller's transaction stays usable.
    """
    try:
        with session.begin_nested():
            return fn()
    except DBAPIError as e:
        orig = e.orig
        if isinstance(orig, psycopg.Error) and orig.diag is not None:
            text = orig.diag.message_primary or str(orig)
            if orig.diag.message_detail:
                text += f" ({orig.diag.message_detail})"
            if orig.diag.message_hint:
                text += f". {orig.diag.message_hint}"
            if orig.sqlstate == "PSM01":
                raise NotEmbeddedError(text) from e
            if orig.sqlstate == "22023":
                raise ValueError(text) from e
        raise


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
        ValueError: On an unknown model, a vector size other than the model's, a non-finite
            value or a sigma^2 <= 0.
    """
    _check_choice(kind, QUERY_KINDS, "kind")
    model = session.get(ModelVersion, model_version)
    if model is None:
        raise ValueError(f"unknown model version {model_version!r}; register the checkpoint first")
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
        ValueError: When no such query exists, or it was encoded by another model or in
            another embedding size.
    """
    query = session.get(StoredQuery, int(query_id))
    if query is None:
        raise ValueError(f"no stored query with id {query_id}; create one with `psm query embed`")
    if model_version is not None and query.model_version != model_version:
        model = session.get(ModelVersion, model_version)
        size = f" ({model.embed_dim}-d)" if model is not None else ""
        raise ValueError(
            f"query {query_id} was encoded by model {query.model_version} ({query.dim}-d), not by "
            f"{model_version}{size}; encode it again with `psm query embed --model {model_version}`"
        )
    return query


def list_queries(*, session: Session, model_version: str | None = None) -> list[StoredQuery]:
    """Stored queries, newest first, optionally of one model."""
    stmt = select(StoredQuery).order_by(StoredQuery.id.desc())
    if model_version is not None:
        stmt = stmt.where(StoredQuery.model_version == model_version)
    return list(session.scalars(stmt))


# --------------------------------------------------------------------------- rankings


def _region_arg(region: RegionLike, srid: int) -> Any:
    return _geometry_arg(parse_region(region, srid=srid))


def _geometry_arg(geom: BaseGeometry | None) -> Any:
    """A checked lon/lat geometry as a bound SQL value (WKB)."""
    if geom is None:
        return literal(None, Geometry(srid=4326))
    return func.ST_GeomFromWKB(literal(shapely.to_wkb(geom), LargeBinary), 4326)


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
        literal(int(query_id), BigInteger), _region_arg(region, srid),
        literal(_check_int(month, "month"), Integer), literal(_check_int(hour, "hour"), Integer),
        literal(audio_source, Text), literal(caption_source, Text),
        literal(_check_int(zoom, "zoom"), Integer), literal(check_k(k), Integer),
        literal(_check_choice(method, METHODS, "method"), Text),
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
        query_id=query_id, region=region, srid=srid, month=month, hour=hour,
        audio_source=audio_source, caption_source=caption_source, zoom=zoom, k=k, method=method,
    )
    rows = _run(session, lambda: session.execute(stmt).all())
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
        literal(_check_int(month, "month"), Integer), literal(_check_int(hour, "hour"), Integer),
        literal(audio_source, Text), literal(caption_source, Text),
        literal(_check_int(zoom, "zoom"), Integer), literal(check_k(k), Integer),
        literal(_check_choice(agg, AGGREGATES, "agg"), Text), literal(float(threshold), Double),
    )
    rows = _run(session, lambda: session.execute(select(ranked)).all())
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


def _float8_array(payload: bytes | None) -> np.ndarray:
    """Decode ``array_send(float8[] / int8[])`` output (1-D, no NULLs) into a numpy array."""
    if payload is None:
        return np.empty(0)
    ndim = int.from_bytes(payload[0:4], "big")
    if ndim == 0:
        return np.empty(0)
    n = int.from_bytes(payload[12:16], "big")
    body = np.frombuffer(payload, dtype=np.dtype([("len", ">i4"), ("v", ">f8")]), count=n, offset=20)
    return body["v"].astype(np.float64)


def _int8_array(payload: bytes | None) -> np.ndarray:
    if payload is None:
        return np.empty(0, dtype=np.int64)
    ndim = int.from_bytes(payload[0:4], "big")
    if ndim == 0:
        return np.empty(0, dtype=np.int64)
    n = int.from_bytes(payload[12:16], "big")
    body = np.frombuffer(payload, dtype=np.dtype([("len", ">i4"), ("v", ">i8")]), count=n, offset=20)
    return body["v"].astype(np.int64)


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
    model = session.get(ModelVersion, query.model_version)
    assert model is not None  # the foreign key guarantees it
    geom = parse_region(region, srid=srid)
    geom_arg = _geometry_arg(geom)
    zoom_value = _check_int(zoom, "zoom")
    month, hour = _check_int(month, "month"), _check_int(hour, "hour")
    _run(session, lambda: session.execute(select(func.psm.check_ranking_args(
        literal(month, Integer), literal(hour, Integer), literal(audio_source, Text),
        literal(caption_source, Text), literal(zoom_value, Integer), literal(1, Integer)))).all())
    cid = _run(session, lambda: session.scalar(select(FindCondition(
        literal(month, Integer), literal(hour, Integer),
        literal(audio_source, Text), literal(caption_source, Text)))))
    started = time.perf_counter()
    scores = None
    if cid is not None:
        tiles = _run(session, lambda: region_layout(session=session, region=geom, zoom=int(zoom_value or 1)))
        if len(tiles["tile_id"]):
            scores = _run(session, lambda: scores_for_tiles(
                model, np.asarray(query.mu, dtype=np.float32), float(query.var_sum), cid, tiles["tile_id"],
                session=session))
    if scores is None or len(scores["tile_id"]) == 0:
        # Reuse the SQL diagnosis so both APIs say the same thing.
        _run(session, lambda: session.execute(select(func.psm.raise_not_embedded(
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


# --------------------------------------------------------------------------- listings


def list_models(*, session: Session) -> list[ModelVersion]:
    """Registered model versions, newest first."""
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc())))


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


# --------------------------------------------------------------------------- ANN indexes


def ann_index_name(model_version: str, condition_id: int) -> str:
    """The name of the HNSW index of one (model, condition) slice."""
    return f"embeddings_ann_{model_version[:16]}_{int(condition_id)}"


ANN_KEY_TYPES = ("vector", "halfvec")
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
    m: int = 8,
    ef_construction: int = 64,
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
        m: HNSW graph degree. 8 (the default) measured best on the demo model's embeddings,
            which are nearly one-dimensional; try 16-32 for richer ones (docs/benchmarks.md).
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
        ValueError: On an unknown model or condition, or bad HNSW parameters.
    """
    from psycopg import sql

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
        model = session.get(ModelVersion, model_version)
        if model is None:
            raise ValueError(f"unknown model version {model_version!r}")
        if session.get(Condition, int(condition_id)) is None:
            raise ValueError(f"unknown condition id {condition_id}")
        rows = session.scalar(select(func.count()).select_from(Embedding).where(
            Embedding.model_version == model_version, Embedding.condition_id == condition_id))
    name = ann_index_name(model.version, condition_id)
    dim = model.embed_dim + 1
    memory = maintenance_work_mem or hnsw_build_memory(int(rows or 0), dim, m, key_type)
    ddl = sql.SQL(
        "CREATE INDEX {conc} {name} ON psm.embeddings USING hnsw "
        "((psm.ann_vector(mu, var_sum)::{key}({dim})) {ops}) "
        "WITH (m = {m}, ef_construction = {ef}) "
        "WHERE model_version = {version} AND condition_id = {cid}"
    ).format(
        conc=sql.SQL("CONCURRENTLY" if concurrently else ""), name=sql.Identifier(name),
        key=sql.SQL(key_type), ops=sql.SQL(f"{key_type}_l2_ops"),
        dim=sql.Literal(dim), m=sql.Literal(int(m)), ef=sql.Literal(int(ef_construction)),
        version=sql.Literal(model.version), cid=sql.Literal(int(condition_id)),
    )
    raw = engine.raw_connection()
    pg = raw.driver_connection
    assert isinstance(pg, psycopg.Connection)
    try:
        pg.autocommit = True
        pg.execute("SELECT set_config('maintenance_work_mem', %s, false)", (memory,))
        pg.execute("SELECT set_config('max_parallel_maintenance_workers', %s, false)", (str(workers),))
        pg.execute(sql.SQL("DROP INDEX {conc} IF EXISTS psm.{name}").format(
            conc=sql.SQL("CONCURRENTLY" if concurrently else ""), name=sql.Identifier(name)))
        started = time.perf_counter()
        pg.execute(ddl)
        seconds = time.perf_counter() - started
    finally:
        if not pg.closed:
            pg.execute("RESET maintenance_work_mem")
            pg.execute("RESET max_parallel_maintenance_workers")
            pg.autocommit = False  # the connection goes back to the pool
        raw.close()
    with Session(engine, expire_on_commit=False) as session, session.begin():
        entry = session.get(AnnIndex, (model_version, int(condition_id)))
        if entry is None:
            entry = AnnIndex(model_version=model_version, condition_id=int(condition_id))
            session.add(entry)
        entry.index_name, entry.dim, entry.m, entry.key_type = name, dim, int(m), key_type
        entry.ef_construction, entry.rows, entry.build_seconds = int(ef_construction), int(rows or 0), seconds
    log.info("built %s over %s rows in %.1f s", name, rows, seconds)
    return entry


__all__ = [
    "AGGREGATES", "ANN_KEY_TYPES", "MAX_K", "METHODS", "ConditionSummary", "MapScores", "RegionLike", "RegionScore",
    "RegionSetSummary", "TileScore", "ann_index_name", "build_ann_index", "check_k", "hnsw_build_memory",
    "eval_metrics_frame", "eval_runs", "get_query", "jobs", "list_conditions", "list_models",
    "list_queries", "list_region_sets", "list_regions", "map_scores", "parse_region", "region_layout",
    "rank_regions", "rank_regions_frame", "rank_tiles", "rank_tiles_frame", "rank_tiles_stmt",
    "store_query",
]
