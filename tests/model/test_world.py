"""Tests of the synthetic world: determinism, the soundscape law, imagery, sounds, splits and the oracle."""

from __future__ import annotations

import hashlib
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from psm_model.world import (
    LANDCOVER_CLASSES,
    SOUND_CLASSES,
    BuildConfig,
    World,
    assign_splits,
    build_world,
    cell_ids,
    draw_set,
    law,
    make_caption,
    mix_clip,
    oracle_scores,
    set_probability,
    synthesize,
    true_match_ranks,
)
from psm_model.world.imagery import IMAGERY, downsample, render_crop
from psm_model.world.law import seasonal

TINY = dict(samples=160, image_size=16, sample_rate=8000, clip_seconds=1.0, shard_size=50)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world() -> World:
    return World(0)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    build_world(out, BuildConfig(seed=7, workers=2, **TINY))
    return out


def _onehot(name: str) -> np.ndarray:
    f = np.zeros(len(LANDCOVER_CLASSES))
    f[LANDCOVER_CLASSES.index(name)] = 1.0
    return f


def _p(cover: str, lat: float, month: int, hour: int, source: int, sound: str) -> float:
    f = 0.5 * _onehot(cover) + 0.5 * _onehot(
        "suburban" if cover == "urban" else "forest"
    )  # a mix, far from saturation
    return float(law(f, lat, month, hour, source)[0, SOUND_CLASSES.index(sound)])


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes(tiny_world, tmp_path):
    again = tmp_path / "again"
    build_world(again, BuildConfig(seed=7, workers=1, **TINY))  # another worker count, same bytes
    assert _digest(again) == _digest(tiny_world)


def test_other_seed_other_world(tiny_world, tmp_path):
    other = tmp_path / "other"
    build_world(other, BuildConfig(seed=8, **{**TINY, "samples": 20, "shard_size": 20}))
    a = pd.read_parquet(tiny_world / "index.parquet")
    b = pd.read_parquet(other / "index.parquet")
    assert not np.allclose(a["lat"].to_numpy()[:20], b["lat"].to_numpy())


def test_build_refuses_non_empty_folder(tiny_world):
    with pytest.raises(ValueError, match="not empty"):
        build_world(tiny_world, BuildConfig(seed=7, **TINY))


def test_build_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError, match="imagery"):
        build_world(tmp_path / "x", BuildConfig(imagery="landsat", **TINY))
    with pytest.raises(ValueError, match="zooms"):
        build_world(tmp_path / "y", BuildConfig(zooms=(1, 7), **TINY))


def test_render_is_deterministic_and_typed(world):
    a = world.render_tile(48.85, 2.35, gsd=10.0, size=24, zoom=3)
    b = World(0).render_tile(48.85, 2.35, gsd=10.0, size=24, zoom=3)
    assert a.dtype == np.uint8 and a.shape == (24, 24, 3)
    assert np.array_equal(a, b)
    c = World(1).render_tile(48.85, 2.35, gsd=10.0, size=24, zoom=3)
    assert not np.array_equal(a, c)


# ----------------------------------------------------------------------------- the layout on disk


def test_dataset_layout(tiny_world):
    import json

    meta = json.loads((tiny_world / "world.json").read_text())
    assert meta["world"]["sound_classes"] == list(SOUND_CLASSES)
    assert sum(meta["counts"].values()) == TINY["samples"]
    idx = pd.read_parquet(tiny_world / "index.parquet")
    assert len(idx) == TINY["samples"] and idx["key"].is_unique
    assert set(idx["caption_source"]) <= {"metadata", "captioner_a", "captioner_b"}
    assert idx["classes"].map(len).between(1, 3).all()
    assert np.allclose(idx["probs"].map(np.sum), 1.0, atol=1e-5)
    for shard, rows in idx.groupby("shard"):
        with np.load(tiny_world / shard) as z:
            assert z["images"].shape[1:] == (3, 16, 16, 3) and z["images"].dtype == np.uint8
            assert z["audio"].shape[1] == 8000 and z["audio"].dtype == np.int16
            assert np.array_equal(z["index"][rows["row"].to_numpy()], rows["index"].to_numpy())


def test_spatial_split_shares_no_cell(tiny_world):
    idx = pd.read_parquet(tiny_world / "index.parquet")
    per_cell = idx.groupby("cell")["split"].nunique()
    assert (per_cell == 1).all()
    assert set(idx["split"]) <= {"train", "val", "test"}


