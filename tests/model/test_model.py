"""The whole tiny model: shapes, unit means, positive variances, gradients, determinism, training, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import psm_model
from psm_model import MetadataBatch, create_model
from psm_model.query import compose


def _check_gaussian(mu, logvar, batch, dim):
    assert mu.shape == (batch, dim) and logvar.shape == (batch, dim)
    assert mu.dtype == torch.float32 and logvar.dtype == torch.float32
    assert torch.allclose(mu.norm(dim=1), torch.ones(batch), atol=1e-5)
    assert (logvar.exp() > 0).all() and torch.isfinite(logvar).all()


def test_every_encoder_shapes_unit_norm_positive_variance(tiny, toy):
    d = tiny.config.embed_dim
    with torch.no_grad():
        feats = tiny.image_features(toy.images(3), gsd=0.6, zoom=torch.tensor([1, 3, 5]))
        assert feats.shape == (3, d)
        _check_gaussian(*tiny.fuse_image(feats, toy.meta(3)), 3, d)
        _check_gaussian(*tiny.fuse_image(feats), 3, d)
        _check_gaussian(*tiny.encode_text(toy.captions[:5]), 5, d)
        _check_gaussian(*tiny.encode_audio(toy.waves(4), toy.sr), 4, d)
        _check_gaussian(*tiny.encode_audio(torch.randn(2, 8000), 8000), 2, d)


def test_initial_variance_near_exp_minus_4(fresh_tiny, toy):
    with torch.no_grad():
        _, logvar = fresh_tiny.encode_text(toy.captions[:4])
    assert abs(float(logvar.mean()) + 4.0) < 0.5


def test_audio_resampled_to_model_rate(tiny, toy):
    wave = toy.waves(1, seconds=0.8, long_every=0)[0]
    from psm_model.audio_io import resample

    wave_44k = resample(wave, toy.sr, 44_100)
    with torch.no_grad():
        at_model = tiny.encode_audio([wave], toy.sr)[0]
        from_44k = tiny.encode_audio([wave_44k], 44_100)[0]
    assert float((at_model * from_44k).sum()) > 0.99


def test_audio_bad_input(tiny, toy):
    with pytest.raises(ValueError, match="waveform 1 is empty"):
        tiny.encode_audio([np.ones(100, np.float32), np.zeros(0, np.float32)], toy.sr)
    with pytest.raises(ValueError, match="NaN"):
        tiny.encode_audio([np.full(800, np.nan, np.float32)], toy.sr)
    with pytest.raises(ValueError, match="sample_rate must be an integer"):
        tiny.encode_audio([np.ones(800, np.float32)], 0)
    with pytest.raises(ValueError, match="sample_rate must be an integer"):
        tiny.encode_audio([np.ones(800, np.float32)], 22050.5)
    with pytest.raises(ValueError, match="\\(T,\\) or \\(B, T\\)"):
        tiny.encode_audio(torch.zeros(2, 1, 800), toy.sr)
    with pytest.raises(ValueError, match="non-empty list"):
        tiny.encode_audio([], toy.sr)
    # The feature front end itself refuses audio at another rate than the model's.
    with pytest.raises(ValueError, match="expects 16000 Hz"):
        tiny.audio_tower.extract([np.ones(800, np.float32)], 48_000)


def test_text_bad_input(tiny):
    with pytest.raises(ValueError, match="text 1 is empty"):
        tiny.encode_text(["insects", "   "])
    with pytest.raises(ValueError, match="non-empty list"):
        tiny.encode_text([])
    with pytest.raises(ValueError, match="must be a string"):
        tiny.encode_text(["ok", 3])


def test_fuse_image_bad_rank(tiny):
    with pytest.raises(ValueError, match="\\(B, F\\) tensor"):
        tiny.fuse_image(torch.zeros(2, 3, tiny.config.embed_dim))


def _full_batch(model, toy, batch=6):
    return {
        "images": toy.images(batch),
        "gsd": 10.0,
        "zoom": torch.tensor([1, 3, 5, 1, 3, 5][:batch]),
        "meta": toy.meta(batch),
        "audio": model.audio_inputs(toy.waves(batch), toy.sr),
        "texts": toy.captions[:batch],
    }


def test_gradients_reach_every_trainable_parameter(toy):
    model = create_model("tiny", seed=0, fusion={"metadata_dropout": 0.0})
    model.train()
    out = model(_full_batch(model, toy))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    # A conv bias right before a BatchNorm (CLAP's fusion block) has an exactly zero gradient.
    before_batchnorm = (
        "fusion_model.local_att.0.bias",
        "fusion_model.local_att.3.bias",
        "fusion_model.global_att.1.bias",
        "fusion_model.global_att.4.bias",
    )
    for name, p in model.named_parameters():
        assert p.requires_grad, name
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if not name.endswith(before_batchnorm):
            assert p.grad.abs().sum() > 0, name


def test_determinism_under_fixed_seed(toy):
    a = create_model("tiny", seed=123)
    b = create_model("tiny", seed=123)
    c = create_model("tiny", seed=124)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    a.eval()
    b.eval()
    batch = _full_batch(a, toy)
    with torch.no_grad():
        oa, ob = a(batch), b(batch)
    assert torch.equal(oa["loss"], ob["loss"])
    # Audio crops of long clips are seeded: the same call twice gives the same features.
    x1 = a.audio_inputs(toy.waves(4), toy.sr).input_features
    x2 = a.audio_inputs(toy.waves(4), toy.sr).input_features
    assert torch.equal(x1, x2)


@pytest.mark.parametrize("loss", ["pcmepp", "infonce"])
def test_loss_decreases_on_a_toy_batch(toy, loss):
    model = create_model("tiny", seed=0, loss=loss)
    model.train()
    batch = _full_batch(model, toy, batch=4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        torch.manual_seed(0)  # the same metadata dropout draw each step
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.9 * losses[0], losses


def test_match_params(tiny):
    assert tiny.match_params() == (5.0, 5.0)
    infonce = create_model("tiny", seed=0, loss="infonce")
    a, b = infonce.match_params()
    assert abs(b - 1 / 0.07) < 1e-3 and abs(a - b / 2) < 1e-6


def test_compose_adds_raw_means(tiny, toy):
    with torch.no_grad():
        raw_a, lv_a = tiny.encode_audio(toy.waves(2), toy.sr, raw_mean=True)
        raw_t, lv_t = tiny.encode_text(toy.captions[:2], raw_mean=True)
        mu_a, _ = tiny.encode_audio(toy.waves(2), toy.sr)
    assert torch.allclose(torch.nn.functional.normalize(raw_a, dim=1), mu_a, atol=1e-6)
    mu, lv = compose(raw_a, lv_a, raw_t, lv_t, "raw")
    expected = (raw_a + raw_t) / (raw_a + raw_t).norm(dim=1, keepdim=True)
    assert torch.allclose(mu, expected, atol=1e-6) and torch.allclose(lv, lv_a + lv_t)
    one_text = compose(raw_a, lv_a, raw_t[0], lv_t[0])[0]
    assert one_text.shape == (2, tiny.config.embed_dim)
    assert psm_model.compose is compose
    with pytest.raises(ValueError, match="embedding sizes differ"):
        compose(raw_a, lv_a, raw_t[:, :3], lv_t[:, :3])


def test_image_features_computed_once_then_fused_per_condition(tiny, toy):
    images = toy.images(4)
    with torch.no_grad():
        feats = tiny.image_features(images, gsd=10.0, zoom=3)
        at_6 = tiny.fuse_image(feats, MetadataBatch.from_values(hour=6, month=5, batch_size=4))
        at_18 = tiny.fuse_image(feats, MetadataBatch.from_values(hour=18, month=5, batch_size=4))
        direct = tiny.encode_image(
            images, gsd=10.0, zoom=3, meta=MetadataBatch.from_values(hour=6, month=5)
        )
    assert torch.allclose(at_6[0], direct[0], atol=1e-6)
    assert not torch.allclose(at_6[0], at_18[0])


def test_forward_rejects_unknown_keys(tiny):
    with pytest.raises(ValueError, match="unknown batch key"):
        tiny({"pixels": None})


def test_infonce_model_is_deterministic_points(toy):
    model = create_model("tiny", seed=0, loss="infonce").eval()
    assert model.audio_head.logvar is None
    with torch.no_grad():
        mu, logvar = model.encode_text(toy.captions[:3])
    assert torch.all(logvar == model.config.logvar_bias_init)
    assert torch.allclose(mu.norm(dim=1), torch.ones(3), atol=1e-5)
