"""Plan a region embedding job: its inputs, its region, its tile grids and its chunks.

The region is read by :func:`psm_db.geometry.parse_region` (the parser every entry point uses).
Nothing here writes to the database.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import shapely
from shapely.geometry.base import BaseGeometry

from psm_db.engine import Db
from psm_db.geometry import parse_region
from psm_db.models import ModelVersion
from psm_db.registry import get_model_version
from psm_db.tiles import GridSpec, TileSet, bbox_tile_count, grid_tiles
from psm_model.condition import Condition
from worker.imagery import ImagerySource, ImagerySpec, open_source

if TYPE_CHECKING:
    from psm_db.settings import Settings

# --------------------------------------------------------------------------- inputs


ConditionSpec = Condition
"""A job's metadata condition: :class:`psm_model.condition.Condition` (validated when built).

In a job's params a condition is the JSON object of :meth:`Condition.as_dict`
(``{"month": 5, "hour": null, ...}``), as it always was.
"""


@dataclass(frozen=True)
class EmbedRequest:
    """Everything ``psm.embed_region`` needs, as small JSON-able values.

    Attributes:
        region: A bbox ``minlon,minlat,maxlon,maxlat``, a WKT or GeoJSON polygon (text or a
            ``.geojson``/``.json``/``.wkt`` file), or a stored region ``set/name``.
        model_version: A registered model version (or a unique prefix of >= 8 hex digits).
        zooms: Zoom levels.
        imagery: The imagery source.
        conditions: Metadata conditions; each gets its own embeddings.
        chunk_tiles: Tiles per chunk (one sub-task each); None: the settings' value.
    """

    region: str
    model_version: str
    zooms: tuple[int, ...] = (1,)
    imagery: ImagerySpec = field(default_factory=ImagerySpec)
    conditions: tuple[Condition, ...] = (Condition(),)
    chunk_tiles: int | None = None

    def to_params(self) -> dict[str, Any]:
        """JSON-able parameters for the job row."""
        return {
            "region": self.region,
            "model_version": self.model_version,
            "zooms": list(self.zooms),
            "imagery": self.imagery.to_dict(),
            "conditions": [c.as_dict() for c in self.conditions],
            "chunk_tiles": self.chunk_tiles,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> EmbedRequest:
        """Rebuild from :meth:`to_params`.

        Raises:
            ValueError: On a condition :class:`Condition` refuses.
        """
        return cls(
            region=params["region"],
            model_version=params["model_version"],
            zooms=tuple(params.get("zooms") or (1,)),
            imagery=ImagerySpec.from_dict(params.get("imagery") or {}),
            conditions=tuple(Condition.from_dict(c) for c in params.get("conditions") or [{}]),
            chunk_tiles=params.get("chunk_tiles"),
        )


@dataclass(frozen=True)
class Limits:
    """Service limits that apply to a job (from the settings)."""

    max_region_tiles: int = 250_000
    chunk_tiles: int = 2_048
    batch_size: int = 256

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits the settings give (PSM_MAX_REGION_TILES, PSM_CHUNK_TILES, PSM_EMBED_BATCH_SIZE)."""
        return cls(max_region_tiles=settings.max_region_tiles, chunk_tiles=settings.chunk_tiles,
                   batch_size=settings.embed_batch_size)


@dataclass
class Plan:
    """A validated job: the region, the model, the grids and the chunks."""

    region: BaseGeometry
    model: ModelVersion
    source: ImagerySource
    specs: list[GridSpec]
    chunks: list[tuple[int, int, int]]
    """(index into specs, start, stop) per chunk, in a fixed order."""
    conditions: list[Condition]
    min_valid: float = 0.5
    """Tiles with a smaller share of pixels holding data are skipped (:attr:`ImagerySpec.min_valid`)."""

    @property
    def total(self) -> int:
        """Number of tile jobs (tiles over all zoom levels)."""
        return sum(stop - start for _, start, stop in self.chunks)

    def tiles(self, chunk: int) -> TileSet:
        """The tiles of chunk ``chunk``."""
        spec_i, start, stop = self.chunks[chunk]
        return cached_grid(self.region, self.specs[spec_i]).slice(start, stop)


# --------------------------------------------------------------------------- per-process caches

_GRIDS: dict[tuple[bytes, GridSpec], TileSet] = {}
_SOURCES: dict[str, ImagerySource] = {}
_CACHE_SIZE = 8


def cached_grid(region: BaseGeometry, spec: GridSpec) -> TileSet:
    """``grid_tiles(region, spec)``, kept per process: every chunk of a job needs the same grid."""
    key = (shapely.to_wkb(region), spec)
    tiles = _GRIDS.get(key)
    if tiles is None:
        if len(_GRIDS) >= _CACHE_SIZE:
            _GRIDS.pop(next(iter(_GRIDS)))
        tiles = _GRIDS[key] = grid_tiles(region, spec)
    return tiles


