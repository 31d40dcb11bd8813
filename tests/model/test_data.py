"""Tests of the dataset readers: the world's shards and manifests of real files (good and corrupt rows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from psm_model.data import ManifestDataset, WorldDataset, crop_zoom, read_manifest
from psm_model.world import BuildConfig, build_world


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wd") / "w"
    build_world(
        out,
        BuildConfig(
            seed=5,
            samples=60,
            image_size=12,
            sample_rate=8000,
            clip_seconds=0.5,
            shard_size=20,
            workers=1,
        ),
    )
    return out


def test_world_dataset_streams_items(world_dir):
    idx = pd.read_parquet(world_dir / "index.parquet")
    for split in ("train", "val", "test"):
        n = int((idx["split"] == split).sum())
        if n == 0:
            continue
        ds = WorldDataset(world_dir, split)
        items = list(ds)
        assert len(items) == len(ds) == n
        it = items[0]
        assert it["image"].shape == (3, 12, 12, 3) and it["image"].dtype == np.uint8
        assert it["waveform"].dtype == np.float32 and it["waveform"].shape == (4000,)
        assert np.abs(it["waveform"]).max() <= 1.0
        assert it["sample_rate"] == 8000 and it["zooms"] == (1, 3, 5)
        assert 1 <= it["month"] <= 12 and 0 <= it["hour"] <= 23
        assert isinstance(it["classes"], tuple) and 1 <= len(it["classes"]) <= 3
        row = idx[idx["key"] == it["key"]].iloc[0]
        assert it["caption"] == row["caption"] and it["lat"] == row["lat"]


def test_world_dataset_zoom_choice_and_shuffle(world_dir):
    one = next(iter(WorldDataset(world_dir, "train", zooms=3)))
    assert one["image"].shape == (12, 12, 3) and one["zooms"] == (3,)
    a = [x["key"] for x in WorldDataset(world_dir, "train", shuffle=True, seed=1)]
    b = [x["key"] for x in WorldDataset(world_dir, "train", shuffle=True, seed=1)]
    c = [x["key"] for x in WorldDataset(world_dir, "train")]
    assert a == b and sorted(a) == sorted(c)
    with pytest.raises(ValueError, match="not stored"):
        WorldDataset(world_dir, "train", zooms=(2,))
    with pytest.raises(ValueError, match="world.json"):
        WorldDataset(world_dir / "nope", "train")


def test_world_dataset_in_a_dataloader(world_dir):
    from torch.utils.data import DataLoader

    keys = [
        k
        for batch in DataLoader(
            WorldDataset(world_dir, "train"),
            batch_size=4,
            num_workers=2,
            collate_fn=lambda b: [x["key"] for x in b],
        )
        for k in batch
    ]
    assert len(keys) == len(set(keys)) == len(WorldDataset(world_dir, "train"))


def _write_real_files(root: Path) -> pd.DataFrame:
    sr = 22_050
    t = np.arange(sr) / sr
    sf.write(root / "good.wav", 0.1 * np.sin(2 * np.pi * 440 * t), sr)
    sf.write(root / "stereo.flac", np.stack([0.1 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1), sr)
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    big = (np.random.default_rng(0).uniform(0, 255, (100, 100, 3))).astype(np.uint8)
    Image.fromarray(big).save(root / "tile.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG not really")
    rows = [
        dict(
            key="a",
            lat=40.7,
            lon=-74.0,
            audio_path="good.wav",
            image_path="tile.png",
            caption="birds",
            caption_source="metadata",
            audio_source="iNat",
            time_taken="2019-05-04 06:30:00",
        ),
        dict(
            key="b",
            lat=-33.9,
            lon=151.2,
            audio_path="stereo.flac",
            image_path="tile.png",
            caption="",
            caption_source="",
            audio_source="",
            time_taken="",
        ),
    ]
    base = dict(lat=10.0, lon=10.0, audio_path="good.wav", image_path="tile.png", caption="x",
                caption_source="metadata", audio_source="yfcc", time_taken="")
    rows += [
        {**base, "key": "c", "audio_path": "missing.wav"},
        {**base, "key": "d", "audio_path": "corrupt.wav"},
        {**base, "key": "e", "image_path": "corrupt.png"},
        {**base, "key": "f", "lat": 123.0},
        {**base, "key": "g", "audio_source": "spotify"},
        {**base, "key": "h", "image_path": "nope.png", "time_taken": "2020-02-01"},
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_manifest_good_and_corrupt_rows(tmp_path, fmt):
    df = _write_real_files(tmp_path)
    path = tmp_path / f"manifest.{fmt}"
    if fmt == "csv":
        df.rename(columns={"lat": "latitude", "lon": "longitude"}).to_csv(path, index=False)
    else:
        df.to_parquet(path)
    ds = ManifestDataset(path, zooms=(1, 5), zoom_max=5, image_size=16, clip_seconds=0.5)
    assert (
        len(ds) == 4
    )  # c (missing audio), f (bad lat), g (bad source), h (missing image) dropped up front
    items = list(ds)  # d (corrupt audio) and e (corrupt image) are skipped while iterating
    assert [x["key"] for x in items] == ["a", "b"]
    rep = ds.report
    assert rep.loaded == 2 and rep.n_skipped == 6
    assert dict(rep.skipped) == {
        "missing_audio": 1,
        "bad_latlon": 1,
        "bad_metadata": 1,
        "missing_image": 1,
        "corrupt_audio": 1,
        "corrupt_image": 1,
    }
    summary = rep.summary()
    assert "2 of 8 rows usable" in summary and "corrupt_audio 1" in summary
    a, b = items
    assert a["image"].shape == (2, 16, 16, 3) and a["image"].dtype == np.uint8
    assert (
        a["waveform"].shape == (8000,)
        and a["waveform"].dtype == np.float32
        and a["sample_rate"] == 16_000
    )
    assert (
        a["month"] == 5
        and a["hour"] == 6
        and a["audio_source"] == "inaturalist"
        and a["caption_source"] == "metadata"
    )
    assert (
        b["month"] is None
        and b["hour"] is None
        and b["audio_source"] is None
        and b["classes"] == ()
    )


def test_manifest_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_manifest(tmp_path / "none.csv")
    (tmp_path / "m.csv").write_text("key,caption\nx,y\n")
    with pytest.raises(ValueError, match="'lat'"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(ValueError, match="must be .csv"):
        read_manifest(tmp_path / "m.json")


def test_manifest_date_only_has_month_but_no_hour(tmp_path):
    df = _write_real_files(tmp_path)
    df.loc[0, "time_taken"] = "2020-02-01"
    df.to_csv(tmp_path / "m.csv", index=False)
    item = next(iter(ManifestDataset(tmp_path / "m.csv")))
    assert item["month"] == 2 and item["hour"] is None
    assert item["image"].shape == (100, 100, 3)  # zoom_max=1: the stored tile as is
    assert item["waveform"].shape == (16_000,)  # 1 s at 22.05 kHz resampled to 16 kHz


def test_crop_zoom_is_a_centre_crop():
    img = np.zeros((50, 50, 3), dtype=np.uint8)
    img[20:30, 20:30] = 255
    z1 = crop_zoom(img, 1, 5, None)
    assert z1.shape == (10, 10, 3) and z1.min() == 255
    z5 = crop_zoom(img, 5, 5, 10)
    assert z5.shape == (10, 10, 3) and 0 < z5.mean() < 255
