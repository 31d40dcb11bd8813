"""Our SQL functions (``psm.csd``, the ranking functions, ...) as SQLAlchemy function classes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geoalchemy2 import Geometry
from pgvector.sqlalchemy import Vector
from sqlalchemy import BigInteger, Double, Integer, Text, column, literal
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import GenericFunction
from sqlalchemy.sql.selectable import TableValuedAlias

if TYPE_CHECKING:
    from psm_model.condition import Condition


class _PsmFunction(GenericFunction[Any]):
    """A function that lives in the ``psm`` schema and renders as ``psm.<name>(...)``.

    Subclasses register in the ``psm`` package, so ``func.psm.csd(...)`` builds the same
    typed element as ``Csd(...)``.
    """

    inherit_cache = True
    package = "psm"
    _register = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.packagenames = ("psm",)


class Csd(_PsmFunction):
    """``psm.csd(mu_p, var_p, mu_q, var_q)``: the closed-form sampled distance (paper Eq. 7)."""

    name = "csd"
    type = Double()
    inherit_cache = True


class MatchProbability(_PsmFunction):
    """``psm.match_probability(d, a, b)`` = sigmoid(-a * d + b)."""

    name = "match_probability"
    type = Double()
    inherit_cache = True


class AnnVector(_PsmFunction):
    """``psm.ann_vector(mu, var_sum)`` = [mu, sqrt(var_sum)], the key of the HNSW indexes."""

    name = "ann_vector"
    type = Vector()
    inherit_cache = True


class FindCondition(_PsmFunction):
    """``psm.find_condition(month, hour, audio_source, caption_source)``: id or NULL."""

    name = "find_condition"
    type = Integer()
    inherit_cache = True


class RegionFromText(_PsmFunction):
    """``psm.region_from_text(text)``: a WKT, EWKT or GeoJSON region in EPSG:4326."""

    name = "region_from_text"
    type = Geometry(srid=4326)
    inherit_cache = True


class Region4326(_PsmFunction):
    """``psm.region_4326(geometry)``: a checked region transformed to EPSG:4326."""

    name = "region_4326"
    type = Geometry(srid=4326)
    inherit_cache = True


class RegionGeom(_PsmFunction):
    """``psm.region(region_set, name)``: the geometry of one named region."""

    name = "region"
    type = Geometry(srid=4326)
    inherit_cache = True


class RankTiles(_PsmFunction):
    """``psm.rank_tiles(query_id, region, month, hour, audio_source, caption_source, zoom, k, method)``.

    Use :func:`rank_tiles_table` to select from it with typed columns.
    """

    name = "rank_tiles"
    inherit_cache = True


class RankRegions(_PsmFunction):
    """``psm.rank_regions(query_id, region_set, month, hour, audio_source, caption_source, zoom, k, agg, threshold)``.

    Use :func:`rank_regions_table` to select from it with typed columns.
    """

    name = "rank_regions"
    inherit_cache = True


class RankTilesGaussian(_PsmFunction):
    """``psm.rank_tiles_gaussian(model_version, mu, var, region, month, hour, audio_source, caption_source, zoom, k, method)``.

    :class:`RankTiles` for a query Gaussian (``var`` is sigma^2) instead of a stored query.
    Use :func:`rank_tiles_gaussian_table` to select from it with typed columns.
    """

    name = "rank_tiles_gaussian"
    inherit_cache = True


class RankRegionsGaussian(_PsmFunction):
    """``psm.rank_regions_gaussian(model_version, mu, var, region_set, month, hour, audio_source, caption_source, zoom, k, agg, threshold)``.

    :class:`RankRegions` for a query Gaussian (``var`` is sigma^2) instead of a stored query.
    Use :func:`rank_regions_gaussian_table` to select from it with typed columns.
    """

    name = "rank_regions_gaussian"
    inherit_cache = True


class L2SquaredDistance(GenericFunction[float]):
    """pgvector's ``vector_l2_squared_distance(a, b)`` = ||a - b||^2 (no square root)."""

    name = "vector_l2_squared_distance"
    type = Double()
    inherit_cache = True


class ArraySend(GenericFunction[bytes]):
    """``array_send(anyarray)``: an array in PostgreSQL's binary form, for fast bulk fetches."""

    name = "array_send"
    inherit_cache = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from sqlalchemy import LargeBinary

        kwargs.setdefault("type_", LargeBinary())
        super().__init__(*args, **kwargs)


def condition_args(condition: Condition) -> tuple[ColumnElement[Any], ...]:
    """A condition as the four typed arguments (month, hour, audio_source, caption_source) of our SQL functions."""
    month, hour, audio_source, caption_source = condition.sql_args()
    return (literal(month, Integer), literal(hour, Integer), literal(audio_source, Text),
            literal(caption_source, Text))


def _tile_columns(fn: GenericFunction[Any]) -> TableValuedAlias:
    return fn.table_valued(
        column("tile_id", BigInteger),
        column("geom", Geometry("POLYGON", srid=4326)),
        column("distance", Double),
        column("probability", Double),
        column("uncertainty", Double),
        name="ranked",
    )


def _region_columns(fn: GenericFunction[Any]) -> TableValuedAlias:
    return fn.table_valued(
        column("region_id", BigInteger),
        column("region_name", Text),
        column("score", Double),
        column("tile_count", BigInteger),
        column("uncertainty", Double),
        name="ranked",
    )


def rank_tiles_table(*args: Any) -> TableValuedAlias:
    """``psm.rank_tiles(...)`` as a FROM item with typed columns.

    Columns: tile_id, geom, distance, probability, uncertainty.
    """
    return _tile_columns(RankTiles(*args))


def rank_tiles_gaussian_table(*args: Any) -> TableValuedAlias:
    """``psm.rank_tiles_gaussian(...)`` as a FROM item with the columns of :func:`rank_tiles_table`."""
    return _tile_columns(RankTilesGaussian(*args))


def rank_regions_table(*args: Any) -> TableValuedAlias:
    """``psm.rank_regions(...)`` as a FROM item with typed columns.

    Columns: region_id, region_name, score, tile_count, uncertainty.
    """
    return _region_columns(RankRegions(*args))


def rank_regions_gaussian_table(*args: Any) -> TableValuedAlias:
    """``psm.rank_regions_gaussian(...)`` as a FROM item with the columns of :func:`rank_regions_table`."""
    return _region_columns(RankRegionsGaussian(*args))


__all__ = [
    "AnnVector", "ArraySend", "Csd", "FindCondition", "L2SquaredDistance", "MatchProbability",
    "RankRegions", "RankRegionsGaussian", "RankTiles", "RankTilesGaussian", "Region4326",
    "RegionFromText", "RegionGeom", "condition_args", "rank_regions_gaussian_table", "rank_regions_table",
    "rank_tiles_gaussian_table", "rank_tiles_table",
]
