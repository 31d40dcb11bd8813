"""Rankings: tiles and regions by CSD to a query Gaussian, and whole-map scores.

* :mod:`psm_db.ranking.stored`: stored queries, through the SQL functions ``psm.rank_tiles`` /
  ``psm.rank_regions`` (:func:`rank_tiles`, :func:`rank_regions`, their statement builder and
  DataFrame forms) and whole maps (:func:`map_scores`).
* :mod:`psm_db.ranking.adhoc`: a Gaussian bound as parameters, nothing stored (the reader
  role): :func:`condition_scores`, :func:`map_scores_vector`, :func:`rank_regions_vector`, and
  the array pieces every whole map uses (:func:`region_tiles`, :func:`scores_for_tiles`,
  :func:`join_scores`).
* :mod:`psm_db.ranking.common`: result types and argument checks.
"""

from psm_db.ranking.adhoc import (
    MAP_COLUMNS,
    RANGE_SLACK,
    TILE_COLUMNS,
    condition_scores,
    join_scores,
    map_scores_vector,
    rank_regions_vector,
    region_tiles,
    scores_for_tiles,
)
from psm_db.ranking.common import (
    AGGREGATES,
    MAX_K,
    METHODS,
    MapScores,
    RegionScore,
    TileScore,
    check_k,
)
from psm_db.ranking.stored import (
    map_scores,
    rank_regions,
    rank_regions_frame,
    rank_tiles,
    rank_tiles_frame,
    rank_tiles_stmt,
    region_layout,
)

__all__ = [
    "AGGREGATES", "MAP_COLUMNS", "MAX_K", "METHODS", "RANGE_SLACK", "TILE_COLUMNS", "MapScores", "RegionScore",
    "TileScore", "check_k", "condition_scores", "join_scores", "map_scores", "map_scores_vector", "rank_regions",
    "rank_regions_frame", "rank_regions_vector", "rank_tiles", "rank_tiles_frame", "rank_tiles_stmt",
    "region_layout", "region_tiles", "scores_for_tiles",
]
