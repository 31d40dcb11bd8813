"""Evaluation: the vectorised oracle against the world's exact law, and the evaluation table."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest
import torch

from psm_model.bayes import _set_probabilities_reference, oracle_scores, set_probabilities
from psm_model.evaluate import (
    db_records,
    evaluate,
    metadata_keep,
    neg_csd,
    results_markdown,
    write_results,
)
from psm_model.features import SplitData
from psm_model.metrics import rank_counts, recall_at_fraction
from psm_model.world.landcover import N_LANDCOVER
from psm_model.world.sampler import set_probability
from psm_model.world.sounds import SOUND_CLASSES


def test_set_probabilities_match_the_sampler_and_sum_to_one():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(len(SOUND_CLASSES)), size=7)
    sets = [c for k in (1, 2, 3) for c in combinations(range(len(SOUND_CLASSES)), k)]
    fast = set_probabilities(p, sets)
    assert np.allclose(fast, _set_probabilities_reference(p, sets), rtol=1e-12, atol=0)
    for u in (0, 20, 200, 500):
        assert np.allclose(fast[:, u], set_probability(p, sets[u]))
    assert np.allclose(fast.sum(1), 1.0)  # every possible set of 1-3 classes


def _places(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    fr = rng.dirichlet(np.full(N_LANDCOVER, 0.3), size=n)
    lat = rng.uniform(-60, 60, n)
    month = rng.integers(1, 13, n)
    hour = rng.integers(0, 24, n)
    source = rng.integers(0, 4, n)
    return fr, lat, month, hour, source


def test_oracle_matches_the_world_oracle_with_and_without_metadata():
    from psm_model.world import oracle as world_oracle

    fr, lat, month, hour, source = _places(6)
    classes = [("birdsong",), ("traffic", "car_horn"), ("rooster", "sheep", "dog"), ("wind",), ("birdsong",), ("rain", "frogs")]
    ours = oracle_scores(fr, lat, month, hour, source, classes)
    samples = {"classes": classes, "lat": lat, "month": list(month), "hour": list(hour), "audio_source": list(source)}
    i2a, a2i = world_oracle.oracle_scores(samples, fr)
    assert np.allclose(ours["i2a"], i2a) and np.allclose(ours["a2i"], a2i)
    # No metadata: the world oracle marginalises None per row; ours does the same in bulk.
    ours_none = oracle_scores(fr[:2], lat[:2], month[:2], hour[:2], source[:2], classes[:2], known=())
    samples_none = {"classes": classes[:2], "lat": lat[:2], "month": [None] * 2, "hour": [None] * 2, "audio_source": [None] * 2}
    i2a_n, a2i_n = world_oracle.oracle_scores(samples_none, fr[:2])
    assert np.allclose(ours_none["i2a"], i2a_n) and np.allclose(ours_none["a2i"], a2i_n)


def _toy_split(n: int = 24, size: int = 32, zooms=(1, 3, 5)) -> SplitData:
    fr, lat, month, hour, source = _places(n, seed=1)
    rng = np.random.default_rng(2)
    names = list(SOUND_CLASSES)
    classes = [tuple(sorted(rng.choice(names, size=int(rng.integers(1, 4)), replace=False))) for _ in range(n)]
    return SplitData(
        name="test",
        keys=np.array([f"k{i}" for i in range(n)]),
        lat=lat,
        lon=rng.uniform(-170, 170, n),
        month=month,
        hour=hour,
        audio_source=source,
        caption_source=rng.integers(0, 3, n),
        captions=[" and ".join(c) for c in classes],
        classes=classes,
        images=rng.integers(0, 256, (n, len(zooms), size, size, 3), dtype=np.uint8),
        zooms=tuple(zooms),
        gsd=10.0,
        mel=rng.standard_normal((n, 1, 63, 64)).astype(np.float16),
        is_longer=np.zeros(n, dtype=bool),
        fusion_channels=4,
        text_features=None,
        fractions=fr,
    )


def test_oracle_beats_a_random_ranking_on_a_world_like_split():
    data = _toy_split(60)
    # give clips sets that follow their places' law, as the world does
    from psm_model.world.law import law
    from psm_model.world.sampler import draw_set

    rng = np.random.default_rng(3)
    p = law(data.fractions, data.lat, data.month, data.hour, data.audio_source)
    data.classes = [tuple(SOUND_CLASSES[c] for c in draw_set(p[i], rng)) for i in range(len(data))]
    scores = oracle_scores(data.fractions, data.lat, data.month, data.hour, data.audio_source, data.classes)
    for s in scores.values():
        r = recall_at_fraction(rank_counts(s), 0.1)
        assert r > 0.2  # random tie-breaking of a constant score gives (6 - 1) / 60


def test_evaluate_rows_markdown_ranks_and_db_records(tiny, tmp_path):
    data = _toy_split()
    res = evaluate(tiny, data, zooms=(1, 5), text=(False, True), metadata=("all", "none", "hour"), oracle=True,
                   cache_dir=tmp_path)
    model_rows = [r for r in res.rows if r["scorer"] == "model"]
    oracle_rows = [r for r in res.rows if r["scorer"] == "oracle"]
    assert len(model_rows) == 2 * 2 * 3 * 2  # zooms x text x metadata x directions
    assert len(oracle_rows) == 2 * 2 * 3 * 2  # oracle without and with text, repeated per zoom
    for r in res.rows:
        assert 0.0 <= r["r_at_10"] <= 1.0 and 1.0 <= r["median_rank"] <= len(data) and r["n"] == len(data)
    assert sorted(p.name for p in tmp_path.glob("oracle-test-*.npz")) == [
        "oracle-test-audio_source+month+hour.npz", "oracle-test-hour.npz", "oracle-test-none.npz"
    ]
    assert len(list(tmp_path.glob("oracle-text-test-*.npz"))) == 3
    assert res.config["compose"] == "unit"
    md = results_markdown(res.rows)
    assert md.count("\n| 5 |") == 6 and "oracle I2A R@10%" in md
    rec = db_records(res, "v1", "world", "test")
    assert rec["run"]["model_version"] == "v1" and len(rec["metrics"]) == len(res.rows)
    assert set(rec["metrics"][0]) == {"scorer", "direction", "zoom", "with_text", "metadata", "r_at_10", "median_rank", "n"}
    files = write_results(res, tmp_path / "out")
    with np.load(files["ranks"]) as z:
        assert z["model/i2a/z1/text/all"].shape == (len(data),)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["rows"][0]["n"] == len(data)


def test_neg_csd_is_the_closed_form_distance():
    g = torch.Generator().manual_seed(0)
    mq = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=-1)
    mg = torch.randn(4, 8, generator=g)
    lq, lg = torch.randn(3, 8, generator=g), torch.randn(4, 8, generator=g)
    s = neg_csd((mq, lq), (mg, lg))
    mgn = torch.nn.functional.normalize(mg, dim=-1)
    ref = ((mq[:, None] - mgn[None]) ** 2).sum(-1) + (lq.exp()[:, None] + lg.exp()[None]).sum(-1)
    assert np.allclose(s, -ref.double().numpy())


def test_unknown_metadata_condition_raises():
    with pytest.raises(ValueError, match="unknown metadata condition"):
        metadata_keep("weather")