def cached_source(spec: ImagerySpec) -> ImagerySource:
    """An opened imagery source, kept per process (a folder source reads every file's header)."""
    key = json.dumps(spec.to_dict(), sort_keys=True)
    source = _SOURCES.get(key)
    if source is not None and spec.path and not Path(spec.path).expanduser().exists():
        _SOURCES.pop(key, None)
        source = None  # gone since it was opened: open_source raises the clear error
    if source is None:
        if len(_SOURCES) >= _CACHE_SIZE:
            _SOURCES.pop(next(iter(_SOURCES)))
        source = _SOURCES[key] = open_source(spec)
    return source


# --------------------------------------------------------------------------- regions


def resolve_region(text: str, conn: Db | None = None) -> BaseGeometry:
    """The region of a job in lon/lat, read by :func:`psm_db.geometry.parse_region`.

    ``conn`` reads a stored ``set/name``; an EWKT SRID or a GeoJSON crs is transformed to EPSG:4326.

    Raises:
        ValueError: for an unparsable, invalid (e.g. self-intersecting), empty or out-of-range
            polygon, a bad bbox, an unknown SRID or an unknown stored region.
        FileNotFoundError: for a region file that does not exist.
    """
    return parse_region(text, db=conn)


# --------------------------------------------------------------------------- planning


def plan_job(conn: Db, request: EmbedRequest, limits: Limits) -> Plan:
    """Validate a request completely and cut it into chunks; writes nothing.

    Raises:
        ValueError, LookupError, FileNotFoundError: each with a message that says what to fix.
    """
    region = resolve_region(request.region, conn)
    conditions = list(request.conditions)
    if not conditions:
        raise ValueError("give at least one metadata condition (an empty one leaves all metadata out)")
    if len(set(conditions)) != len(conditions):
        raise ValueError("the same condition is given twice")
    zooms = list(request.zooms)
    if not zooms:
        raise ValueError("give at least one zoom level")
    for z in zooms:
        if isinstance(z, bool) or int(z) != z or z < 1:
            raise ValueError(f"zoom levels must be integers >= 1, got {z!r}")
    if len(set(zooms)) != len(zooms):
        raise ValueError(f"zoom levels repeat: {zooms}")
    chunk_tiles = int(request.chunk_tiles or limits.chunk_tiles)
    if chunk_tiles < 1:
        raise ValueError(f"chunk_tiles must be >= 1, got {chunk_tiles}")
    model = get_model_version(conn, request.model_version)
    if not Path(model.checkpoint_path).is_file():
        raise FileNotFoundError(
            f"the checkpoint of model {model.version} is missing at {model.checkpoint_path}; "
            "workers need it on their disk (or re-register it)"
        )
    source = cached_source(request.imagery)
    source.check(region, zooms)
    specs = [GridSpec(source.name, source.gsd, source.size_px, int(z)) for z in zooms]
    chunks: list[tuple[int, int, int]] = []
    total = 0
    for i, spec in enumerate(specs):
        upper = bbox_tile_count(region, spec)  # cheap bound first: never build a huge grid
        if upper > 4 * limits.max_region_tiles:
            raise ValueError(
                f"the region covers about {upper:,} tiles at zoom {spec.zoom} (its bounding box), more "
                f"than the limit of {limits.max_region_tiles:,}; use a smaller region, a higher zoom, "
                "or raise PSM_MAX_REGION_TILES"
            )
        n = len(cached_grid(region, spec))
        if n > limits.max_region_tiles:
            raise ValueError(
                f"the region covers {n:,} tiles at zoom {spec.zoom}, more than the limit of "
                f"{limits.max_region_tiles:,}; use a smaller region, a higher zoom, or raise PSM_MAX_REGION_TILES"
            )
        total += n
        if total > limits.max_region_tiles:
            raise ValueError(
                f"the region covers {total:,} tiles over zoom levels {zooms}, more than the limit of "
                f"{limits.max_region_tiles:,}; use a smaller region or fewer zoom levels, or raise "
                "PSM_MAX_REGION_TILES"
            )
        chunks += [(i, s, min(n, s + chunk_tiles)) for s in range(0, n, chunk_tiles)]
    if total == 0:
        raise ValueError("the region covers no tiles")
    return Plan(region, model, source, specs, chunks, conditions, float(request.imagery.min_valid))


def expected_rows(plan: Plan) -> int:
    """Embedding rows a finished job guarantees: tiles x conditions (distinct tiles per zoom)."""
    return plan.total * len(plan.conditions)


def tiles_per_chunk_hint(total: int, workers: int) -> int:
    """A chunk size that gives each of ``workers`` a few chunks (for callers that ask)."""
    return max(64, math.ceil(total / max(1, 4 * workers)))


__all__ = [
    "ConditionSpec", "EmbedRequest", "Limits", "Plan", "cached_grid", "cached_source", "expected_rows", "plan_job",
    "resolve_region", "tiles_per_chunk_hint",
]
