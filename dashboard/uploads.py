"""Checks of user uploads (audio clips, GeoJSON regions, typed boxes) with messages a user can act on."""

from __future__ import annotations

import io
import re
from typing import BinaryIO

import numpy as np
import soundfile as sf
from shapely.geometry.base import BaseGeometry

from psm_db import geometry
from psm_db.geometry import parse_region

AUDIO_TYPES = ("wav", "flac", "ogg", "mp3")


class UploadError(ValueError):
    """An uploaded file or typed value that the user has to fix."""


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def read_audio(name: str, data: bytes | BinaryIO, max_seconds: float, min_seconds: float = 0.0
               ) -> tuple[np.ndarray, int]:
    """Decode an uploaded audio file to mono float32, refusing empty, non-audio, too-long and too-short files.

    ``data`` is the file's bytes or a seekable binary file (Streamlit's upload itself, so its
    bytes are not copied). The length is read from the header before decoding, so a two-hour
    recording is refused without being decoded; the decoding then goes block by block into
    one mono array, never holding the whole multi-channel clip.

    Raises:
        UploadError: With a message that says what is wrong and what is accepted.
    """
    src: BinaryIO = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    src.seek(0, io.SEEK_END)
    if src.tell() == 0:
        raise UploadError(f"The file {name!r} is empty (0 bytes). Upload a WAV, FLAC, OGG or MP3 clip.")
    src.seek(0)
    try:
        info = sf.info(src)
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
    if seconds < min_seconds:
        raise UploadError(
            f"The clip {name!r} is {seconds:.2f} s long; the shortest clip accepted is {min_seconds:g} s "
            "(setting PSM_MIN_AUDIO_SECONDS). Upload a longer clip."
        )
    try:
        src.seek(0)
        mono, sr = _decode_mono(src)
    except Exception as e:
        raise UploadError(f"The audio file {name!r} is damaged and cannot be decoded: {e}") from e
    if mono.size == 0:
        raise UploadError(f"The audio file {name!r} holds no samples. Upload a clip with sound in it.")
    if not np.isfinite(mono).all():
        raise UploadError(f"The audio file {name!r} contains NaN or infinite samples.")
    return mono, sr


def _decode_mono(src: BinaryIO, block_frames: int = 1 << 18) -> tuple[np.ndarray, int]:
    """Decode to one mono float32 array, a block at a time (the channel mean of each block)."""
    with sf.SoundFile(src) as f:
        mono = np.empty(max(f.frames, 0), dtype=np.float32)
        filled = 0
        for block in f.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
            n = len(block)
            if filled + n > mono.size:  # a header that undercounts its frames (some compressed files)
                mono = np.concatenate([mono[:filled], np.empty(max(n, mono.size), dtype=np.float32)])
            np.mean(block, axis=1, out=mono[filled:filled + n])
            filled += n
        return mono[:filled], int(f.samplerate)


def read_geojson(name: str, data: bytes) -> BaseGeometry:
    """Parse an uploaded GeoJSON (geometry, Feature or FeatureCollection) into one (Multi)Polygon.

    The geometry is read by :func:`psm_db.geometry.parse_region` (a ``crs`` member is honoured
    and transformed to lon/lat), as every other region of the project is.

    Raises:
        UploadError: On an empty file, invalid JSON or GeoJSON, a geometry that is not a polygon,
            an invalid (self-intersecting) polygon or coordinates outside lon/lat bounds.
    """
    if not data or not data.strip():
        raise UploadError(f"The file {name!r} is empty. Upload a GeoJSON Polygon or MultiPolygon.")
    try:
        text = data.decode("utf-8-sig").strip()
    except UnicodeDecodeError as e:
        raise UploadError(f"The file {name!r} is not valid JSON: {e}. Upload a GeoJSON Polygon or MultiPolygon.") from e
    if not text.startswith("{"):
        raise UploadError(f"The file {name!r} is not valid JSON (it does not start with '{{'). "
                          "Upload a GeoJSON Polygon or MultiPolygon.")
    try:
        return parse_region(text, files=False)
    except ValueError as e:
        raise UploadError(f"The region in {name!r}: {e}.") from e


UPLOAD_REGION_SUFFIXES = (".geojson", ".json", ".gpkg", ".fgb", ".parquet", ".zip")
"""Region files the dashboard takes: GeoJSON, GeoPackage, FlatGeobuf, GeoParquet, a zipped Shapefile."""


def read_region_file(name: str, data: bytes) -> BaseGeometry:
    """An uploaded region file as one (Multi)Polygon in lon/lat, whatever its format and CRS.

    GeoJSON is read as text (:func:`read_geojson`); the other formats are written to a private
    temporary folder under their own name and read by :func:`psm_db.geometry.parse_region`
    (pyogrio, or pyarrow for GeoParquet), reprojected from the file's CRS. Nothing is kept.

    Raises:
        UploadError: On an unknown suffix, an empty file, or a file the region parser refuses.
    """
    import tempfile
    from pathlib import Path

    suffix = Path(name).suffix.lower()
    if suffix in (".geojson", ".json"):
        return read_geojson(name, data)
    if suffix not in UPLOAD_REGION_SUFFIXES:
        raise UploadError(f"The file {name!r} is not a region file the dashboard reads; upload GeoJSON, "
                          "GeoPackage (.gpkg), FlatGeobuf (.fgb), GeoParquet (.parquet) or a zipped Shapefile (.zip).")
    if not data:
        raise UploadError(f"The file {name!r} is empty. Upload a file with a Polygon or MultiPolygon.")
    with tempfile.TemporaryDirectory(prefix="psm-upload-") as tmp:
        path = Path(tmp) / f"region{suffix}"
        path.write_bytes(data)
        try:
            return parse_region(str(path))
        except ValueError as e:
            raise UploadError(f"The region in {name!r}: {str(e).replace(str(path), name)}.") from e


def parse_bbox(text: str) -> BaseGeometry:
    """Parse "west, south, east, north" (degrees) into a box polygon (:func:`psm_db.geometry.parse_bbox`).

    Raises:
        UploadError: On anything that is not four numbers forming a non-empty lon/lat box.
    """
    try:
        return geometry.parse_bbox(text)
    except ValueError as e:
        raise UploadError(f"The box: {e}.") from e


def parse_region_text(text: str) -> BaseGeometry:
    """A typed region: a box W,S,E,N, or a WKT / EWKT polygon (``SRID=3857;POLYGON(...)``).

    Read by :func:`psm_db.geometry.parse_region`, so it means the same polygon here as on the
    command line.

    Raises:
        UploadError: Saying what is wrong with it.
    """
    try:
        return parse_region(text, files=False)
    except ValueError as e:
        raise UploadError(f"The region: {e}.") from e
