"""Checks of user uploads (audio clips, GeoJSON regions, typed boxes) with messages a user can act on."""

from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import shapely
import soundfile as sf
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

AUDIO_TYPES = ("wav", "flac", "ogg", "mp3")


class UploadError(ValueError):
    """An uploaded file or typed value that the user has to fix."""


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def read_audio(name: str, data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """Decode an uploaded audio file to mono float32, refusing empty, non-audio and too-long files.

    The length is read from the header before decoding, so a two-hour recording is refused
    without being decoded.

    Raises:
        UploadError: With a message that says what is wrong and what is accepted.
    """
    if not data:
        raise UploadError(f"The file {name!r} is empty (0 bytes). Upload a WAV, FLAC, OGG or MP3 clip.")
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as e:  # libsndfile raises several types for unknown formats
        reason = re.sub(r"^Error opening <[^>]*>: ", "", str(e).strip())[:120]
        raise UploadError(
            f"The file {name!r} is not an audio file we can read ({reason}). "
            "Upload a WAV, FLAC, OGG or MP3 clip."
        ) from e
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    if info.frames <= 0 or seconds <= 0:
        raise UploadError(f"The audio file {name!r} holds no samples. Upload a clip with sound in it.")
    if seconds > max_seconds:
        raise UploadError(
            f"The clip {name!r} is {_clock(seconds)} long; the limit is {_clock(max_seconds)} "
            f"(setting PSM_MAX_AUDIO_SECONDS = {max_seconds:g} s). Trim it and upload again."
        )
    try:
        wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:
        raise UploadError(f"The audio file {name!r} is damaged and cannot be decoded: {e}") from e
    mono = wave.mean(axis=1)
    if mono.size == 0:
        raise UploadError(f"The audio file {name!r} holds no samples. Upload a clip with sound in it.")
    if not np.isfinite(mono).all():
        raise UploadError(f"The audio file {name!r} contains NaN or infinite samples.")
    return mono.astype(np.float32), int(sr)


def _check_lonlat(geom: BaseGeometry, what: str) -> None:
    w, s, e, n = geom.bounds
    if w < -180 or e > 180 or s < -90 or n > 90:
        raise UploadError(
            f"The {what} lies outside longitude/latitude bounds ({w:.4g}, {s:.4g}, {e:.4g}, {n:.4g}). "
            "Give coordinates in EPSG:4326 (degrees), longitude first."
        )


def read_geojson(name: str, data: bytes) -> BaseGeometry:
    """Parse an uploaded GeoJSON (geometry, Feature or FeatureCollection) into one (Multi)Polygon.

    Raises:
        UploadError: On an empty file, invalid JSON or GeoJSON, a geometry that is not a polygon,
            an invalid (self-intersecting) polygon or coordinates outside lon/lat bounds.
    """
    if not data or not data.strip():
        raise UploadError(f"The file {name!r} is empty. Upload a GeoJSON Polygon or MultiPolygon.")
    try:
        obj = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UploadError(f"The file {name!r} is not valid JSON: {e}. Upload a GeoJSON Polygon or MultiPolygon.") from e
    if not isinstance(obj, dict) or "type" not in obj:
        raise UploadError(f"The file {name!r} is JSON but not GeoJSON: it has no \"type\" member.")
    if obj["type"] == "FeatureCollection":
        geoms = [f.get("geometry") for f in obj.get("features") or [] if isinstance(f, dict)]
    elif obj["type"] == "Feature":
        geoms = [obj.get("geometry")]
    else:
        geoms = [obj]
    geoms = [g for g in geoms if g]
    if not geoms:
        raise UploadError(f"The GeoJSON {name!r} holds no geometry. Upload a Polygon or MultiPolygon.")
    parts = []
    for g in geoms:
        try:
            geom = shape(g)
        except Exception as e:
            raise UploadError(f"The GeoJSON {name!r} has a geometry that cannot be read: {e}") from e
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise UploadError(
                f"The GeoJSON {name!r} holds a {geom.geom_type}, not a polygon. The region must be a "
                "Polygon or MultiPolygon (buffer points or lines into areas first)."
            )
        if geom.is_empty:
            raise UploadError(f"The GeoJSON {name!r} holds an empty polygon.")
        if not geom.is_valid:
            raise UploadError(f"The polygon in {name!r} is not valid: {explain_validity(geom)}. Repair it and upload again.")
        parts.append(geom)
    region = shapely.union_all(parts) if len(parts) > 1 else parts[0]
    _check_lonlat(region, f"region in {name!r}")
    return region


def parse_bbox(text: str) -> BaseGeometry:
    """Parse "west, south, east, north" (degrees) into a box polygon.

    Raises:
        UploadError: On anything that is not four numbers forming a non-empty lon/lat box.
    """
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    if len(parts) != 4:
        raise UploadError(f"Type the box as four numbers: west, south, east, north (got {text!r}).")
    try:
        w, s, e, n = (float(p) for p in parts)
    except ValueError as err:
        raise UploadError(f"Type the box as four numbers: west, south, east, north (got {text!r}).") from err
    if not all(math.isfinite(v) for v in (w, s, e, n)):
        raise UploadError("The box coordinates must be finite numbers.")
    if w >= e or s >= n:
        raise UploadError(f"The box is empty: west ({w}) must be < east ({e}) and south ({s}) < north ({n}).")
    geom = box(w, s, e, n)
    _check_lonlat(geom, "box")
    return geom
