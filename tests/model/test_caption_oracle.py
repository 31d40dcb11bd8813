"""The caption-aware oracle (evaluation with text) and the all-caption_source metadata condition."""

from __future__ import annotations

import numpy as np
import pytest

from psm_model.bayes import caption_oracle_scores, oracle_scores
from psm_model.evaluate import (
    DEFAULT_CONDITIONS,
    evaluate,
    metadata_keep,
    results_markdown,
)
from psm_model.features import SplitData
from psm_model.metadata import METADATA_TYPES
from psm_model.metrics import rank_counts
from psm_model.world.landcover import LANDCOVER_CLASSES, N_LANDCOVER
from psm_model.world.law import law
from psm_model.world.sampler import draw_set
from psm_model.world.sounds import SOUND_CLASSES


def _onehot(*covers: str) -> np.ndarray:
    fr = np.zeros((len(covers), N_LANDCOVER))
    for i, c in enumerate(covers):
        fr[i, LANDCOVER_CLASSES.index(c)] = 1.0
    return fr


def _ones(n: int) -> dict[str, np.ndarray]:
    return {"i2a": np.ones((n, n)), "a2i": np.ones((n, n))}


def _pair(named: list[tuple[str, ...]] | None, keep: tuple[str, ...], **over) -> np.ndarray:
    """A2I caption oracle of two samples at the same place with the same sound set (base score 1)."""
    args = {
        "fractions": _onehot("forest", "forest"),
        "month": np.array([5, 5]),
        "hour": np.array([8, 8]),
        "source": np.array([1, 1]),
        "caption_source": np.array([0, 0]),
        **over,
    }
    return caption_oracle_scores(_ones(2), [("birdsong",), ("birdsong",)], named, keep=keep, **args)["a2i"]


def test_i2a_puts_the_named_set_first():
    classes = [("birdsong",), ("traffic",), ("traffic",), ("rain", "wind"), ("rain", "wind"), ("dog",)]
    n = len(classes)
    base = {"i2a": np.random.default_rng(0).uniform(0.1, 10.0, (n, n)), "a2i": np.ones((n, n))}
    base["i2a"][0, 1:] = 100.0  # clips of other sets score far above the true match without text
    out = caption_oracle_scores(base, classes, [()] * n, _onehot(*["forest"] * n), np.full(n, 5), np.full(n, 8),
                                np.zeros(n, int), np.zeros(n, int), keep=METADATA_TYPES)
    same = np.array([[a == b for b in classes] for a in classes])
    assert np.array_equal(out["i2a"][same], base["i2a"][same]) and (out["i2a"][~same] == -1.0).all()
    counts = rank_counts(out["i2a"])
    assert counts.better[0] == 0 and counts.tied[0] == 0  # unique set: rank 1
    assert counts.better[5] == 0 and counts.tied[5] == 0
    assert rank_counts(base["i2a"]).better[0] == n - 1  # without the caption it ranked last


def test_named_month_only_counts_when_the_gallery_is_given_month():
    other = {"month": np.array([5, 9])}
    named = [("month",), ()]
    kept = _pair(named, ("month",), **other)
    assert kept[0, 1] == 0.0 and kept[0, 0] == 1.0  # clip 0's caption says May; image 1 is September
    assert kept[1, 0] == 1.0  # clip 1's caption names no month
    assert (_pair(named, ("hour", "audio_source", "latlon"), **other) == 1.0).all()
    assert (_pair([(), ()], ("month",), **other) == 1.0).all()


def test_named_time_of_day_is_checked_by_the_hour_bucket():
    named = [("time_of_day",), ()]
    assert _pair(named, ("hour",), hour=np.array([6, 7]))[0, 1] == 0.0  # dawn vs morning
    assert _pair(named, ("hour",), hour=np.array([8, 11]))[0, 1] == 1.0  # both morning
    assert _pair(named, ("month",), hour=np.array([6, 7]))[0, 1] == 1.0  # hour not given


def test_named_audio_source_only_counts_when_kept():
    named = [("audio_source",), ()]
    assert _pair(named, ("audio_source",), source=np.array([1, 2]))[0, 1] == 0.0
    assert _pair(named, ("caption_source",), source=np.array([1, 2]))[0, 1] == 1.0


def test_caption_source_only_counts_when_kept_even_for_older_worlds():
    cs = {"caption_source": np.array([0, 2])}
    for named in ([(), ()], None):
        assert (_pair(named, ("caption_source",), **cs) == np.eye(2)).all()
        assert (_pair(named, metadata_keep("all-caption_source"), **cs) == 1.0).all()


def test_named_place_is_always_checked():
    fr = {"fractions": _onehot("forest", "urban")}
    assert (_pair([("landcover",), ("landcover",)], (), **fr) == np.eye(2)).all()
    assert (_pair([(), ()], (), **fr) == 1.0).all()
    assert (_pair(None, (), **fr) == 1.0).all()  # older world: unknown whether the place was named


