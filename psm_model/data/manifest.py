"""Manifest reader for real datasets on disk (GeoSound, SoundingEarth or your own), skipping bad rows."""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from psm_model.audio_io import load_audio, resample
from psm_model.metadata import AUDIO_SOURCES, CAPTION_SOURCES

logger = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = (
    "key",
    "lat",
    "lon",
    "audio_path",
    "image_path",
    "caption",
    "caption_source",
    "audio_source",
    "time_taken",
)
"""Canonical manifest columns (see docs/data.md). ``month``, ``hour`` and ``split`` are optional."""

ALIASES: dict[str, str] = {
    "id": "key",
    "sample_id": "key",
    "latitude": "lat",
    "longitude": "lon",
    "long": "lon",
    "lng": "lon",
    "audio": "audio_path",
    "audio_file": "audio_path",
    "mp3": "audio_path",
    "image": "image_path",
    "image_file": "image_path",
    "text": "caption",
    "description": "caption",
    "source": "audio_source",
    "date_taken": "time_taken",
    "datetime": "time_taken",
    "timestamp": "time_taken",
}
"""Other column names accepted for the canonical ones (case-insensitive)."""

_SOURCE_ALIASES = {
    "inat": "inaturalist",
    "yfccvideo": "yfcc",
    "yfcc100m": "yfcc",
    "radio_aporee": "aporee",
    "metadata_text": "metadata",
}


@dataclass
class SkipReport:
    """Counts of rows skipped and why; ``summary()`` gives one readable line."""

    total: int = 0
    loaded: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[tuple[str, str, str]] = field(default_factory=list)
    """Up to ``max_examples`` (key, reason, detail) triples."""
    max_examples: int = 10

    def skip(self, key: str, reason: str, detail: str = "") -> None:
        """Count one skipped row."""
        self.skipped[reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append((str(key), reason, detail))
        logger.warning("skipping manifest row %s: %s %s", key, reason, detail)

    @property
    def n_skipped(self) -> int:
        """Rows skipped so far."""
        return int(sum(self.skipped.values()))

    def summary(self) -> str:
        """E.g. ``"manifest: 98 of 100 rows usable; skipped 2 (missing_audio 1, corrupt_image 1)"``."""
        if not self.skipped:
            return (
                f"manifest: {self.total - self.n_skipped} of {self.total} rows usable; none skipped"
            )
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()))
        return f"manifest: {self.total - self.n_skipped} of {self.total} rows usable; skipped {self.n_skipped} ({parts})"