def test_cell_ids_km_and_deg():
    lat = np.array([10.0, 10.05, 10.2, -33.9])
    lon = np.array([20.0, 20.05, 20.2, 151.2])
    deg = cell_ids(lat, lon, cell_deg=1.0)
    assert deg[0] == deg[1] == deg[2] != deg[3]
    km = cell_ids(lat, lon, cell_deg=None, cell_km=10.0)
    assert km[0] != km[2]
    # Points sharing a 10 km cell lie within one cell diagonal of each other.
    rng = np.random.default_rng(0)
    plat, plon = rng.uniform(50.0, 50.3, 3000), rng.uniform(8.0, 8.4, 3000)
    ids = cell_ids(plat, plon, cell_deg=None, cell_km=10.0)
    for c in np.unique(ids)[:40]:
        m = ids == c
        dy = (plat[m].max() - plat[m].min()) * 110.574
        dx = (plon[m].max() - plon[m].min()) * 111.32 * np.cos(np.radians(50.15))
        assert dy <= 10.01 and dx <= 10.2
    s = assign_splits(np.array([km[0], km[0], km[3]]), seed=0)
    assert s[0] == s[1]
    with pytest.raises(ValueError, match="exactly one"):
        cell_ids(lat, lon, cell_deg=1.0, cell_km=10.0)
    with pytest.raises(ValueError, match="sum"):
        assign_splits(km, 0, (0.5, 0.5, 0.5))


# ----------------------------------------------------------------------------- the law


@pytest.mark.parametrize(
    "meta",
    [
        (5, 8, "yfcc"),
        (1, 23, "inaturalist"),
        (None, 6, "aporee"),
        (7, None, None),
        (None, None, None),
    ],
)
def test_class_probs_sum_to_one(world, meta):
    for lat, lon in [(40.75, -73.98), (42.0, -93.5), (-3.0, -60.0), (23.0, 10.0), (-33.9, 151.2)]:
        p = world.class_probs(lat, lon, *meta)
        assert p.shape == (len(SOUND_CLASSES),)
        assert np.all(p > 0) and np.isclose(p.sum(), 1.0)


def test_class_probs_grid_matches_pointwise(world):
    lats, lons = np.array([40.75, 42.0, 23.0]), np.array([-73.98, -93.5, 10.0])
    g = world.class_probs_grid(lats, lons, 5, 20, "inaturalist")
    assert np.allclose(g.sum(1), 1.0)
    assert np.allclose(g[1], world.class_probs(42.0, -93.5, 5, 20, "inaturalist"))
    tile = world.class_probs_grid(lats, lons, 5, 20, "inaturalist", gsd=10.0, size=48, zoom=5)
    assert tile.shape == (3, len(SOUND_CLASSES)) and np.allclose(tile.sum(1), 1.0)
    fr = world.landcover_fractions(42.0, -93.5, gsd=10.0, size=48, zoom=5)
    assert np.isclose(fr.sum(), 1.0) and fr.shape == (len(LANDCOVER_CLASSES),)


def test_diurnal_rules():
    assert _p("cropland", 45, 5, 6, 2, "rooster") > 3 * _p("cropland", 45, 5, 18, 2, "rooster")
    assert _p("cropland", 45, 5, 14, 3, "sheep") > 3 * _p("cropland", 45, 5, 2, 3, "sheep")
    assert (
        _p("forest", 45, 5, 6, 1, "birdsong")
        > _p("forest", 45, 5, 13, 1, "birdsong")
        > _p("forest", 45, 5, 1, 1, "birdsong")
    )
    assert _p("grassland", 40, 7, 20, 1, "insects") > 2 * _p("grassland", 40, 7, 8, 1, "insects")
    assert _p("urban", 40, 5, 8, 3, "traffic") > 2 * _p("urban", 40, 5, 3, 3, "traffic")
    assert _p("urban", 40, 5, 17, 0, "car_horn") > _p("urban", 40, 5, 13, 0, "car_horn")
    assert _p("wetland", 45, 4, 23, 3, "frogs") > 3 * _p("wetland", 45, 4, 12, 3, "frogs")


def test_seasonal_rules_and_southern_mirror():
    assert _p("wetland", 45, 4, 23, 3, "frogs") > 3 * _p("wetland", 45, 12, 23, 3, "frogs")
    assert _p("grassland", 45, 7, 20, 3, "insects") > 2 * _p("grassland", 45, 1, 20, 3, "insects")
    # Southern hemisphere: the same rules six months apart.
    assert _p("wetland", -45, 10, 23, 3, "frogs") > 3 * _p("wetland", -45, 6, 23, 3, "frogs")
    assert _p("grassland", -45, 1, 20, 3, "insects") > 2 * _p("grassland", -45, 7, 20, 3, "insects")
    for m in range(1, 13):
        assert np.allclose(seasonal(m, 40.0), seasonal((m + 5) % 12 + 1, -40.0))


