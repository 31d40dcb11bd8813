"""Presets, overrides and config validation."""

from __future__ import annotations

import pytest

from psm_model import ModelConfig, create_model, preset_config


def test_presets_dims():
    tiny, demo, paper = (preset_config(n) for n in ("tiny", "demo", "paper"))
    assert (tiny.embed_dim, tiny.image.image_size, tiny.image.patch_size) == (32, 32, 8)
    assert (paper.embed_dim, paper.image.image_size, paper.image.patch_size, paper.image.width) == (
        512,
        224,
        16,
        768,
    )
    assert (paper.audio.sample_rate, paper.audio.clip_seconds, paper.audio.num_mel_bins) == (
        48_000,
        10,
        64,
    )
    assert paper.audio.enable_fusion and paper.text.max_length == 128 and paper.fusion.layers == 3
    assert paper.fusion.heads == 8 and paper.fusion.metadata_dropout == 0.5
    assert demo.text.backbone == "minilm" and demo.audio.sample_rate == 16_000
    assert (
        tiny.objective.init_a == 5.0
        and tiny.objective.init_b == 5.0
        and tiny.logvar_bias_init == -4.0
    )


def test_overrides_win():
    c = preset_config(
        "tiny",
        embed_dim=64,
        loss="infonce",
        image={"depth": 1},
        audio__hop_length=512,
        **{"text.num_layers": 2},
    )
    assert c.embed_dim == 64 and c.loss == "infonce" and c.image.depth == 1
    assert c.audio.hop_length == 512 and c.text.num_layers == 2
    assert preset_config("tiny").embed_dim == 32  # presets are not mutated
    model = create_model("tiny", embed_dim=16, seed=0)
    assert model.config.embed_dim == 16 and model.config.image.image_size == 32
    assert model.config.audio.sample_rate == 16_000


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"embed_dim": 0}, "embed_dim must be a positive integer"),
        ({"loss": "triplet"}, "unknown loss 'triplet'"),
        ({"colour": 1}, "unknown config override 'colour'"),
        ({"image": {"nope": 1}}, "unknown config override"),
        ({"image__patch_size": 5}, "must divide image.image_size"),
        ({"fusion__heads": 3}, "must divide embed_dim"),
        ({"audio__num_mel_bins": 32}, "must be 64 when audio.enable_fusion"),
        ({"audio__clip_seconds": 5}, "mel frames"),
        ({"text__backbone": "gpt"}, "unknown text.backbone"),
    ],
)
def test_bad_overrides(overrides, message):
    with pytest.raises(ValueError, match=message):
        preset_config("tiny", **overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        create_model("huge")


def test_round_trip_dict():
    c = preset_config("demo")
    again = ModelConfig.from_dict(c.to_dict())
    assert again == c and again.to_json() == c.to_json()
    with pytest.raises(ValueError, match="unknown config field"):
        ModelConfig.from_dict({"embed_dim": 8, "bogus": 1})
