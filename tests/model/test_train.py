"""Training smoke run on a tiny world: the loss goes down, checkpoints load, resume continues."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from psm_model import load_checkpoint
from psm_model.features import load_split
from psm_model.train import cosine_warmup, settings_for, stuck_at_chance, train, training_loss


def write_toy_world(out, n: int = 72, size: int = 32, sr: int = 16_000, seed: int = 3) -> None:
    """A small dataset in the ``psm world build`` layout, written directly (fast): each clip is a tone
    whose pitch follows its sound class and each tile is tinted by the same class."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from psm_model.metadata import AUDIO_SOURCES, CAPTION_SOURCES
    from psm_model.world.landcover import N_LANDCOVER
    from psm_model.world.sounds import SOUND_CLASSES

    rng = np.random.default_rng(seed)
    (out / "shards").mkdir(parents=True)
    cls = rng.integers(0, len(SOUND_CLASSES), n)
    split = np.array(["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    t = np.arange(sr) / sr
    audio = np.stack([0.4 * np.sin(2 * np.pi * (200 + 150 * c) * t) + 0.05 * rng.standard_normal(sr) for c in cls])
    images = rng.integers(0, 80, (n, 3, size, size, 3)).astype(np.uint8)
    images[..., 0] += (cls * 10).astype(np.uint8)[:, None, None, None]
    shard = []
    for s in ("train", "val", "test"):
        idx = np.nonzero(split == s)[0]
        name = f"shards/{s}-00000.npz"
        np.savez(out / name, index=idx, images=images[idx], audio=(audio[idx] * 32767).astype(np.int16))
        shard += [(i, name, r) for r, i in enumerate(idx)]
    shard.sort()
    table = pa.table({
        "key": [f"t-{i}" for i in range(n)], "index": np.arange(n), "lat": rng.uniform(-50, 50, n),
        "lon": rng.uniform(-150, 150, n), "month": rng.integers(1, 13, n), "hour": rng.integers(0, 24, n),
        "audio_source": [AUDIO_SOURCES[i] for i in rng.integers(0, 4, n)],
        "caption_source": [CAPTION_SOURCES[i] for i in rng.integers(0, 3, n)],
        "caption": [f"the sound of {SOUND_CLASSES[c]}" for c in cls],
        "classes": [[SOUND_CLASSES[c]] for c in cls], "split": list(split),
        "shard": [x[1] for x in shard], "row": np.array([x[2] for x in shard], dtype=np.int32),
        "fractions": [list(f) for f in rng.dirichlet(np.ones(N_LANDCOVER), n)],
    })
    pq.write_table(table, out / "index.parquet")
    meta = {"world": {"seed": seed}, "index": "index.parquet", "counts": {s: int((split == s).sum()) for s in ("train", "val", "test")},
            "build": {"zooms": [1, 3, 5], "sample_rate": sr, "gsd": 10.0, "image_size": size, "imagery": "sentinel"}}
    (out / "world.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_world")
    write_toy_world(out)
    return out


def _fixed_batch_loss(model, data, settings):
    model.eval()  # no metadata dropout; the crops and zooms come from a fixed generator
    with torch.no_grad():
        idx = np.arange(min(16, len(data)))
        return float(training_loss(model, data, idx, settings, True, torch.Generator().manual_seed(0))["loss"])


def test_tiny_training_lowers_the_loss_and_writes_loadable_checkpoints(tiny_world, tmp_path):
    from psm_model import create_model

    s = settings_for("tiny", epochs=8, batch_size=16, lr=2e-3)
    before_model = create_model("tiny", seed=0, pretrained=False)
    data = load_split(tiny_world, "train", before_model, cache_dir=tmp_path / "cache")
    before = _fixed_batch_loss(before_model, data, s)
    seen = []
    result = train(tiny_world, tmp_path / "run", preset="tiny", epochs=8, batch_size=16, lr=2e-3, seed=0,
                   pretrained=False, cache_dir=tmp_path / "cache", progress=seen.append, settings={"val_every": 10})
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
    assert result.steps == 8 * (len(data) // 16)


def test_resume_continues_from_the_saved_step(tiny_world, tmp_path):
    cache = tmp_path / "cache"
    first = train(tiny_world, tmp_path / "a", preset="tiny", epochs=1, batch_size=16, pretrained=False,
                  cache_dir=cache, loss="infonce", use_metadata=False)
    resumed = train(tiny_world, tmp_path / "a", preset="tiny", epochs=2, batch_size=16, pretrained=False,
                    cache_dir=cache, resume=first.last_checkpoint_path)
    assert resumed.steps == 2 * first.steps
    _, info = load_checkpoint(resumed.last_checkpoint_path)
    assert info["config"]["loss"] == "infonce" and info["extra"]["use_metadata"] is False


def test_max_minutes_fits_the_schedule_and_stops(tiny_world, tmp_path):
    res = train(tiny_world, tmp_path / "t", preset="tiny", epochs=200, batch_size=16, pretrained=False,
                cache_dir=tmp_path / "c", max_minutes=0.15)
    assert res.stopped_early and 0 < res.steps < 200 * 2
    assert res.seconds < 120  # the 9 s loop budget plus loading, the final validation and saving
    log = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in log if r["kind"] == "train"]
    assert lrs[-1] < 0.5 * max(lrs)  # the cosine was fitted to the time budget, not to 200 epochs


def test_min_steps_is_a_floor_under_the_time_budget(tiny_world, tmp_path):
    # a budget far too short for this machine: without a floor the run stops within a few steps
    short = train(tiny_world, tmp_path / "s", preset="tiny", epochs=200, batch_size=16, pretrained=False,
                  cache_dir=tmp_path / "c", max_minutes=0.0005)
    assert short.stopped_early and short.steps < 30
    floored = train(tiny_world, tmp_path / "f", preset="tiny", epochs=200, batch_size=16, pretrained=False,
                    cache_dir=tmp_path / "c", max_minutes=0.0005, min_steps=30)
    assert floored.steps == 30
    log = [json.loads(x) for x in (tmp_path / "f" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "warning" and "floor of 30 steps" in r["message"] for r in log)
    lrs = [r["lr"] for r in log if r["kind"] == "train"]
    assert lrs[-1] < 0.05 * max(lrs)  # the cosine was fitted to the floor, so it has decayed at step 30
    with pytest.raises(ValueError, match="min_steps"):
        train(tiny_world, tmp_path / "z", preset="tiny", epochs=1, pretrained=False, cache_dir=tmp_path / "c",
              max_minutes=1.0, min_steps=0)


def test_steps_sets_the_run_length_and_the_schedule_spans_it(tiny_world, tmp_path):
    # 36 training samples in batches of 16: 2 steps an epoch, so 5 steps end part-way through epoch 3
    from typer.testing import CliRunner

    from worker.cli import app

    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--dataset", str(tiny_world), "--out", str(run), "--preset", "tiny",
                                 "--epochs", "1", "--steps", "5", "--batch-size", "16", "--cache-dir", str(tmp_path / "c"),
                                 "--threads", "1"])
    assert r.exit_code == 0, r.output
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["total_steps"] == 5 and log[-1]["kind"] == "end" and log[-1]["step"] == 5
    assert not log[-1]["stopped_early"]
    lrs = [rec["lr"] for rec in log if rec["kind"] == "train"]
    assert len(lrs) == 5 and lrs[-1] == pytest.approx(0.0, abs=1e-12)  # the cosine reached its end at step 5
    with pytest.raises(ValueError, match="steps must be >= 1"):
        settings_for("tiny", steps=0)


def test_schedule_and_settings():
    assert cosine_warmup(0, 100, 10) == pytest.approx(0.1)
    assert cosine_warmup(9, 100, 10) == pytest.approx(1.0)
    assert cosine_warmup(55, 100, 10) == pytest.approx(0.5)
    assert cosine_warmup(100, 100, 10) == pytest.approx(0.0)
    assert settings_for("demo").batch_size == 64 and settings_for("paper").lr == 5e-5
    with pytest.raises(ValueError, match="unknown training setting"):
        settings_for("tiny", bogus=1)
    with pytest.raises(ValueError, match="batch_size"):
        settings_for("tiny", batch_size=1)


def test_cli_train_then_eval_writes_results(tiny_world, tmp_path):
    from typer.testing import CliRunner

    from worker.cli import app

    runner = CliRunner()
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "--dataset", str(tiny_world), "--out", str(run), "--preset", "tiny",
                            "--epochs", "1", "--batch-size", "16", "--cache-dir", str(tmp_path / "c"), "--threads", "1",
                            "--weight-decay", "0.07"])
    assert r.exit_code == 0, r.output
    assert "best checkpoint" in r.output and (run / "best.safetensors").is_file()
    start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert start["kind"] == "start" and start["settings"]["weight_decay"] == 0.07
    ev = tmp_path / "eval"
    r = runner.invoke(app, ["eval", "--checkpoint", str(run / "best.safetensors"), "--dataset", str(tiny_world),
                            "--out", str(ev), "--metadata", "all,none", "--zooms", "1,5", "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    rows = json.loads((ev / "results.json").read_text())["rows"]
    assert {(x["scorer"], x["zoom"], x["with_text"], x["metadata"]) for x in rows} >= {
        ("model", 5, True, "none"), ("oracle", 1, False, "all")
    }
    assert (ev / "ranks.npz").is_file() and "| 5 | yes | none |" in (ev / "results.md").read_text()
    r = runner.invoke(app, ["eval", "--checkpoint", str(run / "best.safetensors"), "--dataset", str(tiny_world),
                            "--out", str(ev), "--metadata", "weather"])
    assert r.exit_code == 2 and "unknown metadata condition" in r.output


def test_training_follows_the_alpha_schedule_and_calibrates_b(tiny_world, tmp_path):
    """alpha is 0 for the first half, then full; b starts where a typical negative has p = 1 / B."""
    res = train(tiny_world, tmp_path / "s", preset="tiny", epochs=4, batch_size=8, pretrained=False,
                cache_dir=tmp_path / "c", objective={"alpha": 0.1, "alpha_start": 0.5, "alpha_ramp": 0.0})
    log = [json.loads(x) for x in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    steps = [(r["step"], r["alpha"]) for r in log if r["kind"] == "train"]
    assert len(steps) == res.steps
    for step, alpha in steps:  # alpha is set from the progress before the step: (step - 1) / total
        assert alpha == (0.0 if (step - 1) / res.steps < 0.5 else pytest.approx(0.1)), (step, alpha)
    (cal,) = [r for r in log if r["kind"] == "calibrate"]
    assert cal["b"] != pytest.approx(5.0)  # calibration is on by default and moved b


def test_calibrated_b_puts_a_typical_negative_at_the_batch_prior(tiny_world, tmp_path):
    import math

    from psm_model import create_model
    from psm_model.distance import csd
    from psm_model.train import calibrate_match_shift

    model = create_model("tiny", seed=0, pretrained=False)
    data = load_split(tiny_world, "train", model, cache_dir=tmp_path / "cache")
    s = settings_for("tiny", batch_size=16)
    idx = np.arange(16)
    b = calibrate_match_shift(model, data, idx, s, False, torch.Generator().manual_seed(0))
    assert b is not None and model.criterion.pcme.b.item() == pytest.approx(b)
    model.eval()
    with torch.no_grad():
        img = model.encode_image(data.tiles(idx, 0), data.gsd, torch.ones(16), data.metadata(idx, ()))
        aud = model.encode_audio_inputs(data.audio(idx))
        d = csd(img[0], img[1].exp(), aud[0], aud[1].exp())
    a = model.match_params()[0]
    off = d[~torch.eye(16, dtype=torch.bool)]
    p_typical = 1.0 / (1.0 + math.exp(-(-a * float(off.median()) + b)))
    # the calibration batch used training crops and zooms; here zoom 1 without augmentation
    assert 0.2 / 16 < p_typical < 5.0 / 16, p_typical
    # without it, the facts-page b = 5 leaves every negative (and positive) near probability 0
    assert 1.0 / (1.0 + math.exp(-(-a * float(off.median()) + 5.0))) < 1e-6


def test_cli_train_set_overrides_the_model_config(tiny_world, tmp_path):
    from typer.testing import CliRunner

    from worker.cli import app

    runner = CliRunner()
    base = ["train", "--dataset", str(tiny_world), "--preset", "tiny", "--epochs", "1", "--batch-size", "16",
            "--cache-dir", str(tmp_path / "c"), "--threads", "1"]
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "r"), "--set", "objective.alpha=0",
                            "--set", "objective.init_a=7.5"])
    assert r.exit_code == 0, r.output
    _, info = load_checkpoint(tmp_path / "r" / "best.safetensors")
    assert info["config"]["objective"]["alpha"] == 0 and info["config"]["objective"]["init_a"] == 7.5
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "x"), "--set", "objective.alpha"])
    assert r.exit_code == 2 and "KEY=VALUE" in r.output
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "y"), "--set", "objective.bogus=1"])
    assert r.exit_code == 2 and "unknown config override" in r.output


def test_a_model_stuck_at_chance_is_told_apart_from_a_slow_start():
    def val(*r10):
        return [{"kind": "train", "loss": 0.2}] + [{"kind": "val", "val_i2a_r10": v} for v in r10]

    # the demo preset at embed_dim 512 and lr 1e-3 (collapsed), and at lr 3e-4 (slow, then learning)
    assert stuck_at_chance(val(0.100, 0.099, 0.099))
    assert not stuck_at_chance(val(0.102, 0.111, 0.138))
    assert not stuck_at_chance(val(0.100, 0.099))  # too early to say
    assert not stuck_at_chance(val(0.147, 0.168, 0.193))