def test_sources_shape_the_law():
    inat = law(_onehot("suburban"), 40, 5, 10, 1)[0]
    yfcc = law(_onehot("suburban"), 40, 5, 10, 0)[0]
    animals = [SOUND_CLASSES.index(c) for c in ("birdsong", "insects", "frogs")]
    urban = [SOUND_CLASSES.index(c) for c in ("traffic", "car_horn", "crowd", "siren")]
    assert inat[animals].sum() > yfcc[animals].sum()
    assert yfcc[urban].sum() > inat[urban].sum()


def test_places_carry_several_likely_sounds(world):
    p = world.class_probs_grid(
        np.array([40.75, 42.0, -3.0, 48.85]),
        np.array([-73.98, -93.5, -60.0, 2.35]),
        5,
        9,
        "freesound",
    )
    assert ((p > 0.08).sum(axis=1) >= 3).all()  # one-to-many: no place has a single sound


def test_set_probability_is_exact():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(len(SOUND_CLASSES)))
    total = sum(
        float(set_probability(p, s)) for k in (1, 2, 3) for s in combinations(range(len(p)), k)
    )
    assert np.isclose(total, 1.0)
    draws = [draw_set(p, rng) for _ in range(6000)]
    target = max(((i,) for i in range(len(p))), key=lambda s: float(set_probability(p, s)))
    freq = sum(d == target for d in draws) / len(draws)
    assert abs(freq - float(set_probability(p, target))) < 0.02
    with pytest.raises(ValueError, match="1..3"):
        set_probability(p, (0, 1, 2, 3))


def test_world_set_prob(world):
    a = world.set_prob(("rooster", "birdsong"), 42.0, -93.5, 5, 6, "freesound")
    b = world.set_prob(
        frozenset({SOUND_CLASSES.index("rooster"), SOUND_CLASSES.index("birdsong")}),
        42.0,
        -93.5,
        5,
        6,
        "freesound",
    )
    assert 0 < a < 1 and np.isclose(a, b)
    assert world.set_prob(("rooster",), 42.0, -93.5, 5, 6, "freesound") > world.set_prob(
        ("rooster",), 42.0, -93.5, 5, 18, "freesound"
    )
    assert 0 < world.set_prob(("traffic",), 40.75, -73.98, None, None, None) < 1
    with pytest.raises(ValueError, match="unknown sound class"):
        world.set_prob(("kazoo",), 0.0, 0.0, 1, 1, "yfcc")


# ----------------------------------------------------------------------------- the oracle


def test_oracle_beats_random(tiny_world):
    idx = pd.read_parquet(tiny_world / "index.parquet")
    fr = np.stack(idx["fractions"].to_numpy())
    i2a, a2i = oracle_scores(idx, fr)
    n = len(idx)
    assert i2a.shape == a2i.shape == (n, n)
    random_mean = (n + 1) / 2
    assert true_match_ranks(i2a).mean() < 0.75 * random_mean
    assert true_match_ranks(a2i).mean() < 0.85 * random_mean
    recs = idx.head(5).to_dict("records")
    i2a_small, _ = oracle_scores(recs, fr[:5])
    assert i2a_small.shape == (5, 5)


def test_oracle_matches_set_prob_with_unknown_metadata(world):
    lats, lons = np.array([40.75, 42.0, -3.0]), np.array([-73.98, -93.5, -60.0])
    fr = world.landcover_fractions_grid(lats, lons)
    recs = [
        {"lat": 40.75, "month": 5, "hour": None, "audio_source": "yfcc", "classes": ("traffic",)},
        {
            "lat": 42.0,
            "month": None,
            "hour": 6,
            "audio_source": None,
            "classes": ("rooster", "birdsong"),
        },
        {
            "lat": -3.0,
            "month": 1,
            "hour": 20,
            "audio_source": "inaturalist",
            "classes": ("insects", "frogs", "birdsong"),
        },
    ]
    _, a2i = oracle_scores(recs, fr)
    for i, r in enumerate(recs):
        want = world.set_prob(
            r["classes"], lats[i], lons[i], r["month"], r["hour"], r["audio_source"]
        )
        assert np.isclose(a2i[i, i], want)


def test_true_match_ranks_ties():
    s = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 3.0], [5.0, 0.0, 1.0]])
    assert np.allclose(true_match_ranks(s), [1.5, 2.0, 2.0])


