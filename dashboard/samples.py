"""Tiles, clips and captions drawn from the synthetic world (psm_model.world) for display."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import soundfile as sf
import streamlit as st
from matplotlib.figure import Figure

CLIP_RATE = 16_000
CLIP_SECONDS = 5.0
DEFAULT_TRAIN_SAMPLES = 4_000


def world_seed(model: dict[str, Any] | None) -> int:
    """The seed of the world a model was trained on (recorded in its config), default 0."""
    cfg = (model or {}).get("config") or {}
    for key in ("world_seed", "seed"):
        if isinstance(cfg.get(key), int):
            return int(cfg[key])
    data = cfg.get("data") or cfg.get("dataset") or {}
    if isinstance(data, dict) and isinstance(data.get("seed"), int):
        return int(data["seed"])
    return 0


@st.cache_data(ttl=300, show_spinner=False)
def model_dataset_dir(checkpoint_path: str) -> str | None:
    """The dataset folder a checkpoint was trained on (its ``extra["dataset"]``), if it still exists."""
    from pathlib import Path

    from psm_model import read_checkpoint_info

    try:
        extra = read_checkpoint_info(checkpoint_path).get("extra") or {}
    except ValueError:
        return None
    root = extra.get("dataset")
    return str(root) if isinstance(root, str) and (Path(root) / "world.json").is_file() else None


def nearest_dataset_samples(root: str, lat: float, lon: float, k: int = 3, split: str = "train") -> list[tuple[int, float]]:
    """(position in the split, great-circle km) of the k stored samples of a split nearest to a place."""
    _, index = dataset_index(root)
    rows = index[index["split"] == split].reset_index(drop=True)
    la1, lo1 = np.radians(lat), np.radians(lon)
    la2, lo2 = np.radians(rows["lat"].to_numpy()), np.radians(rows["lon"].to_numpy())
    a = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) / 2) ** 2
    km = 2 * 6371.0088 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))
    idx = np.argsort(km)[:k]
    return [(int(i), float(km[i])) for i in idx]


@st.cache_resource(show_spinner="Building the synthetic world…")
def world(seed: int) -> Any:
    """The seeded World (land cover, imagery, soundscape law)."""
    from psm_model.world.world import World

    return World(seed)


@st.cache_data(max_entries=256, show_spinner=False)
def tile_images(seed: int, lat: float, lon: float, zooms: tuple[int, ...] = (1, 3, 5), size: int = 128,
                gsd: float = 10.0) -> np.ndarray:
    """RGB tiles uint8 [len(zooms), size, size, 3] of one place at several zooms."""
    return world(seed).render_zooms(float(lat), float(lon), tuple(zooms), size=size, gsd=gsd)


@st.cache_data(show_spinner=False)
def example_clip(name: str, seed: int = 0) -> bytes:
    """A 5 s WAV of one sound class (the "example clip" queries)."""
    from psm_model.world.sounds import mix_clip

    wave = mix_clip((name,), np.random.default_rng([seed, len(name)]), CLIP_RATE, CLIP_SECONDS)
    return wav_bytes(wave, CLIP_RATE)


def example_queries() -> dict[str, str]:
    """Sound class -> the text query the paper would type for it."""
    from psm_model.world.sounds import CLASS_QUERIES

    return dict(CLASS_QUERIES)


def wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
    """A mono float waveform as 16-bit WAV bytes."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wave, dtype=np.float32), -1, 1), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@st.cache_resource(show_spinner="Drawing the training samples…")
def training_plan(seed: int, n: int = DEFAULT_TRAIN_SAMPLES) -> dict[str, np.ndarray]:
    """Places and metadata of the world's first n samples (the training clips' plan)."""
    return world(seed).draw_plan(n)


def realise_sample(seed: int, index: int, n: int = DEFAULT_TRAIN_SAMPLES) -> dict[str, Any]:
    """One sample of the plan: its place, metadata, sound classes, caption and clip (WAV bytes)."""
    from psm_model.metadata import AUDIO_SOURCES, CAPTION_SOURCES
    from psm_model.world.sounds import SOUND_CLASSES

    w, plan = world(seed), training_plan(seed, n)
    lat, lon = float(plan["lat"][index]), float(plan["lon"][index])
    month, hour = int(plan["month"][index]), int(plan["hour"][index])
    src, cap_src = int(plan["source"][index]), int(plan["caption_source"][index])
    fr = w.landcover_fractions(lat, lon)
    probs = w.class_probs(lat, lon, month, hour, AUDIO_SOURCES[src])
    classes, caption, wave = w.realise(index, lat, probs, fr, month, hour, src, cap_src, CLIP_RATE, CLIP_SECONDS)
    return {
        "index": int(index), "lat": lat, "lon": lon, "month": month, "hour": hour,
        "audio_source": AUDIO_SOURCES[src], "caption_source": CAPTION_SOURCES[cap_src],
        "classes": [SOUND_CLASSES[c] for c in classes], "caption": caption,
        "wave": wave, "wav": wav_bytes(wave, CLIP_RATE),
    }


def nearest_samples(seed: int, lat: float, lon: float, k: int = 3, n: int = DEFAULT_TRAIN_SAMPLES) -> list[tuple[int, float]]:
    """(index, great-circle km) of the k training samples nearest to a place."""
    plan = training_plan(seed, n)
    la1, lo1 = np.radians(lat), np.radians(lon)
    la2, lo2 = np.radians(plan["lat"]), np.radians(plan["lon"])
    a = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) / 2) ** 2
    km = 2 * 6371.0088 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))
    idx = np.argsort(km)[:k]
    return [(int(i), float(km[i])) for i in idx]


def spectrogram_png(wave: np.ndarray, sample_rate: int) -> bytes:
    """A log-magnitude spectrogram of a clip as PNG bytes."""
    fig = Figure(figsize=(6, 2.2), dpi=90)
    ax = fig.add_subplot(1, 1, 1)
    ax.specgram(np.asarray(wave, dtype=np.float64), NFFT=512, Fs=sample_rate, noverlap=256, cmap="magma")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("Hz")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@st.cache_data(ttl=300, show_spinner=False)
def dataset_index(root: str) -> tuple[dict[str, Any], Any]:
    """(world.json, the sample index DataFrame) of a dataset folder written by ``psm world build``.

    Raises:
        ValueError: When the folder is not a world dataset.
    """
    from psm_model.data import read_world_index, read_world_meta

    return read_world_meta(root), read_world_index(root)


def dataset_sample(root: str, split: str, position: int) -> dict[str, Any]:
    """One stored sample of a split: tiles at the stored zooms, the clip, caption and metadata."""
    from pathlib import Path

    meta, index = dataset_index(root)
    rows = index[index["split"] == split].reset_index(drop=True)
    row = rows.iloc[int(position)]
    with np.load(Path(root) / row["shard"]) as z:
        images = z["images"][int(row["row"])]
        wave = z["audio"][int(row["row"])].astype(np.float32) / np.float32(32767.0)
    rate = int(meta["build"]["sample_rate"])
    return {
        "index": int(row["index"]), "lat": float(row["lat"]), "lon": float(row["lon"]),
        "month": int(row["month"]), "hour": int(row["hour"]), "audio_source": row["audio_source"],
        "caption_source": row["caption_source"], "classes": list(row["classes"]), "caption": row["caption"],
        "images": images, "zooms": tuple(int(z) for z in meta["build"]["zooms"]), "wave": wave,
        "sample_rate": rate, "wav": wav_bytes(wave, rate),
    }
