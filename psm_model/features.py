"""Model inputs of a world dataset split held in memory: tiles, cached CLAP mels and text features.

The audio front end (CLAP fusion mels) and a frozen text backbone dominate the cost of an epoch on
CPU, yet their outputs depend only on the clip / caption and the model's front-end config. They are
computed once per dataset and cached beside it (``<dataset>/cache/<key>/<split>/``), keyed by a hash
of that config; the key changes whenever the features would.

The dataset layout is the one ``psm world build`` writes: ``world.json``, ``index.parquet`` and
``shards/<split>-NNNNN.npz`` holding ``index``, ``images`` (N, zooms, S, S, 3) uint8 and ``audio``
(N, T) int16.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psm_model.audio_text import AudioInputs
from psm_model.files import atomic_write
from psm_model.fusion import MetadataBatch
from psm_model.metadata import AUDIO_SOURCES, CAPTION_SOURCES, METADATA_TYPES
from psm_model.model import PSMModel

logger = logging.getLogger(__name__)

CACHE_DIR = "cache"
_FORMAT = 1


@dataclass
class SplitData:
    """One split of a world dataset with everything the model needs, row-aligned.

    Attributes:
        name: Split name (train / val / test).
        keys: (N,) sample keys.
        lat: (N,) degrees.
        lon: (N,) degrees.
        month: (N,) 1..12.
        hour: (N,) 0..23.
        audio_source: (N,) index into AUDIO_SOURCES.
        caption_source: (N,) index into CAPTION_SOURCES.
        captions: N caption strings.
        classes: N tuples of sound class names.
        images: (N, Z, S, S, 3) uint8 tiles, one per zoom in ``zooms``.
        zooms: Zoom level of each tile slot.
        gsd: Metres per pixel at zoom 1.
        mel: (N, C, T, M) float16 CLAP mels; C is 1 when every channel of every clip is the same.
        is_longer: (N,) bool, CLAP's flag for clips longer than the model clip.
        fusion_channels: Channels the audio tower expects (4 with fusion, else 1).
        text_features: (N, H) float32 pooled frozen-backbone text features, or None.
        fractions: (N, L) land-cover fractions of each place's hearing footprint (for the oracle).
        caption_named: Per sample, what its caption names besides the sounds (``landcover``,
            ``month``, ``time_of_day``, ``audio_source``; for the oracle with text), or None for
            an index without that column (older worlds).
    """

    name: str
    keys: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    month: np.ndarray
    hour: np.ndarray
    audio_source: np.ndarray
    caption_source: np.ndarray
    captions: list[str]
    classes: list[tuple[str, ...]]
    images: np.ndarray
    zooms: tuple[int, ...]
    gsd: float
    mel: np.ndarray
    is_longer: np.ndarray
    fusion_channels: int
    text_features: np.ndarray | None
    fractions: np.ndarray | None = None
    caption_named: list[tuple[str, ...]] | None = None

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def zoom_slot(self, zoom: int) -> int:
        """Index of ``zoom`` in the stored tiles."""
        if zoom not in self.zooms:
            raise ValueError(f"zoom {zoom} is not in this dataset; it has zooms {self.zooms}")
        return self.zooms.index(zoom)

    def tiles(self, index: np.ndarray, slots: np.ndarray | int) -> torch.Tensor:
        """Float (B, 3, S, S) tiles in [0, 1] for rows ``index`` at tile slot(s) ``slots``."""
        arr = self.images[index, slots]
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)

    def audio(self, index: np.ndarray) -> AudioInputs:
        """Cached mel features of rows ``index``."""
        mel = torch.from_numpy(self.mel[index].astype(np.float32))
        if mel.shape[1] != self.fusion_channels:
            mel = mel.expand(-1, self.fusion_channels, -1, -1).contiguous()
        return AudioInputs(mel, torch.from_numpy(self.is_longer[index]).view(-1, 1))

    def metadata(self, index: np.ndarray, keep: tuple[str, ...] | None = METADATA_TYPES) -> MetadataBatch:
        """Metadata of rows ``index`` with only the types in ``keep`` present (None or () masks all)."""
        n = len(index)
        present = torch.zeros(n, len(METADATA_TYPES), dtype=torch.bool)
        for t in keep or ():
            if t not in METADATA_TYPES:
                raise ValueError(f"unknown metadata type {t!r}; expected one of {', '.join(METADATA_TYPES)}")
            present[:, METADATA_TYPES.index(t)] = True
        return MetadataBatch(
            lat=torch.from_numpy(self.lat[index].astype(np.float32)),
            lon=torch.from_numpy(self.lon[index].astype(np.float32)),
            month=torch.from_numpy(self.month[index].astype(np.int64)),
            hour=torch.from_numpy(self.hour[index].astype(np.int64)),
            audio_source=torch.from_numpy(self.audio_source[index].astype(np.int64)),
            caption_source=torch.from_numpy(self.caption_source[index].astype(np.int64)),
            present=present,
        )


def feature_key(model: PSMModel) -> str:
    """Hash of everything the cached features depend on (audio front end, frozen text backbone)."""
    fe = model.audio_tower.feature_extractor
    parts: dict[str, Any] = {
        "format": _FORMAT,
        "audio": {
            "sr": int(fe.sampling_rate),
            "hop": int(fe.hop_length),
            "fft": int(fe.fft_window_size),
            "mels": int(fe.feature_size),
            "fmax": float(fe.frequency_max),
            "fmin": float(getattr(fe, "frequency_min", 0.0)),
            "max_s": float(fe.max_length_s),
            "trunc": str(fe.truncation),
            "pad": str(fe.padding),
        },
    }
    tx = model.config.text
    if tx.freeze_backbone:
        parts["text"] = {"backbone": tx.backbone, "hf": tx.hf_config, "tok": model.tokenizer.to_json()}
        if tx.backbone == "clap":
            state = model.text_tower.clap.text_model.state_dict()
        else:
            state = model.text_tower.encoder.state_dict()
        h = hashlib.sha256()
        for k in sorted(state):
            h.update(k.encode())
            h.update(state[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        parts["text_weights"] = h.hexdigest()
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _read_index(dataset_dir: Path, split: str) -> Any:
    import pyarrow.parquet as pq

    meta_path = dataset_dir / "world.json"
    if not meta_path.is_file():
        raise ValueError(f"{dataset_dir} is not a world dataset (no world.json); build one with `psm world build`")
    meta = json.loads(meta_path.read_text())
    table = pq.read_table(dataset_dir / meta.get("index", "index.parquet")).to_pandas()
    rows = table[table["split"] == split].sort_values("index").reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"split {split!r} of {dataset_dir} is empty (counts: {meta.get('counts')})")
    return meta, rows


def _iter_shards(dataset_dir: Path, rows: Any) -> Any:
    """Yield (positions in rows, shard images, shard audio) per shard, one shard in memory at a time."""
    for shard, group in rows.groupby("shard", sort=True):
        with np.load(dataset_dir / shard) as z:
            r = group["row"].to_numpy()
            yield group.index.to_numpy(), z["images"][r], z["audio"][r]


def _save(path: Path, arr: np.ndarray) -> None:
    with atomic_write(path, suffix=".npy") as tmp:
        np.save(tmp, arr)


def load_split(
    dataset_dir: str | os.PathLike,
    split: str,
    model: PSMModel,
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 256,
    progress: Callable[[str, int, int], None] | None = None,
) -> SplitData:
    """Load a split with the model's cached audio (and frozen text) features, computing them once.

    Args:
        dataset_dir: A world dataset folder.
        split: ``train``, ``val`` or ``test``.
        model: The model whose front ends define the features.
        cache_dir: Where to cache; default ``<dataset_dir>/cache`` (falls back to no caching when
            that is not writable).
        batch_size: Clips / captions per feature batch.
        progress: Optional ``callback(stage, done, total)``.

    Returns:
        The split.

    Raises:
        ValueError: If the folder is not a world dataset or the split is empty.
    """
    root = Path(dataset_dir)
    meta, rows = _read_index(root, split)
    build = meta.get("build", {})
    zooms = tuple(int(z) for z in build.get("zooms", (1, 3, 5)))
    sample_rate = int(build.get("sample_rate", 16_000))
    key = feature_key(model)
    cdir = Path(cache_dir) if cache_dir is not None else root / CACHE_DIR
    cdir = cdir / key / split
    mel_path, longer_path, text_path = cdir / "mel.npy", cdir / "is_longer.npy", cdir / "text.npy"
    frozen = model.config.text.freeze_backbone
    need_audio = not (mel_path.is_file() and longer_path.is_file())
    need_text = frozen and not text_path.is_file()
    n = len(rows)
    images: np.ndarray | None = None
    mel_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    done = 0
    for pos, shard_images, shard_audio in _iter_shards(root, rows):
        if images is None:
            images = np.empty((n, *shard_images.shape[1:]), dtype=shard_images.dtype)
        images[pos] = shard_images
        if need_audio:
            for a in range(0, len(pos), batch_size):
                wav = shard_audio[a : a + batch_size].astype(np.float32) / 32767.0
                with torch.no_grad():
                    ai = model.audio_inputs(list(wav), sample_rate, seed=0)
                mel_parts.append(
                    (pos[a : a + batch_size], ai.input_features.numpy().astype(np.float16), ai.is_longer.numpy().reshape(-1))
                )
                done += len(wav)
                if progress:
                    progress("audio features", done, n)
    assert images is not None
    if need_audio:
        c, t, m = mel_parts[0][1].shape[1:]
        mel = np.empty((n, c, t, m), dtype=np.float16)
        is_longer = np.zeros(n, dtype=bool)
        for pos, x, lg in mel_parts:
            mel[pos] = x
            is_longer[pos] = lg
        del mel_parts
        if c > 1 and not is_longer.any() and all(np.array_equal(mel[:, 0], mel[:, k]) for k in range(1, c)):
            mel = np.ascontiguousarray(mel[:, :1])
    text = None
    if need_text:
        feats = []
        captions = rows["caption"].tolist()
        model_was_training = model.training
        model.eval()
        for a in range(0, n, batch_size):
            with torch.no_grad():
                tok = model.tokenize(captions[a : a + batch_size])
                feats.append(model.text_tower.backbone_features(tok).float().cpu().numpy())
            if progress:
                progress("text features", min(a + batch_size, n), n)
        model.train(model_was_training)
        text = np.concatenate(feats).astype(np.float32)
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        if need_audio:
            _save(mel_path, mel)
            _save(longer_path, is_longer)
        if need_text:
            _save(text_path, text)
    except OSError as e:  # read-only dataset: keep the features in memory only
        logger.warning("could not cache features under %s: %s", cdir, e)
    if not need_audio:
        mel = np.load(mel_path, mmap_mode="r")
        is_longer = np.load(longer_path)
    if frozen and text is None:
        text = np.load(text_path)
    return SplitData(
        **_index_fields(split, rows),
        images=images,
        zooms=zooms,
        gsd=float(build.get("gsd", model.config.image.default_gsd)),
        mel=np.asarray(mel),
        is_longer=np.asarray(is_longer, dtype=bool),
        fusion_channels=4 if model.config.audio.enable_fusion else 1,
        text_features=text,
    )


def _index_fields(split: str, rows: Any) -> dict[str, Any]:
    """The SplitData fields read from the index rows of a split."""
    return {
        "name": split,
        "keys": rows["key"].to_numpy(),
        "lat": rows["lat"].to_numpy(np.float64),
        "lon": rows["lon"].to_numpy(np.float64),
        "month": rows["month"].to_numpy(np.int64),
        "hour": rows["hour"].to_numpy(np.int64),
        "audio_source": np.array([AUDIO_SOURCES.index(s) for s in rows["audio_source"]], dtype=np.int64),
        "caption_source": np.array([CAPTION_SOURCES.index(s) for s in rows["caption_source"]], dtype=np.int64),
        "captions": rows["caption"].tolist(),
        "classes": [tuple(c) for c in rows["classes"]],
        "fractions": np.stack(rows["fractions"].to_numpy()).astype(np.float64) if "fractions" in rows else None,
        "caption_named": [tuple(c) for c in rows["caption_named"]] if "caption_named" in rows else None,
    }


def load_split_index(dataset_dir: str | os.PathLike, split: str) -> SplitData:
    """A split's index fields only, without tiles or audio: enough for the oracle, not for a model.

    ``images`` and ``mel`` are empty arrays with N rows, so ``evaluate(None, data)`` scores the
    oracle without reading a shard.

    Raises:
        ValueError: If the folder is not a world dataset or the split is empty.
    """
    meta, rows = _read_index(Path(dataset_dir), split)
    build = meta.get("build", {})
    n = len(rows)
    return SplitData(
        **_index_fields(split, rows),
        images=np.empty((n, 0, 0, 0, 3), dtype=np.uint8),
        zooms=tuple(int(z) for z in build.get("zooms", (1, 3, 5))),
        gsd=float(build.get("gsd", "nan")),
        mel=np.empty((n, 1, 0, 0), dtype=np.float16),
        is_longer=np.zeros(n, dtype=bool),
        fusion_channels=1,
        text_features=None,
    )
