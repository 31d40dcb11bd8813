"""Embed a region: validate and plan a job, then embed one chunk of tiles (plain, Celery-free functions)."""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import shapely
from psycopg.types.json import Jsonb
from shapely import wkt as shapely_wkt
from shapely.geometry import MultiPolygon, Polygon, box, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from psm_db import bulk, jobs
from psm_db.registry import ModelVersion, get_model_version
from psm_db.tiles import GridSpec, TileSet, bbox_tile_count, grid_tiles, upsert_tiles
from psm_model.metadata import AUDIO_SOURCES, CAPTION_SOURCES, check_hour, check_month
from worker.imagery import ImagerySource, ImagerySpec, open_source
from worker.model_runner import compute_gaussians, get_model, read_and_compute_features

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]
"""progress(done, total, message)."""


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ConditionSpec:
    """A metadata condition; None leaves that metadata type out (masked in the fusion)."""

    month: int | None = None
    hour: int | None = None
    audio_source: str | None = None
    caption_source: str | None = None

    def validated(self) -> ConditionSpec:
        """A copy with checked and normalised values.

        Raises:
            ValueError: a month outside 1..12, an hour outside 0..23 or an unknown source.
        """
        audio = _check_source(self.audio_source, AUDIO_SOURCES, "audio source")
        caption = _check_source(self.caption_source, CAPTION_SOURCES, "caption source")
        return ConditionSpec(check_month(self.month), check_hour(self.hour), audio, caption)

    @classmethod
    def parse(cls, text: str) -> ConditionSpec:
        """Parse ``month=5,hour=20,audio=inaturalist,caption=metadata`` (any part may be left out).

        Raises:
            ValueError: on an unknown key or a value that is not a number where one is needed.
        """
        values: dict[str, Any] = {}
        keys = {"month": "month", "hour": "hour", "audio": "audio_source", "audio_source": "audio_source",
                "caption": "caption_source", "caption_source": "caption_source"}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in keys:
                raise ValueError(
                    f"bad condition part {part!r} in {text!r}; use month=1..12, hour=0..23, "
                    f"audio={'|'.join(AUDIO_SOURCES)}, caption={'|'.join(CAPTION_SOURCES)}"
                )
            value = value.strip()
            if keys[key] in ("month", "hour"):
                try:
                    values[keys[key]] = int(value)
                except ValueError as e:
                    raise ValueError(f"{key} must be an integer, got {value!r}") from e
            else:
                values[keys[key]] = value or None
        return cls(**values).validated()


def _check_source(value: str | None, names: tuple[str, ...], what: str) -> str | None:
    if value is None:
        return None
    key = str(value).strip().lower()
    if key not in names:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(names)} (or leave it out)")
    return key


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
    conditions: tuple[ConditionSpec, ...] = (ConditionSpec(),)
    chunk_tiles: int | None = None

    def to_params(self) -> dict[str, Any]:
        """JSON-able parameters for the job row."""
        return {
            "region": self.region,
            "model_version": self.model_version,
            "zooms": list(self.zooms),
            "imagery": self.imagery.to_dict(),
            "conditions": [asdict(c) for c in self.conditions],
            "chunk_tiles": self.chunk_tiles,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> EmbedRequest:
        """Rebuild from :meth:`to_params`."""
        return cls(
            region=params["region"],
            model_version=params["model_version"],
            zooms=tuple(params.get("zooms") or (1,)),
            imagery=ImagerySpec.from_dict(params.get("imagery") or {}),
            conditions=tuple(ConditionSpec(**c) for c in params.get("conditions") or [{}]),
            chunk_tiles=params.get("chunk_tiles"),
        )


@dataclass(frozen=True)
class Limits:
    """Service limits that apply to a job (from the settings)."""

    max_region_tiles: int = 250_000
    chunk_tiles: int = 2_048
    batch_size: int = 256


@dataclass
class Plan:
    """A validated job: the region, the model, the grids and the chunks."""

    region: BaseGeometry
    model: ModelVersion
    source: ImagerySource
    specs: list[GridSpec]
    chunks: list[tuple[int, int, int]]
    """(index into specs, start, stop) per chunk, in a fixed order."""
    conditions: list[ConditionSpec]

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


def parse_region(text: str, conn: psycopg.Connection | None = None) -> BaseGeometry:
    """Turn a region argument into a valid lon/lat (Multi)Polygon.

    Raises:
        ValueError: for an unparsable, invalid (e.g. self-intersecting), empty or out-of-range
            polygon, or an unknown stored region.
        FileNotFoundError: for a region file that does not exist.
    """
    raw = (text or "").strip()
    if not raw:
        raise ValueError("the region is empty; give a bbox minlon,minlat,maxlon,maxlat, a WKT or "
                         "GeoJSON polygon, or a stored region set/name")
    geom: BaseGeometry
    path = Path(raw)
    if raw.lower().endswith((".geojson", ".json", ".wkt")):
        if not path.is_file():
            raise FileNotFoundError(f"region file {raw} does not exist")
        raw = path.read_text(encoding="utf-8").strip()
    if raw.startswith("{"):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"the region is not valid GeoJSON: {e}") from e
        if data.get("type") == "FeatureCollection":
            geoms = [shape(f["geometry"]) for f in data.get("features", [])]
            geom = shapely.union_all(geoms) if geoms else Polygon()
        elif data.get("type") == "Feature":
            geom = shape(data["geometry"])
        else:
            try:
                geom = shape(data)
            except Exception as e:  # noqa: BLE001 - shapely raises many kinds
                raise ValueError(f"the region is not a GeoJSON geometry: {e}") from e
    elif raw.upper().startswith(("POLYGON", "MULTIPOLYGON", "SRID=")):
        try:
            geom = shapely_wkt.loads(raw.split(";", 1)[-1] if raw.upper().startswith("SRID=") else raw)
        except Exception as e:  # noqa: BLE001 - shapely.errors.GEOSException and friends
            raise ValueError(f"the region is not valid WKT: {e}") from e
    elif _looks_like_bbox(raw):
        vals = [float(v) for v in raw.replace(" ", ",").split(",") if v]
        if len(vals) != 4:
            raise ValueError(f"a bbox needs 4 numbers minlon,minlat,maxlon,maxlat, got {raw!r}")
        west, south, east, north = vals
        if not (west < east and south < north):
            raise ValueError(f"the bbox {raw!r} is empty: need minlon < maxlon and minlat < maxlat")
        geom = box(west, south, east, north)
    elif "/" in raw:
        geom = _stored_region(raw, conn)
    else:
        raise ValueError(
            f"cannot read the region {text!r}: give a bbox minlon,minlat,maxlon,maxlat, a WKT or "
            "GeoJSON polygon, a .geojson/.wkt file, or a stored region set/name"
        )
    return check_region(geom)


