"""Science checks: rank statistics, ambiguity, temporal sweeps and the whole report against hand computation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from psm_model.evaluate import EvalResult
from psm_model.features import SplitData
from psm_model.fidelity import (
    Sweep,
    class_phrase,
    coefficient_of_variation,
    contrast,
    dominant_rows,
    fused_sum_variance,
    is_flat,
    match_probability,
    rowwise_spearman,
    spearman,
    sweep,
    sweep_fidelity,
    variance_spread,
)
from psm_model.fusion import MetadataBatch
from psm_model.science import metadata_gain, pick_rows, science_report
from psm_model.uncertainty import ambiguity, crowding, entropy, uncertainty_correlations
from psm_model.world.landcover import LANDCOVER_CLASSES, N_LANDCOVER
from psm_model.world.law import law
from psm_model.world.sampler import draw_set
from psm_model.world.sounds import SOUND_CLASSES


def world_like_split(n: int = 20, size: int = 32, seed: int = 0) -> SplitData:
    """A split whose clips draw their sound sets from their places' law, as the world's do."""
    rng = np.random.default_rng(seed)
    cover = rng.dirichlet(np.full(N_LANDCOVER, 0.3), size=n)
    cover[:4] = np.eye(N_LANDCOVER)[LANDCOVER_CLASSES.index("cropland")]  # four farms
    meta: dict[str, Any] = {"lat": rng.uniform(25, 60, n), "month": rng.integers(1, 13, n), "hour": rng.integers(0, 24, n),
            "audio_source": rng.integers(0, 4, n)}
    p = law(cover, meta["lat"], meta["month"], meta["hour"], meta["audio_source"])
    classes = [tuple(SOUND_CLASSES[c] for c in draw_set(p[i], rng)) for i in range(n)]
    return SplitData(
        name="test", keys=np.array([f"s{i}" for i in range(n)]), lon=rng.uniform(-120, 120, n),
        caption_source=rng.integers(0, 3, n), captions=[f"the sound of {' and '.join(c)}" for c in classes],
        classes=classes, images=rng.integers(0, 256, (n, 2, size, size, 3), dtype=np.uint8), zooms=(1, 5),
        gsd=10.0, mel=rng.standard_normal((n, 1, 63, 64)).astype(np.float16), is_longer=np.zeros(n, dtype=bool),
        fusion_channels=4, text_features=None, fractions=cover, **meta,
    )


@pytest.fixture(scope="module")
def split() -> SplitData:
    return world_like_split()


@pytest.fixture(scope="module")
def features(tiny, split) -> torch.Tensor:
    with torch.no_grad():
        return tiny.image_features(split.tiles(np.arange(len(split)), 0), split.gsd, 1)


# ----------------------------------------------------------------------------- rank statistics


def test_ambiguity_counts_ties_and_the_match_itself():
    scores = np.array([[3.0, 1.0, 2.0],   # the match alone on top: 1/3
                       [2.0, 2.0, 2.0],   # tied with everything: 1
                       [1.0, 5.0, 0.0],   # last: 1
                       ])
    assert np.allclose(ambiguity(scores), [1 / 3, 1.0, 1.0])
    assert np.allclose(ambiguity(np.array([[0.0, 1.0], [1.0, 0.5]])), [1.0, 1.0])  # row 1: 1 >= 0.5, itself


def test_spearman_on_known_ranks_ties_and_constant_series():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(1 - 6 * 2 / (4 * 15))
    assert spearman([10, 20, 30], [0.3, 0.2, 0.1]) == pytest.approx(-1.0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, 50), rng.integers(0, 4, 50)  # many ties
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        spearman([1], [1])


def test_rowwise_spearman_matches_scipy_per_row():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((5, 24)), rng.standard_normal((5, 24))
    want = [spearmanr(a, b).statistic for a, b in zip(x, y, strict=True)]
    assert np.allclose(rowwise_spearman(x, y), want)
    with pytest.raises(ValueError, match="one shape"):
        rowwise_spearman(x, y[:, :3])


def test_entropy_cv_and_flatness_by_hand():
    assert np.allclose(entropy(np.array([[0.25] * 4, [1.0, 0, 0, 0]])), [math.log(4), 0.0])
    assert coefficient_of_variation([1.0, 2.0, 3.0]) == pytest.approx(math.sqrt(2 / 3) / 2)
    assert variance_spread(np.array([2.0, 2.0]))["cv_percent"] == 0.0
    assert "odds_p5_p95" not in variance_spread(np.array([2.0, 3.0]))


def test_variance_spread_in_logits_does_not_depend_on_the_level():
    # b absorbs a common shift of sum sigma^2, so the CV moves with the level and the logit spread does not
    v = np.linspace(2.0, 3.0, 101)
    low, high = variance_spread(v, a=5.0), variance_spread(v + 10.0, a=5.0)
    assert high["cv_percent"] < low["cv_percent"] / 4
    assert high["logit_p5_p95"] == pytest.approx(low["logit_p5_p95"])
    assert low["logit_p5_p95"] == pytest.approx(5.0 * 0.9)
    assert low["odds_p5_p95"] == pytest.approx(math.exp(4.5))
    with pytest.raises(ValueError, match="at least one value"):
        coefficient_of_variation([])
    with pytest.raises(ValueError, match="positive mean"):
        coefficient_of_variation([0.0, 0.0])
    assert is_flat(np.array([[1.0, 1.0 + 1e-9], [1.0, 1.1]])).tolist() == [True, False]


# ----------------------------------------------------------------------------- aggregation


def test_sweep_fidelity_gives_one_for_a_monotone_model_and_skips_flat_truth():
    rng = np.random.default_rng(2)
    truth = rng.uniform(0.01, 0.5, (6, 24, 3))
    truth[0, :, 1] = 0.2  # flat truth: no rho, skipped
    model = 1 / (1 + np.exp(-10 * truth))  # monotone in the truth
    model[1, :, 2] = 0.7  # a model that ignores the hour: rho 0, not skipped
    model[2, :, 0] = -truth[2, :, 0]  # reversed: rho -1
    f = sweep_fidelity(model, truth, ("a", "b", "c"))
    assert f["pairs"] == 18 and f["skipped"] == 1 and f["model_flat"] == 1
    assert math.isnan(f["rho"][0, 1]) and f["rho"][1, 2] == 0.0 and f["rho"][2, 0] == pytest.approx(-1.0)
    assert f["median"] == pytest.approx(1.0)
    assert f["per_class"]["b"] == {"median": 1.0, "mean": 1.0, "n": 5, "skipped": 1, "model_flat": 0}
    assert f["per_class"]["a"]["mean"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="one shape"):
        sweep_fidelity(model, truth[:, :5], ("a", "b", "c"))
    with pytest.raises(ValueError, match="class names"):
        sweep_fidelity(model, truth, ("a",))


def test_contrast_and_metadata_gain_by_hand():
    s = Sweep("hour", (6, 18), ("rooster",), ("q",), np.arange(2), np.array([[[0.6], [0.2]], [[0.2], [0.3]]]),
              np.array([[[0.3], [0.1]], [[0.3], [0.1]]]))
    c = contrast(s, "rooster", 6, 18)
    assert c["model_ratio"] == pytest.approx(0.4 / 0.25) and c["true_ratio"] == pytest.approx(3.0)
    assert c["share_first_above"] == 0.5
    with pytest.raises(ValueError, match="not in this sweep"):
        contrast(s, "rooster", 6, 12)
    row = dict(direction="i2a", zoom=1, with_text=False)
    res = EvalResult([{**row, "scorer": "model", "metadata": "none", "r_at_10": 0.20},
                      {**row, "scorer": "model", "metadata": "hour", "r_at_10": 0.25},
                      {**row, "scorer": "oracle", "metadata": "none", "r_at_10": 0.30},
                      {**row, "scorer": "oracle", "metadata": "hour", "r_at_10": 0.40}], {})
    g = metadata_gain(res)
    assert g["model_gain"] == pytest.approx(0.05) and g["oracle_gain"] == pytest.approx(0.10)
    assert g["ratio"] == pytest.approx(0.5)
    with pytest.raises(KeyError):
        metadata_gain(res, "month")


def test_uncertainty_correlations_follow_the_ambiguity():
    rng = np.random.default_rng(3)
    i2a, a2i = rng.standard_normal((2, 12, 12))
    probs = rng.dirichlet(np.ones(5), 12)
    amb_i, amb_a = ambiguity(i2a), ambiguity(a2i)
    u = uncertainty_correlations(amb_i * 3 + 1, -amb_a, {"i2a": i2a, "a2i": a2i}, probs)
    assert u["image_vs_ambiguity"] == pytest.approx(1.0) and u["audio_vs_ambiguity"] == pytest.approx(-1.0)
    assert u["image_vs_entropy"] == pytest.approx(spearmanr(amb_i, entropy(probs)).statistic)
    with pytest.raises(ValueError, match="rows"):
        uncertainty_correlations(amb_i[:5], amb_a, {"i2a": i2a, "a2i": a2i}, probs)


def test_pick_rows_is_seeded_distinct_and_sorted():
    a, b = pick_rows(100, 10, seed=4), pick_rows(100, 10, seed=4)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 10 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, pick_rows(100, 10, seed=5))
    assert np.array_equal(pick_rows(3, 10), np.arange(3))
    with pytest.raises(ValueError, match=">= 1"):
        pick_rows(100, 0)
    with pytest.raises(ValueError, match="empty"):
        pick_rows(0, 3)


# ----------------------------------------------------------------------------- the model side


def test_class_phrase_and_its_errors():
    assert class_phrase("rooster") == "The sound of a rooster crowing."
    assert class_phrase("traffic", "{noun} at night") == "traffic at night"
    with pytest.raises(ValueError, match="unknown sound class"):
        class_phrase("cow")
    with pytest.raises(ValueError, match="noun"):
        class_phrase("rooster", "The sound of it.")


def test_sweep_matches_the_formula_and_the_law(tiny, split, features):
    rows = np.array([1, 5, 7])
    s = sweep(tiny, features, split, rows, ("rooster", "traffic"), vary="hour", month=None, audio_source="aporee")
    assert s.model.shape == s.truth.shape == (3, 24, 2) and s.values == tuple(range(24))
    assert np.all((s.model > 0) & (s.model < 1))
    # one (tile, hour, class) by hand: sigmoid(-a * CSD + b), CSD = ||mu_i - mu_t||^2 + sum var_i + sum var_t
    i, h = 5, 6
    meta = MetadataBatch.from_values(lat=[float(split.lat[i])], lon=[float(split.lon[i])], month=int(split.month[i]),
                                     hour=h, audio_source="aporee", caption_source="captioner_b")
    with torch.no_grad():
        mu_i, lv_i = tiny.fuse_image(features[i : i + 1], meta)
        mu_t, lv_t = tiny.encode_text(["The sound of traffic."])
    d = float(((mu_i - mu_t) ** 2).sum() + lv_i.exp().sum() + lv_t.exp().sum())
    a, b = tiny.match_params()
    assert s.model[1, h, 1] == pytest.approx(1 / (1 + math.exp(a * d - b)), rel=1e-5)
    want = law(split.fractions[i], split.lat[i], split.month[i], np.array(h), np.array(2))[0, SOUND_CLASSES.index("traffic")]
    assert s.truth[1, h, 1] == pytest.approx(want)
    assert match_probability(tiny, (mu_i, lv_i), (mu_t, lv_t))[0, 0] == pytest.approx(s.model[1, h, 1], rel=1e-5)
    # the hour changes the model's fused image, so the sweep is not flat
    assert not is_flat(s.model[:, :, 0]).any()
    m = sweep(tiny, features, split, rows, ("insects",), vary="month", hour=21)
    assert m.model.shape == (3, 12, 1) and not is_flat(m.truth[:, :, 0]).any()


def test_sweep_rejects_bad_input(tiny, split, features):
    with pytest.raises(ValueError, match="unknown sound class"):
        sweep(tiny, features, split, [0], ("unicorn",))
    with pytest.raises(ValueError, match="hour must be"):
        sweep(tiny, features, split, [0], ("rooster",), values=(6, 24))
    with pytest.raises(ValueError, match="month must be"):
        sweep(tiny, features, split, [0], ("rooster",), vary="month", values=(0, 5))
    with pytest.raises(ValueError, match="no tiles"):
        sweep(tiny, features, split, [], ("rooster",))
    with pytest.raises(ValueError, match="unknown sweep"):
        sweep(tiny, features, split, [0], ("rooster",), vary="year")
    with pytest.raises(ValueError, match="unknown audio source"):
        sweep(tiny, features, split, [0], ("rooster",), audio_source="radio")
    with pytest.raises(ValueError, match="no tiles"):
        fused_sum_variance(tiny, features[:0], np.zeros(0), np.zeros(0), month=5, hour=6, audio_source="aporee")


def test_fused_sum_variance_is_the_sum_of_sigma2(tiny, split, features):
    v = fused_sum_variance(tiny, features, split.lat, split.lon, month=5, hour=6, audio_source="aporee")
    meta = MetadataBatch.from_values(lat=split.lat.tolist(), lon=split.lon.tolist(), month=5, hour=6,
                                     audio_source="aporee", caption_source="captioner_b")
    with torch.no_grad():
        want = tiny.fuse_image(features, meta)[1].double().exp().sum(1).numpy()
    assert v.shape == (len(split),) and np.allclose(v, want)
    assert np.array_equal(dominant_rows(split), np.arange(4))
    with pytest.raises(ValueError, match="unknown land cover"):
        dominant_rows(split, "moon")


def test_crowding_by_hand_and_its_variance_equalisation():
    s = -np.array([[0.0, 1.0, 3.0], [1.0, 0.5, 2.0], [3.0, 2.0, 0.2]])
    v = np.array([1.0, 2.0, 6.0])
    a, b, batch = 2.0, 4.0, 5
    got = crowding(s, v, a, b, batch)
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    shift = v - v.mean()
    want = [sum(sig(a * (s[i, j] + shift[i]) + b) for j in range(3) if j != i) * (batch - 1) / 2 for i in range(3)]
    np.testing.assert_allclose(got, want)
    # a query's own variance moves every one of its scores alike; crowding takes it out again
    c = np.array([1.0, -1.5, 0.5])  # more variance on a query lowers its whole row; crowding undoes that
    np.testing.assert_allclose(crowding(s - c[:, None], v + c, a, b, batch), got)
    with pytest.raises(ValueError, match="square"):
        crowding(s[:2], v, a, b, batch)
    with pytest.raises(ValueError, match="batch_size"):
        crowding(s, v, a, b, 1)


def test_uncertainty_correlations_with_model_scores_report_crowding():
    rng = np.random.default_rng(4)
    i2a, a2i, model = rng.standard_normal((3, 10, 10))
    probs = rng.dirichlet(np.ones(4), 10)
    v = rng.uniform(1, 2, 10)
    u = uncertainty_correlations(v, v, {"i2a": i2a, "a2i": a2i}, probs, model, (3.0, 1.0, 8))
    crowd = crowding(model, v, 3.0, 1.0, 8)
    assert u["image_vs_crowding"] == pytest.approx(spearmanr(v, crowd).statistic)
    assert u["crowding_vs_ambiguity"] == pytest.approx(spearmanr(crowd, ambiguity(i2a)).statistic)
    assert u["model_vs_oracle_ambiguity"] == pytest.approx(spearmanr(ambiguity(model), ambiguity(i2a)).statistic)
    assert "image_vs_crowding" not in uncertainty_correlations(v, v, {"i2a": i2a, "a2i": a2i}, probs)
    with pytest.raises(ValueError, match="shape"):
        uncertainty_correlations(v, v, {"i2a": i2a, "a2i": a2i}, probs, model[:3], (3.0, 1.0, 8))


def test_science_report_on_a_tiny_model(tiny, split, tmp_path):
    r = science_report(tiny, split, tiles=6, cache_dir=tmp_path)
    assert r["n"] == len(split) and r["hourly"]["tiles"] == 6 and r["hourly"]["pairs"] == 6 * 5
    assert r["seasonal"]["pairs"] == 6 and r["contrast"]["tiles"] == 4
    for v in (r["uncertainty"]["image_vs_ambiguity"], r["uncertainty"]["audio_vs_entropy"], r["hourly"]["median"],
              r["spread"]["split"]["cv_percent"], r["contrast"]["true_ratio"]):
        assert math.isfinite(v)
    assert r["contrast"]["true_ratio"] > 1  # the law's rooster crows at dawn
    assert -1 <= r["uncertainty"]["image_vs_crowding"] <= 1 and r["uncertainty"]["mean_crowding"] > 0
    g = r["hour_gain"]
    assert g["model_gain"] == pytest.approx(g["model_hour"] - g["model_none"])
    assert r["arrays"]["hourly_rho"].shape == (6, 5)
    assert list(tmp_path.glob("oracle-test-*.npz"))  # the oracle matrices were cached


def test_expected_ambiguity_reweights_the_gallery_by_the_query_law():
    from psm_model.uncertainty import expected_ambiguity

    # row 0: one clip far more likely than the rest -> a clip drawn from its law is rarely tied
    # row 1: a flat law -> every clip is tied with every other: ambiguity 1
    s = np.array([[9.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 2.0, 2.0]])
    e = expected_ambiguity(s)
    # row 0: clip 0 (weight 0.9) has share 1/3, clip 1 (0.1) share 2/3 -> 0.9/3 + 0.1*2/3
    assert e[0] == pytest.approx(0.9 / 3 + 0.1 * 2 / 3)
    assert e[1] == pytest.approx(1.0)
    assert e[2] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="square"):
        expected_ambiguity(np.ones((2, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        expected_ambiguity(-np.ones((2, 2)))
