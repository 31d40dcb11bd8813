"""Metadata vocabularies and validation shared by the model, the world and the database."""

from __future__ import annotations

import math

AUDIO_SOURCES: tuple[str, ...] = ("yfcc", "inaturalist", "aporee", "freesound")
"""Audio sources, in embedding-table order (facts page: 4 entries)."""

CAPTION_SOURCES: tuple[str, ...] = ("metadata", "captioner_a", "captioner_b")
"""Caption sources, in embedding-table order: metadata text and two captioning models."""

METADATA_TYPES: tuple[str, ...] = ("audio_source", "caption_source", "latlon", "month", "hour")
"""Metadata token order after [special, image] in the fusion sequence."""


def check_month(month: int | None) -> int | None:
    """Return ``month`` if it is None or in 1..12, else raise ValueError."""
    if month is None:
        return None
    if isinstance(month, bool) or int(month) != month or not 1 <= int(month) <= 12:
        raise ValueError(f"month must be an integer in 1..12 (or None to leave it out), got {month!r}")
    return int(month)


def check_hour(hour: int | None) -> int | None:
    """Return ``hour`` if it is None or in 0..23, else raise ValueError."""
    if hour is None:
        return None
    if isinstance(hour, bool) or int(hour) != hour or not 0 <= int(hour) <= 23:
        raise ValueError(f"hour must be an integer in 0..23 (or None to leave it out), got {hour!r}")
    return int(hour)


def _check_name(value: str | None, names: tuple[str, ...], what: str) -> int | None:
    if value is None:
        return None
    key = str(value).strip().lower()
    if key not in names:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(names)} (or None to leave it out)")
    return names.index(key)


def audio_source_index(name: str | None) -> int | None:
    """Index of an audio source name, or None; raises ValueError for unknown names."""
    return _check_name(name, AUDIO_SOURCES, "audio source")


def caption_source_index(name: str | None) -> int | None:
    """Index of a caption source name, or None; raises ValueError for unknown names."""
    return _check_name(name, CAPTION_SOURCES, "caption source")


def check_latlon(lat: float, lon: float) -> tuple[float, float]:
    """Validate a latitude/longitude pair in degrees."""
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise ValueError(f"lat/lon must be finite numbers, got ({lat!r}, {lon!r})")
    if not -90.0 <= lat <= 90.0 or not -180.0 <= lon <= 180.0:
        raise ValueError(f"lat must be in [-90, 90] and lon in [-180, 180], got ({lat}, {lon})")
    return float(lat), float(lon)
