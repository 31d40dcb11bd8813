"""Query composition rules (raw, unit, precision) against hand computations."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from psm_model.evaluate import _query, evaluate
from psm_model.features import SplitData
from psm_model.query import COMPOSE_RULES, compose

MU_A = torch.tensor([[3.0, 4.0]])  # raw norm 5, like an image mean
MU_T = torch.tensor([[0.0, 0.5]])  # raw norm 0.5, like a text mean
LV_A = torch.tensor([[0.0, math.log(2.0)]])  # sigma^2 = 1, 2
LV_T = torch.tensor([[math.log(3.0), math.log(2.0)]])  # sigma^2 = 3, 2


def _unit(v: list[float]) -> torch.Tensor:
    t = torch.tensor([v])
    return t / t.norm()


def test_raw_rule_adds_raw_means():
    mu, lv = compose(MU_A, LV_A, MU_T, LV_T, "raw")
    assert torch.allclose(mu, _unit([3.0, 4.5])) and torch.allclose(lv, LV_A + LV_T)


def test_unit_rule_is_the_default():
    mu, lv = compose(MU_A, LV_A, MU_T, LV_T)
    same = compose(MU_A, LV_A, MU_T, LV_T, "unit")
    assert torch.equal(mu, same[0]) and torch.equal(lv, same[1])


def test_unit_rule_normalises_each_mean_first():
    mu, lv = compose(MU_A, LV_A, MU_T, LV_T, "unit")
    assert torch.allclose(mu, _unit([0.6, 1.8]))  # (0.6, 0.8) + (0, 1)
    assert torch.allclose(lv, LV_A + LV_T)
    assert not torch.allclose(mu, compose(MU_A, LV_A, MU_T, LV_T, "raw")[0])  # the short text mean now counts


def test_precision_rule_is_the_product_of_gaussians():
    mu, lv = compose(MU_A, LV_A, MU_T, LV_T, "precision")
    # dim 0: precisions 1 and 1/3 -> weights 0.75 / 0.25, variance 0.75; dim 1: equal -> 0.5 / 0.5, variance 1
    mean = torch.tensor([[0.75 * 0.6 + 0.25 * 0.0, 0.5 * 0.8 + 0.5 * 1.0]])
    assert torch.allclose(mu, mean / mean.norm())
    assert torch.allclose(lv.exp(), torch.tensor([[0.75, 1.0]]))
    # equal variances: the unit bisector, with the variance halved
    eq = torch.zeros(1, 2)
    mu_eq, lv_eq = compose(MU_A, eq, MU_T, eq, "precision")
    assert torch.allclose(mu_eq, compose(MU_A, eq, MU_T, eq, "unit")[0])
    assert torch.allclose(lv_eq.exp(), torch.full((1, 2), 0.5))
    # a far more certain text pulls the mean onto it
    mu_t, _ = compose(MU_A, eq, MU_T, torch.full((1, 2), -30.0), "precision")
    assert torch.allclose(mu_t, _unit([0.0, 1.0]), atol=1e-6)


@pytest.mark.parametrize("rule", COMPOSE_RULES)
def test_one_text_row_broadcasts_over_a_batch(rule):
    g = torch.Generator().manual_seed(0)
    mu_a, lv_a = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    mu_t, lv_t = torch.randn(8, generator=g), torch.randn(8, generator=g)
    mu, lv = compose(mu_a, lv_a, mu_t, lv_t, rule)
    full = compose(mu_a, lv_a, mu_t.expand(3, 8), lv_t.expand(3, 8), rule)
    assert mu.shape == (3, 8) and torch.allclose(mu, full[0]) and torch.allclose(lv, full[1])
    assert torch.allclose(mu.norm(dim=-1), torch.ones(3))


def test_compose_rejects_bad_inputs():
    with pytest.raises(ValueError, match="unknown compose rule 'sum'"):
        compose(MU_A, LV_A, MU_T, LV_T, "sum")
    # raw means (1, 0) + (-2, 0) do not cancel; their unit means do
    a, t, z = torch.tensor([[1.0, 0.0]]), torch.tensor([[-2.0, 0.0]]), torch.zeros(1, 2)
    compose(a, z, t, z, "raw")
    for rule in ("unit", "precision"):
        with pytest.raises(ValueError, match="cancel out"):
            compose(a, z, t, z, rule)
    with pytest.raises(ValueError, match="embedding sizes differ"):
        compose(MU_A, LV_A, torch.zeros(1, 3), torch.zeros(1, 3), "precision")
    with pytest.raises(ValueError, match="same shape"):
        compose(MU_A, LV_A, MU_T, torch.zeros(1, 3), "unit")
    with pytest.raises(ValueError, match="do not broadcast"):
        compose(torch.ones(3, 2), torch.zeros(3, 2), torch.ones(2, 2), torch.zeros(2, 2), "precision")


def _model_split(n: int = 12) -> SplitData:
    rng = np.random.default_rng(0)
    return SplitData(
        name="test", keys=np.array([f"k{i}" for i in range(n)]), lat=rng.uniform(-60, 60, n),
        lon=rng.uniform(-170, 170, n), month=rng.integers(1, 13, n), hour=rng.integers(0, 24, n),
        audio_source=rng.integers(0, 4, n), caption_source=rng.integers(0, 3, n), captions=["birds sing"] * n,
        classes=[("birdsong",)] * n, images=rng.integers(0, 256, (n, 1, 32, 32, 3), dtype=np.uint8), zooms=(1,),
        gsd=10.0, mel=rng.standard_normal((n, 1, 63, 64)).astype(np.float16), is_longer=np.zeros(n, bool),
        fusion_channels=4, text_features=None,
    )


def test_evaluate_uses_and_records_the_rule(tiny, monkeypatch):
    import psm_model.evaluate as ev

    with pytest.raises(ValueError, match="unknown compose rule"):
        evaluate(None, _model_split(), compose="sum")
    assert torch.allclose(_query((MU_A, LV_A), (MU_T, LV_T), "unit")[0], compose(MU_A, LV_A, MU_T, LV_T, "unit")[0])
    assert torch.equal(_query((MU_A, LV_A), None, "precision")[0], MU_A / 5.0)  # no text: the unit mean alone
    used = []
    monkeypatch.setattr(ev, "compose", lambda *a: used.append(a[-1]) or compose(*a))
    res = evaluate(tiny, _model_split(), zooms=(1,), text=(True,), metadata=("none",), oracle=False,
                   compose="precision")
    assert used == ["precision", "precision"] and res.config["compose"] == "precision"


# ----------------------------------------------------------------------------- encode_query


def _tone(rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_encode_query_text_is_the_models_gaussian(tiny):
    from psm_model import encode_query

    q = encode_query(tiny, text="sound of insects")
    with torch.no_grad():
        mu, logvar = tiny.encode_text(["sound of insects"])
    assert q.kind == "text" and q.mu.dtype == np.float32 and q.var.dtype == np.float32
    assert q.mu.shape == q.var.shape == (tiny.config.embed_dim,)
    np.testing.assert_allclose(q.mu, mu[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(q.var, logvar[0].exp().numpy(), rtol=1e-5)
    kind, mu_, var_ = q  # still unpacks as (kind, mu, var)
    assert kind == "text" and mu_ is q.mu and var_ is q.var


def test_encode_query_audio_file_equals_the_same_clip_in_memory(tiny, tmp_path):
    import soundfile as sf

    from psm_model import encode_query

    path = tmp_path / "clip.wav"
    sf.write(str(path), _tone(22050), 22050, subtype="FLOAT")
    from_file = encode_query(tiny, audio=path)
    in_memory = encode_query(tiny, audio=(_tone(22050), 22050))
    assert from_file.kind == in_memory.kind == "audio"
    np.testing.assert_allclose(from_file.mu, in_memory.mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_file.var, in_memory.var, rtol=1e-5)
    assert np.linalg.norm(from_file.mu) == pytest.approx(1.0, abs=1e-5)


def test_encode_query_both_composes_the_raw_means_by_the_rule(tiny):
    from psm_model import encode_query

    clip = (_tone(16000), 16000)
    with torch.no_grad():
        mu_a, lv_a = tiny.encode_audio([clip[0]], clip[1], raw_mean=True)
        mu_t, lv_t = tiny.encode_text(["birds"], raw_mean=True)
    for rule in COMPOSE_RULES:
        q = encode_query(tiny, text="birds", audio=clip, rule=rule)
        want_mu, want_lv = compose(mu_a, lv_a, mu_t, lv_t, rule)
        assert q.kind == "audio+text"
        np.testing.assert_allclose(q.mu, want_mu[0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(q.var, want_lv[0].exp().numpy(), rtol=1e-5)
    assert not np.allclose(encode_query(tiny, text="birds", audio=clip).mu, encode_query(tiny, text="birds").mu)


def test_encode_query_refuses_bad_input(tiny, tmp_path):
    import soundfile as sf

    from psm_model import encode_query

    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 3)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 16000)
    cases = [
        ({"audio": corrupt}, "could not read audio file"),
        ({"audio": empty}, "holds no samples"),
        ({"audio": tmp_path / "missing.mp3"}, "does not exist"),
        ({}, "give --text, --audio, or both"),
        ({"text": "   "}, "the query text is empty"),
        ({"audio": (np.zeros(0, np.float32), 16000)}, "audio clip is empty"),
        ({"audio": (np.full(100, np.nan, np.float32), 16000)}, "NaN or infinite"),
        ({"audio": (_tone(16000), 7)}, "sample_rate must be"),
        ({"text": "birds", "audio": (_tone(16000), 16000), "rule": "sum"}, "unknown compose rule"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            encode_query(tiny, **kwargs)


def test_encode_query_refuses_a_clip_longer_than_the_limit_before_decoding_it(tiny, tmp_path):
    """A 1-hour clip took 21 s and 3.6 GB; it is refused from its header, in well under a second."""
    import time

    import soundfile as sf

    from psm_model import encode_query

    hour = tmp_path / "hour.wav"
    with sf.SoundFile(str(hour), "w", samplerate=8000, channels=1, subtype="PCM_16") as f:
        block = _tone(8000, 60.0)
        for _ in range(60):
            f.write(block)
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"is 1:00:00 long \(3600.0 s\); the limit is 10:00 \(600 s, setting "
                                         r"PSM_MAX_AUDIO_SECONDS\)"):
        encode_query(tiny, audio=hour)
    assert time.perf_counter() - started < 1.0
    with pytest.raises(ValueError, match="the limit is 10:00"):
        encode_query(tiny, audio=(np.zeros(16000 * 601, np.float32), 16000))
    with pytest.raises(ValueError, match=r"the audio clip is 0:03 long.*the limit is 0:02"):
        encode_query(tiny, audio=(_tone(16000, 3.0), 16000), max_audio_seconds=2)
    assert encode_query(tiny, audio=(_tone(16000, 2.0), 16000), max_audio_seconds=2).kind == "audio"  # at the limit


def test_encode_query_refuses_a_clip_shorter_than_the_minimum(tiny, tmp_path):
    """A 0.01 s clip got the same sigma^2 as a 4 s one; it is refused with what to do."""
    import soundfile as sf

    from psm_model import encode_query

    blip = tmp_path / "blip.wav"
    sf.write(str(blip), _tone(16000, 0.01), 16000)
    for audio, name in ((blip, f"audio file {blip}"), ((_tone(16000, 0.01), 16000), "the audio clip")):
        with pytest.raises(ValueError, match=re.escape(name) + r" is 0.01 s long; the shortest clip accepted is 0.5 s "
                                             r"\(setting PSM_MIN_AUDIO_SECONDS\)"):
            encode_query(tiny, audio=audio)
        with pytest.raises(ValueError, match="shortest clip"):
            encode_query(tiny, audio=audio, text="birds")  # with a text too
    assert encode_query(tiny, audio=(_tone(16000, 0.5), 16000)).kind == "audio"  # 0.5 s is accepted
    assert encode_query(tiny, audio=(_tone(16000, 0.01), 16000), min_audio_seconds=0.001).kind == "audio"
