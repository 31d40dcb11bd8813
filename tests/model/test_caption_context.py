"""Captions with and without context: the index's caption_named column, and the same world either way."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from psm_model.bayes import CAPTION_NAMED
from psm_model.evaluate import evaluate
from psm_model.features import load_split_index
from psm_model.metadata import AUDIO_SOURCES
from psm_model.world import BuildConfig, build_world
from psm_model.world.captions import _MONTHS, _SOURCE_TAGS, _WHEN, time_of_day

SMALL = dict(seed=5, samples=60, image_size=8, sample_rate=8000, clip_seconds=0.5, shard_size=30, workers=1)
ALL_TAGS = {t for tags in _SOURCE_TAGS.values() for t in tags}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[bool, Path]:
    root = tmp_path_factory.mktemp("context")
    for ctx in (False, True):
        build_world(root / str(ctx), BuildConfig(caption_context=ctx, **SMALL))
    return {ctx: root / str(ctx) for ctx in (False, True)}


def _index(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path / "index.parquet").sort_values("index").reset_index(drop=True)


def _words(caption: str) -> set[str]:
    return set(re.findall(r"[a-z]+", caption.lower()))


def test_index_records_what_each_caption_names(worlds):
    for ctx, path in worlds.items():
        named = [set(x) for x in _index(path)["caption_named"]]
        assert all(s <= set(CAPTION_NAMED) for s in named)
        assert json.loads((path / "world.json").read_text())["build"]["caption_context"] is ctx
        if not ctx:
            assert all(s <= {"landcover"} for s in named) and any(named)
    on = _index(worlds[True])
    said = {w: [w in s for s in on["caption_named"]] for w in CAPTION_NAMED}
    assert any(said["month"]) and any(said["time_of_day"])
    assert said["audio_source"] == list(on["caption_source"] == "metadata")  # a tag in every tag caption


def test_named_context_is_in_the_caption_text(worlds):
    on = _index(worlds[True])
    for r in on.itertuples():
        named, words, tod = set(r.caption_named), _words(r.caption), time_of_day(int(r.hour))
        assert (_MONTHS[int(r.month) - 1] in words) == ("month" in named), r.caption
        if r.caption_source == "metadata":
            tags = r.caption.split(", ")
            assert tags[0] in _SOURCE_TAGS[r.audio_source]
            assert (tod in tags) == ("time_of_day" in named), r.caption
        elif r.caption_source == "captioner_b":
            assert r.caption.endswith(_WHEN[tod] + ".") == ("time_of_day" in named), r.caption


def test_no_month_time_or_source_tag_without_context(worlds):
    off = _index(worlds[False])
    months, whens = set(_MONTHS), set(_WHEN.values())
    for r in off.itertuples():
        assert not _words(r.caption) & months, r.caption
        assert not any(r.caption.rstrip(".").endswith(" " + w) for w in whens), r.caption
        if r.caption_source == "metadata":
            tags = set(r.caption.split(", "))
            assert not tags & ALL_TAGS and not tags & set(_WHEN), r.caption


def test_context_changes_only_the_captions(worlds):
    off, on = _index(worlds[False]), _index(worlds[True])
    for col in ("key", "month", "hour", "audio_source", "caption_source", "split", "shard", "row"):
        assert off[col].tolist() == on[col].tolist(), col
    assert [list(c) for c in off["classes"]] == [list(c) for c in on["classes"]]
    assert (off["caption"] != on["caption"]).any()
    for shard in sorted({*off["shard"]}):
        with np.load(worlds[False] / shard) as a, np.load(worlds[True] / shard) as b:
            assert np.array_equal(a["audio"], b["audio"]) and np.array_equal(a["images"], b["images"])


def test_index_split_scores_the_oracle_with_text(worlds):
    data = load_split_index(worlds[True], "train")
    idx = _index(worlds[True])
    rows = idx[idx["split"] == "train"]
    assert data.caption_named == [tuple(x) for x in rows["caption_named"]]
    assert [AUDIO_SOURCES[s] for s in data.audio_source] == rows["audio_source"].tolist()
    assert data.images.shape[0] == len(data) and data.images.size == 0
    res = evaluate(None, data, zooms=(1,), text=(False, True), metadata=("all", "none"))
    assert {(r["with_text"], r["metadata"]) for r in res.rows} == {(t, m) for t in (False, True) for m in ("all", "none")}
    assert res.get("oracle", "a2i", 1, True, "all")["r_at_10"] >= res.get("oracle", "a2i", 1, False, "all")["r_at_10"]


def test_caption_aware_oracle_on_a_built_world(tmp_path):
    """On a real world build, the caption-aware oracle finds the true clip from its caption far
    better than the oracle without text, and the caption-source leak shows in A2I."""
    build_world(tmp_path / "w", BuildConfig(**{**SMALL, "samples": 400, "shard_size": 200}))
    data = load_split_index(tmp_path / "w", "train")
    res = evaluate(None, data, zooms=(1,), text=(False, True), metadata=("all", "all-caption_source"))
    i2a_text = res.get("oracle", "i2a", 1, True, "all")
    i2a_plain = res.get("oracle", "i2a", 1, False, "all")
    # a caption names the clip's exact sound set: only clips with that set stay ahead
    assert i2a_text["r_at_10"] > 0.9 > i2a_plain["r_at_10"]
    assert i2a_text["median_rank"] < 0.5 * i2a_plain["median_rank"]
    # the caption's style gives away its source; a gallery fused with it ranks the match higher
    leak = res.get("oracle", "a2i", 1, True, "all")["r_at_10"]
    no_leak = res.get("oracle", "a2i", 1, True, "all-caption_source")["r_at_10"]
    assert leak > no_leak
