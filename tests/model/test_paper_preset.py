"""The paper preset builds the published architecture from config (no weights on this machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psm_model import MetadataBatch, create_model


@pytest.mark.slow
def test_paper_architecture_from_config():
    model = create_model("paper", seed=0).eval()
    c = model.config
    enc = model.image_encoder
    assert (c.embed_dim, c.image.image_size, c.image.patch_size) == (512, 224, 16)
    assert len(enc.blocks) == 12 and enc.config.width == 768 and enc.config.heads == 12
    assert (
        85e6 < sum(p.numel() for p in enc.parameters()) < 87e6
    )  # ViT-B/16 without class token / pos table
    audio = model.audio_tower.clap.config
    assert type(model.audio_tower.clap).__name__ == "ClapAudioModelWithProjection"
    assert audio.enable_fusion and audio.spec_size == 256 and list(audio.depths) == [2, 2, 6, 2]
    assert audio.hidden_size == 768 and audio.projection_dim == 512
    assert type(model.text_tower.clap).__name__ == "ClapTextModelWithProjection"
    assert model.text_tower.clap.config.hidden_size == 768 and model.tokenizer.max_length == 128
    assert (
        len(model.fusion.encoder.layers) == 3
        and model.fusion.encoder.layers[0].self_attn.num_heads == 8
    )
    with torch.no_grad():
        mu_i, _ = model.encode_image(
            torch.rand(1, 3, 224, 224), gsd=0.6, zoom=1, meta=MetadataBatch.from_values(month=5)
        )
        mu_a, _ = model.encode_audio(
            [np.zeros(48_000 * 12, np.float32) + 0.01], 48_000
        )  # longer than 10 s: fusion
        mu_t, _ = model.encode_text(["sound of insects"])
    assert mu_i.shape == mu_a.shape == mu_t.shape == (1, 512)