# ----------------------------------------------------------------------------- imagery


def test_zooms_are_crops_of_one_tile(world):
    kind = IMAGERY["sentinel"]
    big = render_crop(world.field, 42.0, -93.5, kind, 10.0, 16, 5)
    z1 = render_crop(world.field, 42.0, -93.5, kind, 10.0, 16, 1)
    z3 = world.render_tile(42.0, -93.5, gsd=10.0, size=16, zoom=3)
    assert np.array_equal(big[32:48, 32:48], z1)
    assert np.array_equal(downsample(big[16:64, 16:64], 16), z3)
    stack = world.render_zooms(42.0, -93.5, (1, 3, 5), size=16)
    assert np.array_equal(stack[1], z3)


def test_render_tiles_matches_render_tile(world):
    lats, lons = np.array([40.75, 42.0, -33.9]), np.array([-73.98, -93.5, 151.2])
    batch = world.render_tiles(lats, lons, gsd=10.0, size=16, zoom=5, batch=2)
    for i in range(3):
        assert np.array_equal(
            batch[i], world.render_tile(lats[i], lons[i], gsd=10.0, size=16, zoom=5)
        )


def test_imagery_kinds_differ(world):
    s = world.render_tile(40.75, -73.98, gsd=10.0, size=32, imagery="sentinel")
    h = world.render_tile(40.75, -73.98, gsd=0.6, size=32, imagery="highres")
    assert s.shape == h.shape and not np.array_equal(s, h)
    with pytest.raises(ValueError, match="imagery"):
        world.render_tile(0, 0, imagery="landsat")
    with pytest.raises(ValueError, match="zoom"):
        world.render_tile(0, 0, zoom=6)


def test_land_cover_looks_different(world):
    water = world.render_tile(0.0, -30.0, size=16).reshape(-1, 3).mean(0)  # mid-Atlantic
    desert = world.render_tile(23.0, 10.0, size=16).reshape(-1, 3).mean(0)
    assert water[2] > water[0] and desert[0] > desert[2]


# ----------------------------------------------------------------------------- sounds and captions


def _centroid(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.shape[0], 1 / sr)
    return float((f * spec).sum() / spec.sum())


def test_sounds_have_distinct_signatures():
    rng = np.random.default_rng(0)
    sr = 16_000
    c = {}
    for name in SOUND_CLASSES:
        x = synthesize(name, rng, sr, sr * 2)
        assert x.dtype == np.float32 and np.isfinite(x).all()
        assert np.isclose(np.sqrt(np.mean(x.astype(np.float64) ** 2)), 1.0, atol=1e-3)
        c[name] = _centroid(x, sr)
    assert c["insects"] > 3000 and c["birdsong"] > 2000 and c["rain"] > 2000
    assert c["traffic"] < 1000 and c["wind"] < 1000 and c["frogs"] < 1500
    with pytest.raises(ValueError, match="unknown sound class"):
        synthesize("kazoo", rng, sr, 100)


def test_mix_clip_is_safe_and_random():
    rng = np.random.default_rng(1)
    a = mix_clip(("rooster", "birdsong"), rng, 8000, 1.0)
    b = mix_clip(("rooster", "birdsong"), rng, 8000, 1.0)
    assert a.shape == (8000,) and np.abs(a).max() <= 0.99
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="at least one"):
        mix_clip((), rng, 8000, 1.0)


def test_captions_per_source():
    caps = {
        src: make_caption(
            ("rooster", "birdsong"), "cropland", 5, 6, "aporee", src, np.random.default_rng(3)
        )
        for src in ("metadata", "captioner_a", "captioner_b")
    }
    assert "," in caps["metadata"] and not caps["metadata"].endswith(".")
    assert caps["captioner_a"].endswith(".") and caps["captioner_b"].endswith(".")
    assert len(set(caps.values())) == 3
    with pytest.raises(ValueError, match="caption source"):
        make_caption(("rooster",), "cropland", 5, 6, "aporee", "gpt", np.random.default_rng(0))


def test_cli_world_build(tmp_path):
    from typer.testing import CliRunner

    from worker.cli import app

    out = tmp_path / "cli"
    args = [
        "world",
        "build",
        "--seed",
        "3",
        "--samples",
        "12",
        "--out",
        str(out),
        "--image-size",
        "8",
        "--clip-seconds",
        "0.5",
        "--sample-rate",
        "8000",
        "--workers",
        "1",
        "--cell-km",
        "10",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "world.json").is_file() and "wrote 12 samples" in res.output
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "overwrite" in res.output
