"""Training smoke run on a tiny world: the loss goes down, checkpoints load, resume continues."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from psm_model import load_checkpoint
from psm_model.features import load_split
from psm_model.train import cosine_warmup, settings_for, train, training_loss


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from psm_model.world.build import BuildConfig, build_world

    out = tmp_path_factory.mktemp("tiny_world")
    cfg = BuildConfig(seed=3, samples=72, image_size=32, clip_seconds=1.0, cell_km=1.0,
                      split_fractions=(0.6, 0.2, 0.2), shard_size=40, workers=1)
    build_world(out, cfg)
    return out


def _fixed_batch_loss(model, data, settings):
    model.eval()  # no metadata dropout; the crops and zooms come from a fixed generator
    with torch.no_grad():
        idx = np.arange(min(16, len(data)))
        return float(training_loss(model, data, idx, settings, True, torch.Generator().manual_seed(0))["loss"])


def test_tiny_training_lowers_the_loss_and_writes_loadable_checkpoints(tiny_world, tmp_path):
    from psm_model import create_model

    s = settings_for("tiny", epochs=12, batch_size=16, lr=2e-3)
    before_model = create_model("tiny", seed=0, pretrained=False)
    data = load_split(tiny_world, "train", before_model, cache_dir=tmp_path / "cache")
    before = _fixed_batch_loss(before_model, data, s)
    seen = []
    result = train(tiny_world, tmp_path / "run", preset="tiny", epochs=12, batch_size=16, lr=2e-3, seed=0,
                   pretrained=False, cache_dir=tmp_path / "cache", progress=seen.append, settings={"val_every": 20})
    model, info = load_checkpoint(result.last_checkpoint_path)
    after = _fixed_batch_loss(model, data, s)
    assert after < before - 0.05, (before, after)
    best, best_info = load_checkpoint(result.checkpoint_path)
    assert best_info["version"] == result.version
    assert best_info["metrics"]["val_i2a_r10"] == pytest.approx(result.best_metrics["val_i2a_r10"])
    assert info["extra"]["use_metadata"] is True
    log = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in log]
    assert kinds[0] == "start" and kinds[-1] == "end" and "train" in kinds and kinds.count("val") == len(result.history)
    assert any(d.get("stage") == "train" for d in seen) and any(d.get("stage") == "validate" for d in seen)
    assert result.steps == 12 * (len(data) // 16)


def test_resume_continues_from_the_saved_step(tiny_world, tmp_path):
    cache = tmp_path / "cache"
    first = train(tiny_world, tmp_path / "a", preset="tiny", epochs=1, batch_size=16, pretrained=False,
                  cache_dir=cache, loss="infonce", use_metadata=False)
    resumed = train(tiny_world, tmp_path / "a", preset="tiny", epochs=2, batch_size=16, pretrained=False,
                    cache_dir=cache, resume=first.last_checkpoint_path)
    assert resumed.steps == 2 * first.steps
    _, info = load_checkpoint(resumed.last_checkpoint_path)
    assert info["config"]["loss"] == "infonce" and info["extra"]["use_metadata"] is False


def test_schedule_and_settings():
    assert cosine_warmup(0, 100, 10) == pytest.approx(0.1)
    assert cosine_warmup(9, 100, 10) == pytest.approx(1.0)
    assert cosine_warmup(55, 100, 10) == pytest.approx(0.5)
    assert cosine_warmup(100, 100, 10) == pytest.approx(0.0)
    assert settings_for("demo").batch_size == 128 and settings_for("paper").lr == 5e-5
    with pytest.raises(ValueError, match="unknown training setting"):
        settings_for("tiny", bogus=1)
    with pytest.raises(ValueError, match="batch_size"):
        settings_for("tiny", batch_size=1)