def read_manifest(path: str | os.PathLike) -> Any:
    """Read a CSV or Parquet manifest into a DataFrame with canonical column names.

    Raises:
        ValueError: When the file is missing, of an unknown type, or lacks lat/lon or audio_path.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"manifest {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif suffix in (".csv", ".tsv", ".txt"):
            df = pd.read_csv(
                path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False
            )
        else:
            raise ValueError(f"manifest {path} must be .csv, .tsv or .parquet, got {suffix!r}")
    except (OSError, pd.errors.ParserError) as e:
        raise ValueError(f"could not read manifest {path}: {e}") from e
    rename = {}
    for c in df.columns:
        low = str(c).strip().lower()
        rename[c] = ALIASES.get(low, low)
    df = df.rename(columns=rename)
    for need in ("lat", "lon", "audio_path"):
        if need not in df.columns:
            raise ValueError(
                f"manifest {path} has no {need!r} column (columns: {', '.join(map(str, df.columns))}); see docs/data.md"
            )
    if "key" not in df.columns:
        df["key"] = [f"row{i}" for i in range(len(df))]
    return df.reset_index(drop=True)


def _blank(v: Any) -> bool:
    return (
        v is None
        or (isinstance(v, float) and math.isnan(v))
        or (isinstance(v, str) and v.strip() == "")
    )


def _source(v: Any, names: tuple[str, ...], what: str) -> str | None:
    if _blank(v):
        return None
    key = str(v).strip().lower()
    key = _SOURCE_ALIASES.get(key, key)
    if key not in names:
        raise ValueError(f"unknown {what} {v!r}")
    return key


def _time_fields(row: Any) -> tuple[int | None, int | None]:
    """Month and hour from explicit columns, else from ``time_taken``; None where unknown."""
    import pandas as pd

    month = row.get("month")
    hour = row.get("hour")
    month = None if _blank(month) else int(float(month))
    hour = None if _blank(hour) else int(float(hour))
    t = row.get("time_taken")
    if (month is None or hour is None) and not _blank(t):
        ts = pd.to_datetime(str(t), errors="coerce")
        if ts is not pd.NaT and not pd.isna(ts):
            month = ts.month if month is None else month
            s = str(t)
            has_clock = ":" in s or "T" in s
            hour = ts.hour if hour is None and has_clock else hour
    if month is not None and not 1 <= month <= 12:
        raise ValueError(f"month {month} out of 1..12")
    if hour is not None and not 0 <= hour <= 23:
        raise ValueError(f"hour {hour} out of 0..23")
    return month, hour


def crop_zoom(img: np.ndarray, zoom: int, zoom_max: int, size: int | None) -> np.ndarray:
    """Zoom level ``zoom`` of a large tile: centre-crop zoom/zoom_max of it and resize to the tile size."""
    from PIL import Image

    h, w = img.shape[:2]
    tile = min(h, w) // zoom_max
    if tile < 1:
        raise ValueError(f"image of {w}x{h} px is too small for zoom_max {zoom_max}")
    n = tile * zoom
    top, left = (h - n) // 2, (w - n) // 2
    crop = img[top : top + n, left : left + n]
    out = size or tile
    if crop.shape[0] != out:
        crop = np.asarray(Image.fromarray(crop).resize((out, out), Image.Resampling.BILINEAR))
    return crop


class ManifestDataset(IterableDataset):
    """Stream samples of a manifest of real files, skipping and counting bad rows.

    Rows with bad coordinates or metadata, or whose files are missing, are dropped up front;
    files that turn out unreadable are skipped while iterating. Neither stops an epoch.
    ``report`` counts both (per process) and ``report.summary()`` says what was skipped.

    Items have the same layout as :class:`~psm_model.data.world_dataset.WorldDataset`:
    ``key``, ``image``, ``zooms``, ``waveform`` (float32 mono at ``sample_rate``), ``sample_rate``,
    ``caption``, ``lat``, ``lon``, ``month`` and ``hour`` (None when unknown), ``audio_source``,
    ``caption_source`` (None when unknown) and ``classes`` (always empty: real data has none).

    Args:
        manifest: Path of a CSV/Parquet manifest, or a DataFrame from :func:`read_manifest`.
        root: Folder that relative paths are resolved against (default: the manifest's folder).
        split: Keep only rows whose ``split`` column equals this.
        zooms: Zoom levels cut from each image (a large tile of zoom_max x tile pixels), or one int.
        zoom_max: How many tiles wide each stored image is (GeoSound-style tiles: 5; a plain tile: 1).
        image_size: Resize tiles to this many pixels (default: keep the tile size).
        image_column: Column holding the image path (e.g. ``image_path_sentinel``).
        sample_rate: Output sample rate; audio is resampled with soxr.
        clip_seconds: Crop (centre) or zero-pad clips to this length; None keeps the full clip.
        check_files: Check up front that audio and image files exist.
    """

    def __init__(
        self,
        manifest: str | os.PathLike | Any,
        root: str | os.PathLike | None = None,
        split: str | None = None,
        zooms: tuple[int, ...] | int = 1,
        zoom_max: int = 1,
        image_size: int | None = None,
        image_column: str = "image_path",
        sample_rate: int = 16_000,
        clip_seconds: float | None = None,
        check_files: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(manifest, str | os.PathLike):
            self.root = Path(root) if root is not None else Path(manifest).parent
            df = read_manifest(manifest)
        else:
            self.root = Path(root) if root is not None else Path(".")
            df = manifest
        self.single = isinstance(zooms, int | np.integer)
        self.zooms = (int(zooms),) if self.single else tuple(int(z) for z in zooms)  # type: ignore[union-attr]
        if any(not 1 <= z <= zoom_max for z in self.zooms):
            raise ValueError(f"zooms {self.zooms} must lie in 1..zoom_max={zoom_max}")
        self.zoom_max = int(zoom_max)
        self.image_size = image_size
        self.image_column = image_column
        self.sample_rate = int(sample_rate)
        self.clip_seconds = clip_seconds
        if split is not None:
            if "split" not in df.columns:
                raise ValueError(
                    f"split={split!r} asked for, but the manifest has no 'split' column"
                )
            df = df[df["split"].astype(str) == split]
        self.report = SkipReport(total=len(df))
        self.rows = self._validate(df, check_files)
        logger.info("%s", self.report.summary())

    def _path(self, v: Any) -> Path | None:
        if _blank(v):
            return None
        p = Path(str(v))
        return p if p.is_absolute() else self.root / p

    def _validate(self, df: Any, check_files: bool) -> list[dict]:
        rows = []
        for rec in df.to_dict("records"):
            key = str(rec.get("key"))
            try:
                lat, lon = float(rec["lat"]), float(rec["lon"])
                if not (
                    math.isfinite(lat)
                    and math.isfinite(lon)
                    and -90 <= lat <= 90
                    and -180 <= lon <= 180
                ):
                    raise ValueError(f"lat/lon out of range: {rec['lat']}, {rec['lon']}")
            except (TypeError, ValueError) as e:
                self.report.skip(key, "bad_latlon", str(e))
                continue
            try:
                month, hour = _time_fields(rec)
                audio_source = _source(rec.get("audio_source"), AUDIO_SOURCES, "audio source")
                caption_source = _source(
                    rec.get("caption_source"), CAPTION_SOURCES, "caption source"
                )
            except (TypeError, ValueError) as e:
                self.report.skip(key, "bad_metadata", str(e))
                continue
            audio = self._path(rec.get("audio_path"))
            image = self._path(rec.get(self.image_column))
            if audio is None or (check_files and not audio.is_file()):
                self.report.skip(key, "missing_audio", str(audio))
                continue
            if image is None or (check_files and not image.is_file()):
                self.report.skip(key, "missing_image", str(image))
                continue
            caption = "" if _blank(rec.get("caption")) else str(rec.get("caption"))
            rows.append(
                {
                    "key": key,
                    "lat": lat,
                    "lon": lon,
                    "month": month,
                    "hour": hour,
                    "audio_source": audio_source,
                    "caption_source": caption_source,
                    "caption": caption,
                    "audio": audio,
                    "image": image,
                }
            )
        return rows

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, i: int) -> dict:
        """Load row ``i`` (of the usable rows); raises ValueError when its files are corrupt."""
        from PIL import Image, UnidentifiedImageError

        r = self.rows[i]
        try:
            wave, sr = load_audio(r["audio"])
            wave = resample(wave, sr, self.sample_rate)
        except ValueError as e:
            raise ValueError(f"corrupt_audio: {e}") from e
        if self.clip_seconds is not None:
            n = int(round(self.clip_seconds * self.sample_rate))
            if wave.shape[0] >= n:
                a = (wave.shape[0] - n) // 2
                wave = wave[a : a + n]
            else:
                wave = np.pad(wave, (0, n - wave.shape[0]))
        try:
            with Image.open(r["image"]) as im:
                img = np.asarray(im.convert("RGB"))
            tiles = np.stack(
                [crop_zoom(img, z, self.zoom_max, self.image_size) for z in self.zooms]
            )
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            raise ValueError(f"corrupt_image: could not read image {r['image']}: {e}") from e
        return {
            "key": r["key"],
            "image": tiles[0] if self.single else tiles,
            "zooms": self.zooms,
            "waveform": np.ascontiguousarray(wave, dtype=np.float32),
            "sample_rate": self.sample_rate,
            "caption": r["caption"],
            "lat": r["lat"],
            "lon": r["lon"],
            "month": r["month"],
            "hour": r["hour"],
            "audio_source": r["audio_source"],
            "caption_source": r["caption_source"],
            "classes": (),
        }

    def __iter__(self) -> Iterator[dict]:
        idx = range(len(self.rows))
        info = get_worker_info()
        if info is not None:
            idx = idx[info.id :: info.num_workers]
        for i in idx:
            try:
                item = self.load(i)
            except ValueError as e:
                reason = str(e).split(":", 1)[0]
                self.report.skip(self.rows[i]["key"], reason, str(e))
                continue
            self.report.loaded += 1
            yield item