def _looks_like_bbox(raw: str) -> bool:
    try:
        [float(v) for v in raw.replace(" ", ",").split(",") if v]
    except ValueError:
        return False
    return True


def _stored_region(name: str, conn: psycopg.Connection | None) -> BaseGeometry:
    set_name, _, region_name = name.partition("/")
    if conn is None:
        raise ValueError(f"the stored region {name!r} needs a database connection")
    row = conn.execute(
        "SELECT ST_AsBinary(geom) FROM psm.regions WHERE set_name = %s AND name = %s",
        (set_name, region_name),
    ).fetchone()
    if row is None:
        raise ValueError(
            f"unknown stored region {name!r}: no region {region_name!r} in set {set_name!r} "
            "(list them with `psm regions list`)"
        )
    return shapely.from_wkb(bytes(row[0]))


def check_region(geom: BaseGeometry) -> BaseGeometry:
    """Check that ``geom`` is a non-empty, valid polygon in lon/lat range.

    Raises:
        ValueError: saying what is wrong (GEOS's reason for invalid geometries).
    """
    if not isinstance(geom, Polygon | MultiPolygon):
        raise ValueError(f"the region must be a Polygon or MultiPolygon, got a {geom.geom_type}")
    if geom.is_empty:
        raise ValueError("the region is empty; give a polygon with an interior")
    if not geom.is_valid:
        raise ValueError(
            f"the region polygon is invalid: {explain_validity(geom)}; fix it (e.g. with "
            "shapely.make_valid or ST_MakeValid) and try again"
        )
    if geom.area == 0:
        raise ValueError("the region is empty (no area); give a polygon with an interior")
    w, s, e, n = geom.bounds
    if w < -180 or e > 180 or s < -90 or n > 90:
        raise ValueError(
            f"the region {geom.bounds} is outside lon [-180, 180] / lat [-90, 90]; regions are in "
            "degrees (EPSG:4326), lon first"
        )
    return geom


# --------------------------------------------------------------------------- planning


def plan_job(conn: psycopg.Connection, request: EmbedRequest, limits: Limits) -> Plan:
    """Validate a request completely and cut it into chunks; writes nothing.

    Raises:
        ValueError, LookupError, FileNotFoundError: each with a message that says what to fix.
    """
    region = parse_region(request.region, conn)
    conditions = [c.validated() for c in request.conditions]
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
    return Plan(region, model, source, specs, chunks, conditions)


