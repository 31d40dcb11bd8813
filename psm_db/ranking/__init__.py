"""Rankings: tiles and regions by CSD to a query, and whole-map scores.

Every ranking takes a stored query (``query_id``) or a query Gaussian that is not stored
(``gaussian``, a :class:`Gaussian`: typed text or an uploaded clip, on the reader role), and a
metadata condition (:class:`psm_model.condition.Condition`).

* :mod:`psm_db.ranking.ranked`: the top-k tiles and regions, through the SQL functions
  ``psm.rank_tiles`` / ``psm.rank_regions`` and their Gaussian forms ``psm.rank_tiles_gaussian``
  / ``psm.rank_regions_gaussian`` (:func:`rank_tiles`, :func:`rank_regions`, their statement
  builder and DataFrame forms).
* :mod:`psm_db.ranking.maps`: whole maps (:func:`map_scores`), and the array pieces they are
  made of (:func:`region_layout`, :func:`region_tiles`, :func:`scores_for_tiles`,
  :func:`join_scores`).
* :mod:`psm_db.ranking.common`: the query Gaussian, result types and argument checks.
"""

from psm_db.ranking.common import (
    AGGREGATES,
    MAX_K,
    METHODS,
    Gaussian,
    MapScores,
    RegionScore,
    TileScore,
    check_k,
)
from psm_db.ranking.maps import (
    MAP_COLUMNS,
    RANGE_SLACK,
    TILE_COLUMNS,
    join_scores,
    map_scores,
    query_gaussian,
    region_layout,
    region_tiles,
    scores_for_tiles,
)
from psm_db.ranking.ranked import (
    ANY_CONDITION,
    rank_regions,
    rank_regions_frame,
    rank_tiles,
    rank_tiles_frame,
    rank_tiles_stmt,
)

__all__ = [
    "AGGREGATES", "ANY_CONDITION", "MAP_COLUMNS", "MAX_K", "METHODS", "RANGE_SLACK", "TILE_COLUMNS", "Gaussian",
    "MapScores", "RegionScore", "TileScore", "check_k", "join_scores", "map_scores", "query_gaussian",
    "rank_regions", "rank_regions_frame", "rank_tiles", "rank_tiles_frame", "rank_tiles_stmt", "region_layout",
    "region_tiles", "scores_for_tiles",
]
