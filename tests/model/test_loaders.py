"""Pretrained loaders on tiny checkpoints written here in SatMAE's and CLAP's own layouts."""

from __future__ import annotations

import argparse

import pytest
import torch
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, PreTrainedTokenizerFast

from psm_model import create_model, load_checkpoint, save_checkpoint
from psm_model.tokenizer import caption_corpus, train_bpe


def _satmae_state(
    width: int, depth: int, patch: int, grid: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A SatMAE / MAE pretrain state dict (encoder + decoder) with random values."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    sd = {
        "cls_token": r(1, 1, width),
        "pos_embed": r(1, grid * grid + 1, width),
        "mask_token": r(1, 1, 16),
        "patch_embed.proj.weight": r(width, 3, patch, patch),
        "patch_embed.proj.bias": r(width),
        "norm.weight": r(width),
        "norm.bias": r(width),
        "decoder_embed.weight": r(16, width),
        "decoder_embed.bias": r(16),
        "decoder_pos_embed": r(1, grid * grid + 1, 16),
        "decoder_blocks.0.norm1.weight": r(16),
        "decoder_norm.weight": r(16),
        "decoder_pred.weight": r(patch * patch * 3, 16),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        sd |= {
            p + "norm1.weight": r(width),
            p + "norm1.bias": r(width),
            p + "attn.qkv.weight": r(3 * width, width),
            p + "attn.qkv.bias": r(3 * width),
            p + "attn.proj.weight": r(width, width),
            p + "attn.proj.bias": r(width),
            p + "norm2.weight": r(width),
            p + "norm2.bias": r(width),
            p + "mlp.fc1.weight": r(4 * width, width),
            p + "mlp.fc1.bias": r(4 * width),
            p + "mlp.fc2.weight": r(width, 4 * width),
            p + "mlp.fc2.bias": r(width),
        }
    return sd


def test_satmae_loader(tmp_path):
    sd = _satmae_state(width=32, depth=2, patch=8, grid=4)
    sd["some_new_head.weight"] = torch.zeros(3)
    path = tmp_path / "satmae-pretrain.pth"
    torch.save(
        {
            "model": sd,
            "optimizer": {},
            "epoch": 7,
            "args": argparse.Namespace(lr=1e-4, output_dir=tmp_path),
        },
        path,
    )
    model = create_model("tiny", seed=0, satmae_path=str(path))
    report = model.load_reports["image"]
    enc = model.image_encoder.state_dict()
    assert torch.equal(enc["blocks.1.attn.qkv.weight"], sd["blocks.1.attn.qkv.weight"])
    assert torch.equal(enc["patch_embed.proj.weight"], sd["patch_embed.proj.weight"])
    assert torch.equal(
        enc["fc_norm.weight"], sd["norm.weight"]
    )  # final norm -> norm of the pooled token
    assert report.missing == ["proj.bias", "proj.weight"]
    assert report.unexpected == ["some_new_head.weight"]
    assert {
        "cls_token",
        "pos_embed",
        "mask_token",
        "decoder_embed.weight",
        "decoder_pred.weight",
    } <= set(report.dropped)
    assert len(report.loaded) == len(enc) - 2
    assert model.config.image.pretrained == str(path)


def test_satmae_loader_errors(tmp_path):
    wrong = tmp_path / "vit-l.pth"
    torch.save({"model": _satmae_state(width=64, depth=1, patch=16, grid=2)}, wrong)
    with pytest.raises(ValueError, match="no weight in .* fits the image encoder"):
        create_model("tiny", seed=0, satmae_path=str(wrong))
    truncated = tmp_path / "cut.pth"
    good = tmp_path / "good.pth"
    torch.save({"model": _satmae_state(32, 2, 8, 4)}, good)
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="could not read checkpoint"):
        create_model("tiny", seed=0, satmae_path=str(truncated))
    with pytest.raises(ValueError, match="does not exist"):
        create_model("tiny", seed=0, satmae_path=str(tmp_path / "missing.pth"))


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    """A tiny CLAP checkpoint folder as ``ClapModel.save_pretrained`` writes it, with tokenizer and extractor."""
    path = tmp_path_factory.mktemp("tiny-clap")
    bpe = train_bpe(caption_corpus(), 300, 40)
    audio = dict(
        spec_size=64,
        num_mel_bins=64,
        patch_embeds_hidden_size=16,
        hidden_size=64,
        depths=[1, 1, 1],
        num_attention_heads=[1, 2, 2],
        num_hidden_layers=3,
        window_size=4,
        enable_fusion=True,
        fusion_type="aff_2d",
        projection_dim=24,
    )
    text = dict(
        vocab_size=bpe.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=42,
        projection_dim=24,
    )
    torch.manual_seed(0)
    clap = ClapModel(ClapConfig(audio_config=audio, text_config=text, projection_dim=24))
    clap.save_pretrained(path)
    PreTrainedTokenizerFast(
        tokenizer_object=bpe.backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    ).save_pretrained(path)
    ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=16_000,
        hop_length=256,
        max_length_s=1,
        fft_window_size=512,
        frequency_max=8000,
    ).save_pretrained(path)
    return path, clap


def test_clap_loader(clap_dir, toy, tmp_path):
    path, clap = clap_dir
    model = create_model("tiny", seed=0, clap_path=str(path))
    sd = model.state_dict()
    ref = clap.state_dict()
    for key in (
        "audio_projection.linear1.weight",
        "audio_model.audio_encoder.patch_embed.proj.weight",
    ):
        assert torch.equal(sd["audio_tower.clap." + key], ref[key])
    for key in ("text_projection.linear2.weight", "text_model.embeddings.word_embeddings.weight"):
        assert torch.equal(sd["text_tower.clap." + key], ref[key])
    assert model.load_reports["audio"].missing == [] and model.load_reports["text"].missing == []
    assert model.load_reports["audio"].unexpected == []
    assert model.config.audio.hf_config["projection_dim"] == 24
    assert model.audio_tower.out_dim == 24 and model.text_tower.out_dim == 24
    assert model.tokenizer.max_length == model.config.text.max_length
    model.eval()
    with torch.no_grad():
        mu_a, _ = model.encode_audio(toy.waves(2), toy.sr)
        mu_t, _ = model.encode_text(toy.captions[:2])
    assert mu_a.shape == (2, 32) and mu_t.shape == (2, 32)
    # The checkpoint rebuilds the CLAP architecture from the stored config, without the folder.
    ckpt = tmp_path / "with-clap.safetensors"
    save_checkpoint(model, ckpt)
    again, info = load_checkpoint(ckpt)
    assert info["config"]["audio"]["pretrained"] == str(path)
    with torch.no_grad():
        assert torch.equal(again.encode_text(toy.captions[:2])[0], mu_t)


def test_clap_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="could not load CLAP .* offline"):
        create_model("tiny", seed=0, clap_path=str(tmp_path / "no-such-folder"))
    with pytest.raises(ValueError, match="could not load CLAP .* offline"):
        create_model("tiny", seed=0, clap_path="laion/clap-htsat-fused-not-cached")