def submit(
    conn: psycopg.Connection,
    request: EmbedRequest,
    limits: Limits,
    send: Callable[[str], str],
) -> tuple[uuid.UUID, Plan]:
    """Validate, create the job row and queue it with ``send(job_id) -> task_id``.

    Bad input is stored as a failed job (with the message) and re-raised; nothing is queued
    and no tile or embedding is written.
    """
    # Fix the chunk size now: every worker must cut the region the same way.
    request = replace(request, chunk_tiles=int(request.chunk_tiles or limits.chunk_tiles))
    params = request.to_params()
    try:
        plan = plan_job(conn, request, limits)
    except (ValueError, LookupError, FileNotFoundError) as e:
        conn.rollback()
        jobs.record_rejected(conn, "embed_region", params, f"invalid request: {e}")
        raise
    job_id = jobs.create_job(conn, "embed_region", params, model_version=plan.model.version)
    jobs.add_event(conn, job_id, "info",
                   f"queued: {plan.total} tiles in {len(plan.chunks)} chunk(s), "
                   f"{len(plan.conditions)} condition(s)")
    conn.commit()
    task_id = send(str(job_id))
    jobs.set_task_id(conn, job_id, task_id)
    conn.commit()
    return job_id, plan


def load_plan(conn: psycopg.Connection, job_id: str, limits: Limits) -> tuple[dict[str, Any], Plan]:
    """The job row and its plan (validated again: files may have gone since submission)."""
    job = jobs.get_job(conn, job_id)
    if job is None:
        raise LookupError(f"job {job_id} does not exist")
    request = EmbedRequest.from_params(job["params"])
    resolved = job["params"].get("resolved")
    if resolved:
        # Chunks use what the planner resolved, even if a stored region changes meanwhile.
        request = replace(request, region=resolved["region"], model_version=resolved["model_version"])
    plan = plan_job(conn, request, limits)
    conn.rollback()
    return job, plan


def prepare_job(conn: psycopg.Connection, job_id: str, limits: Limits) -> list[int]:
    """The planner step: validate, create conditions and chunk rows, mark running.

    Returns the chunks still to run (all but succeeded ones), so a redelivered planner only
    re-sends unfinished work. A permanent error fails the job and returns [].
    """
    try:
        job, plan = load_plan(conn, job_id, limits)
    except (ValueError, LookupError, FileNotFoundError) as e:
        conn.rollback()
        jobs.fail_job(conn, job_id, f"invalid request: {e}")
        return []
    if job["status"] in jobs.FINAL_STATES:
        return []
    ensure_conditions(conn, plan.conditions)
    resolved = {"region": plan.region.wkt, "model_version": plan.model.version}
    conn.execute("UPDATE psm.jobs SET params = params || %s WHERE id = %s",
                 (Jsonb({"resolved": resolved}), job_id))
    started = jobs.start_job(conn, job_id, [stop - start for _, start, stop in plan.chunks],
                             message=f"0/{len(plan.chunks)} chunks")
    if started:
        jobs.add_event(conn, job_id, "info", f"running: {plan.total} tiles, {len(plan.chunks)} chunk(s)")
    conn.commit()
    if not started:
        return []
    return [c["chunk"] for c in jobs.chunk_states(conn, job_id) if c["status"] != "succeeded"]


def ensure_conditions(conn: psycopg.Connection, conditions: Sequence[ConditionSpec]) -> list[int]:
    """Get or create the condition rows; returns their ids in order (caller commits)."""
    ids = []
    for c in conditions:
        row = conn.execute("SELECT psm.ensure_condition(%s, %s, %s, %s)",
                           (c.month, c.hour, c.audio_source, c.caption_source)).fetchone()
        assert row is not None
        ids.append(int(row[0]))
    return ids


# --------------------------------------------------------------------------- one chunk


