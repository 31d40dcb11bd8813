"""The demo preset: the pretrained offline MiniLM text tower and the small audio/image towers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psm_model import MetadataBatch, create_model


@pytest.fixture(scope="module")
def demo():
    return create_model("demo", seed=0).eval()


def test_demo_shapes(demo):
    c = demo.config
    assert c.text.backbone == "minilm" and c.text.freeze_backbone
    assert all(not p.requires_grad for p in demo.text_tower.encoder.parameters())
    assert all(p.requires_grad for p in demo.text_tower.projection.parameters())
    with torch.no_grad():
        feats = demo.image_features(
            torch.rand(2, 3, c.image.image_size, c.image.image_size), gsd=10.0, zoom=3
        )
        mu_i, _ = demo.fuse_image(
            feats, MetadataBatch.from_values(month=5, hour=20, audio_source="inaturalist")
        )
        mu_a, lv_a = demo.encode_audio(
            [np.random.default_rng(0).standard_normal(16_000 * 5).astype(np.float32)], 16_000
        )
        mu_t, _ = demo.encode_text(["insects at night"])
    assert (
        mu_i.shape == (2, c.embed_dim)
        and mu_a.shape == (1, c.embed_dim)
        and mu_t.shape == (1, c.embed_dim)
    )
    assert (lv_a.exp() > 0).all()


def test_minilm_backbone_is_pretrained(demo):
    # Paraphrases are closer than unrelated sentences in the frozen MiniLM space: real weights, offline.
    tokens = demo.tokenize(
        ["the sound of insects buzzing", "insects chirping at night", "a car horn in traffic"]
    )
    with torch.no_grad():
        pooled = torch.nn.functional.normalize(demo.text_tower.backbone_features(tokens), dim=1)
    sims = pooled @ pooled.T
    assert float(sims[0, 1]) > float(sims[0, 2]) + 0.1


def test_frozen_text_cache_matches_direct_path(demo):
    texts = ["sheep on a farm", "rooster at dawn", "sheep on a farm"]
    demo.text_tower.clear_cache()
    with torch.no_grad():
        cached = demo.encode_text(texts)[0]
        again = demo.encode_text(texts)[0]
        direct = demo.encode_tokens(demo.tokenize(texts))[0]
    assert len(demo.text_tower._cache) == 2
    assert torch.allclose(cached, direct, atol=1e-5) and torch.equal(cached, again)
