"""Checkpoints: round trip, content hash, and clear failures on bad files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from psm_model import (
    CheckpointError,
    load_checkpoint,
    model_version,
    read_checkpoint_info,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    version = save_checkpoint(tiny, path, metrics={"i2a_r10": 0.5}, extra={"note": "test"})
    return path, version


def test_round_trip_gives_identical_embeddings(saved, tiny, toy):
    path, version = saved
    model, info = load_checkpoint(path, map_location="cpu")
    assert info["version"] == version and len(version) == 16
    assert (
        info["preset"] == "tiny"
        and info["metrics"] == {"i2a_r10": 0.5}
        and info["extra"] == {"note": "test"}
    )
    assert info["config"]["embed_dim"] == tiny.config.embed_dim
    assert model.config == tiny.config and not model.training
    images, meta, waves = toy.images(3), toy.meta(3), toy.waves(3)
    with torch.no_grad():
        pairs = [
            (tiny.encode_image(images, 10.0, 3, meta), model.encode_image(images, 10.0, 3, meta)),
            (tiny.encode_text(toy.captions[:3]), model.encode_text(toy.captions[:3])),
            (tiny.encode_audio(waves, toy.sr), model.encode_audio(waves, toy.sr)),
        ]
    for (mu_a, lv_a), (mu_b, lv_b) in pairs:
        assert torch.equal(mu_a, mu_b) and torch.equal(lv_a, lv_b)
    assert model_version(model) == version
    assert model.tokenizer.to_json() == tiny.tokenizer.to_json()


def test_version_is_content_hash(saved, tmp_path, fresh_tiny):
    path, version = saved
    assert (
        save_checkpoint(fresh_tiny, tmp_path / "a.safetensors") == version
    )  # same seed, same weights
    with torch.no_grad():
        fresh_tiny.criterion.pcme.a.add_(1.0)
    assert save_checkpoint(fresh_tiny, tmp_path / "b.safetensors") != version
    assert read_checkpoint_info(path)["version"] == version


def test_truncated_file(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 7):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated"):
            load_checkpoint(bad)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a PSM model checkpoint"):
        load_checkpoint(foreign)


def _rewrite(src, dst, config_patch=None, drop_key=None, tamper_key=None):
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    state = load_file(str(src))
    if config_patch:
        config = json.loads(meta["config"])
        for section, values in config_patch.items():
            if isinstance(values, dict):
                config[section].update(values)
            else:
                config[section] = values
        meta["config"] = json.dumps(config)
    if drop_key:
        state.pop(drop_key)
    if tamper_key:
        state[tamper_key] = state[tamper_key] + 1.0
    save_file(state, str(dst), metadata=meta)


def test_config_weights_mismatch(saved, tmp_path):
    path, _ = saved
    wider = tmp_path / "wider.safetensors"
    _rewrite(path, wider, config_patch={"embed_dim": 64})
    with pytest.raises(ValueError, match="do not match the config"):
        load_checkpoint(wider)
    deeper = tmp_path / "deeper.safetensors"
    _rewrite(path, deeper, config_patch={"image": {"depth": 3}})
    with pytest.raises(ValueError, match="missing .*blocks.2"):
        load_checkpoint(deeper)
    dropped = tmp_path / "dropped.safetensors"
    _rewrite(path, dropped, drop_key="criterion.pcme.a")
    with pytest.raises(ValueError, match="criterion.pcme.a"):
        load_checkpoint(dropped)
    invalid = tmp_path / "invalid.safetensors"
    _rewrite(path, invalid, config_patch={"loss": "triplet"})
    with pytest.raises(ValueError, match="invalid config"):
        load_checkpoint(invalid)


def test_tampered_weights_fail_hash(saved, tmp_path):
    path, _ = saved
    tampered = tmp_path / "tampered.safetensors"
    _rewrite(path, tampered, tamper_key="image_head.mean.direct.bias")
    with pytest.raises(ValueError, match="content hash"):
        load_checkpoint(tampered)