@dataclass
class ChunkResult:
    """What one chunk did."""

    chunk: int
    tiles: int
    features_computed: int = 0
    features_reused: int = 0
    embeddings_written: int = 0
    skipped: bool = False
    job_finished: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per step: plan, tiles, read, features, fusion, write."""


def _existing_features(conn: psycopg.Connection, version: str, tile_ids: np.ndarray) -> dict[int, np.ndarray]:
    rows = conn.execute(
        "SELECT tile_id, features FROM psm.tile_features WHERE model_version = %s AND tile_id = ANY(%s)",
        (version, tile_ids.tolist()),
    ).fetchall()
    return {int(t): np.asarray(f.to_numpy() if hasattr(f, "to_numpy") else f, dtype=np.float32) for t, f in rows}


def _existing_embeddings(
    conn: psycopg.Connection, version: str, cond_ids: list[int], tile_ids: np.ndarray
) -> set[tuple[int, int]]:
    rows = conn.execute(
        "SELECT condition_id, tile_id FROM psm.embeddings WHERE model_version = %s"
        " AND condition_id = ANY(%s) AND tile_id = ANY(%s)",
        (version, cond_ids, tile_ids.tolist()),
    ).fetchall()
    return {(int(c), int(t)) for c, t in rows}


def run_chunk(
    conn: psycopg.Connection,
    job_id: str,
    chunk: int,
    limits: Limits,
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> ChunkResult:
    """Embed one chunk of a job; safe to run twice or concurrently (idempotent writes).

    Steps: upsert the chunk's tiles; compute the image features of tiles that have none for
    this model (others are reused); run fusion and heads for each condition on tiles that
    lack that embedding; write all embeddings and mark the chunk done in one transaction.
    """
    report = progress or (lambda done, total, msg: None)
    clock = [time.perf_counter()]
    seconds: dict[str, float] = {}

    def lap(step: str) -> None:
        now = time.perf_counter()
        seconds[step] = seconds.get(step, 0.0) + now - clock[0]
        clock[0] = now

    previous = jobs.claim_chunk(conn, job_id, chunk)
    if previous is None:
        raise LookupError(f"job {job_id} has no chunk {chunk}")
    job, plan = load_plan(conn, job_id, limits)
    if previous == "succeeded" or job["status"] in jobs.FINAL_STATES:
        return ChunkResult(chunk, 0, skipped=True)
    spec = plan.specs[plan.chunks[chunk][0]]
    tiles = plan.tiles(chunk)
    n = len(tiles)
    report(0, n, f"chunk {chunk}: {n} tiles")
    lap("plan")
    tile_ids = upsert_tiles(conn, tiles)
    cond_ids = ensure_conditions(conn, plan.conditions)
    conn.commit()
    lap("tiles")

    mv = plan.model
    result = ChunkResult(chunk, n, seconds=seconds)
    existing = _existing_embeddings(conn, mv.version, cond_ids, tile_ids)
    todo = {cid: np.array([(cid, int(t)) not in existing for t in tile_ids]) for cid in cond_ids}
    need = np.zeros(n, dtype=bool)
    for mask in todo.values():
        need |= mask
    features = np.zeros((n, mv.feature_dim), dtype=np.float32)
    if need.any():
        stored = _existing_features(conn, mv.version, tile_ids[need])
        conn.rollback()
        missing = np.array([need[i] and int(t) not in stored for i, t in enumerate(tile_ids)], dtype=bool)
        for i, t in enumerate(tile_ids):
            if need[i] and not missing[i]:
                features[i] = stored[int(t)]
        result.features_reused = int(need.sum() - missing.sum())
        if missing.any():
            model = get_model(mv, device)
            sub = tiles.slice(0, n)
            idx = np.flatnonzero(missing)
            lap("model")
            report(0, n, f"chunk {chunk}: computing features of {len(idx)} tiles")
            feats = read_and_compute_features(plan.source, TileSet(spec, sub.rows[idx], sub.cols[idx]), model,
                                              limits.batch_size, lap)
            features[idx] = bulk.check_features(feats, mv.feature_dim, len(idx))
            bulk.write_features(conn, mv.version, tile_ids[idx], features[idx], mv.feature_dim)
            conn.commit()
            lap("write")
            result.features_computed = len(idx)
    lat, lon = tiles.centroids()
    all_c, all_t, all_mu, all_var = [], [], [], []
    for k, (cid, cond) in enumerate(zip(cond_ids, plan.conditions, strict=True)):
        mask = todo[cid]
        if not mask.any():
            continue
        model = get_model(mv, device)
        mu, var = compute_gaussians(model, features[mask], lat[mask], lon[mask], cond, limits.batch_size)
        all_c.append(np.full(int(mask.sum()), cid, dtype=np.int32))
        all_t.append(tile_ids[mask])
        all_mu.append(mu)
        all_var.append(var)
        report(n * (k + 1) // len(cond_ids), n, f"chunk {chunk}: condition {k + 1}/{len(cond_ids)}")
    lap("fusion")
    if all_c:
        result.embeddings_written = bulk.write_embeddings(
            conn, mv.version, np.concatenate(all_c), np.concatenate(all_t),
            np.concatenate(all_mu), np.concatenate(all_var), mv.embed_dim,
        )
    result.job_finished = jobs.finish_chunk(conn, job_id, chunk, rows_written=result.embeddings_written)
    conn.commit()
    lap("write")
    log.info("job %s chunk %s: %d tiles, %s", job_id, chunk, n,
             ", ".join(f"{k} {v:.2f}s" for k, v in seconds.items()))
    report(n, n, f"chunk {chunk}: done")
    return result


def expected_rows(plan: Plan) -> int:
    """Embedding rows a finished job guarantees: tiles x conditions (distinct tiles per zoom)."""
    return plan.total * len(plan.conditions)


def tiles_per_chunk_hint(total: int, workers: int) -> int:
    """A chunk size that gives each of ``workers`` a few chunks (for callers that ask)."""
    return max(64, math.ceil(total / max(1, 4 * workers)))