def test_caption_oracle_rejects_bad_inputs():
    with pytest.raises(ValueError, match="unknown caption_named items"):
        _pair([("weather",), ()], ())
    with pytest.raises(ValueError, match="one sound set and caption entry per sample"):
        _pair([()], ())


def _world_split(n: int = 80, seed: int = 0) -> SplitData:
    rng = np.random.default_rng(seed)
    fr = rng.dirichlet(np.full(N_LANDCOVER, 0.3), size=n)
    lat, month, hour, source = rng.uniform(-60, 60, n), rng.integers(1, 13, n), rng.integers(0, 24, n), rng.integers(0, 4, n)
    p = law(fr, lat, month, hour, source)
    classes = [tuple(SOUND_CLASSES[c] for c in draw_set(p[i], rng)) for i in range(n)]
    named = [tuple(w for w in ("landcover", "month", "time_of_day", "audio_source") if rng.random() < 0.5)
             for _ in range(n)]
    return SplitData(
        name="test", keys=np.array([f"k{i}" for i in range(n)]), lat=lat, lon=rng.uniform(-170, 170, n),
        month=month, hour=hour, audio_source=source, caption_source=rng.integers(0, 3, n),
        captions=["" for _ in range(n)], classes=classes, images=np.empty((n, 0, 0, 0, 3), np.uint8), zooms=(1, 3),
        gsd=10.0, mel=np.empty((n, 1, 0, 0), np.float16), is_longer=np.zeros(n, bool), fusion_channels=1,
        text_features=None, fractions=fr, caption_named=named,
    )


def test_evaluate_scores_the_caption_oracle_beside_text_rows(tmp_path):
    data = _world_split()
    metas = ("all", "all-caption_source", "none")
    res = evaluate(None, data, zooms=(1, 3), text=(False, True), metadata=metas, cache_dir=tmp_path)
    assert len(res.rows) == 2 * 2 * 3 * 2  # zooms x text x metadata x directions, all oracle
    assert {(r["with_text"], r["metadata"]) for r in res.rows if r["zoom"] == 3} == {
        (t, m) for t in (False, True) for m in metas
    }
    rk = res.ranks
    for m in metas:
        for d in ("i2a", "a2i"):
            assert (rk[f"oracle/{d}/z1/text/{m}"] <= rk[f"oracle/{d}/z1/notext/{m}"]).all()
        assert np.array_equal(rk[f"oracle/i2a/z1/text/{m}"], rk["oracle/i2a/z1/text/none"])  # the set decides
    assert (rk["oracle/a2i/z1/text/all"] <= rk["oracle/a2i/z1/text/all-caption_source"]).all()
    assert (rk["oracle/a2i/z1/text/all"] < rk["oracle/a2i/z1/text/all-caption_source"]).any()
    base = oracle_scores(data.fractions, data.lat, data.month, data.hour, data.audio_source, data.classes, known=())
    assert (rk["oracle/a2i/z1/text/none"] < rank_counts(base["a2i"]).ranks()).any()  # the named place helps
    names = sorted(p.name for p in tmp_path.glob("oracle-text-*.npz"))
    assert names == ["oracle-text-test-audio_source+caption_source+month+hour.npz",
                     "oracle-text-test-audio_source+month+hour.npz", "oracle-text-test-none.npz"]
    # Other captions, same keys: the cache must not serve the old scores.
    data.caption_named = [()] * len(data)
    again = evaluate(None, data, zooms=(1,), text=(True,), metadata=("none",), cache_dir=tmp_path)
    assert np.array_equal(again.ranks["oracle/a2i/z1/text/none"], again.ranks["oracle/a2i/z1/notext/none"])


def test_results_markdown_pairs_text_rows_with_the_text_oracle():
    def row(scorer, text, r):
        return {"scorer": scorer, "direction": "i2a", "zoom": 1, "with_text": text, "metadata": "all-caption_source",
                "r_at_10": r, "median_rank": 10.0, "n": 100}

    md = results_markdown([row("model", True, 0.5), row("oracle", False, 0.25), row("oracle", True, 0.75)])
    text_line = next(line for line in md.splitlines() if line.startswith("| 1 | yes |"))
    assert "0.750" in text_line and "0.250" not in text_line
    oracle_only = results_markdown([row("oracle", False, 0.25), row("oracle", True, 0.75)])
    assert "| 1 | yes | all-caption_source |" in oracle_only and "| 1 | no | all-caption_source |" in oracle_only


def test_all_but_caption_source_condition_and_defaults():
    assert metadata_keep("all-caption_source") == tuple(t for t in METADATA_TYPES if t != "caption_source")
    assert "all-caption_source" not in DEFAULT_CONDITIONS  # the default evaluation is unchanged
    assert metadata_keep("all") == METADATA_TYPES and metadata_keep("none") == ()
    with pytest.raises(ValueError, match="all-caption_source"):
        metadata_keep("all-month")
