"""Streaming reader for datasets written by ``psm world build``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

SPLITS = ("train", "val", "test")


def read_world_meta(root: str | os.PathLike) -> dict:
    """The ``world.json`` of a world dataset; raises ValueError when the folder is not one."""
    path = Path(root) / "world.json"
    if not path.is_file():
        raise ValueError(
            f"{root} is not a world dataset (no world.json); build one with `psm world build --out {root}`"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def read_world_index(root: str | os.PathLike, split: str | None = None) -> Any:
    """The sample index (a pandas DataFrame), optionally one split, sorted by sample index."""
    import pyarrow.parquet as pq

    meta = read_world_meta(root)
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    df = pq.read_table(Path(root) / meta.get("index", "index.parquet")).to_pandas()
    if split is not None:
        df = df[df["split"] == split]
    return df.sort_values("index").reset_index(drop=True)


class WorldDataset(IterableDataset):
    """Stream a split of a world dataset shard by shard (one shard in memory at a time).

    Items are dicts with ``key``, ``image`` (uint8 HWC for a single ``zoom``, else
    ``[len(zooms), S, S, 3]``), ``zooms``, ``waveform`` (float32 in [-1, 1]), ``sample_rate``,
    ``caption``, ``lat``, ``lon``, ``month``, ``hour``, ``audio_source``, ``caption_source`` and
    ``classes`` (tuple of class names). Multi-worker DataLoaders split the shards between workers.

    Args:
        root: Dataset folder (holds world.json).
        split: ``train``, ``val`` or ``test``.
        zooms: Zoom levels to return (a subset of those stored), or one int for a single HWC image.
        shuffle: Shuffle shard order and rows within each shard, with ``seed`` and the epoch.
        seed: Base seed for shuffling.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        zooms: tuple[int, ...] | int = (1, 3, 5),
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.meta = read_world_meta(root)
        self.index = read_world_index(root, split)
        self.split = split
        stored = tuple(int(z) for z in self.meta["build"]["zooms"])
        self.single = isinstance(zooms, int | np.integer)
        want = (int(zooms),) if self.single else tuple(int(z) for z in zooms)  # type: ignore[union-attr]
        missing = [z for z in want if z not in stored]
        if missing:
            raise ValueError(f"zoom(s) {missing} not stored in {root}; it holds zooms {stored}")
        self.zooms = want
        self._slots = [stored.index(z) for z in want]
        self.sample_rate = int(self.meta["build"]["sample_rate"])
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.shards = sorted(self.index["shard"].unique().tolist())

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle order for the next pass."""
        self.epoch = int(epoch)

    def _item(self, row: Any, images: np.ndarray, audio: np.ndarray, r: int) -> dict:
        img = images[r][self._slots]
        return {
            "key": row["key"],
            "image": img[0] if self.single else img,
            "zooms": self.zooms,
            "waveform": audio[r].astype(np.float32) / np.float32(32767.0),
            "sample_rate": self.sample_rate,
            "caption": row["caption"],
            "lat": float(row["lat"]),
            "lon": float(row["lon"]),
            "month": int(row["month"]),
            "hour": int(row["hour"]),
            "audio_source": row["audio_source"],
            "caption_source": row["caption_source"],
            "classes": tuple(row["classes"]),
        }

    def __iter__(self) -> Iterator[dict]:
        shards = list(self.shards)
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            rng.shuffle(shards)
        info = get_worker_info()
        if info is not None:
            shards = shards[info.id :: info.num_workers]
        groups = dict(tuple(self.index.groupby("shard", sort=False)))
        for shard in shards:
            rows = groups[shard]
            with np.load(self.root / shard) as z:
                images, audio = z["images"], z["audio"]
            order = rng.permutation(len(rows)) if self.shuffle else np.arange(len(rows))
            for k in order:
                row = rows.iloc[int(k)]
                yield self._item(row, images, audio, int(row["row"]))
