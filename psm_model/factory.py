"""One factory for PSM models: presets plus keyword overrides, and optional pretrained weights."""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AutoModel

from psm_model.audio_text import (
    AudioTower,
    TextTower,
    minilm_config_dict,
    minilm_directory,
    minilm_tokenizer,
    portable_config_dict,
    scratch_tokenizer,
)
from psm_model.config import ModelConfig, preset_config
from psm_model.loaders import load_clap_audio, load_clap_text, load_satmae_vit
from psm_model.model import PSMModel
from psm_model.tokenizer import TextTokenizer

logger = logging.getLogger(__name__)


def create_model(
    preset: str = "tiny",
    *,
    pretrained: bool = True,
    seed: int | None = None,
    clap_path: str | None = None,
    satmae_path: str | None = None,
    **overrides: Any,
) -> PSMModel:
    """Build a PSM model from a preset (``tiny``, ``demo``, ``paper``); keyword overrides win.

    Examples: ``create_model("tiny")``, ``create_model("tiny", embed_dim=32, loss="infonce")``,
    ``create_model("paper", clap_path="/data/clap-htsat-fused", satmae_path="/data/satmae.pth")``.

    Args:
        preset: Preset name.
        pretrained: Load the pretrained weights the config names (CLAP, SatMAE, MiniLM). With
            False, every tower is built from config with fresh weights.
        seed: If given, seed torch before building so the initial weights are reproducible.
        clap_path: Shortcut for ``audio.pretrained`` and (with the clap text backbone)
            ``text.pretrained``: a local CLAP folder or a cached hub id such as
            ``laion/clap-htsat-fused`` (read with ``local_files_only``; never the network).
        satmae_path: Shortcut for ``image.pretrained``: a SatMAE ViT pretrain ``.pth``.
        **overrides: Config overrides, see :func:`psm_model.config.preset_config`.

    Returns:
        The model in train mode; ``model.load_reports`` lists what each loader did.

    Raises:
        ValueError: For an unknown preset or field, an invalid config, or weights that cannot be
            found or loaded.
    """
    config = preset_config(preset, **overrides)
    if clap_path is not None:
        config.audio.pretrained = str(clap_path)
        if config.text.backbone == "clap":
            config.text.pretrained = str(clap_path)
    if satmae_path is not None:
        config.image.pretrained = str(satmae_path)
    if seed is not None:
        torch.manual_seed(seed)
    return build_model(config, load_pretrained=pretrained)


def build_model(
    config: ModelConfig, *, load_pretrained: bool = True, tokenizer: TextTokenizer | None = None
) -> PSMModel:
    """Build a model from a full config.

    When pretrained weights are loaded, the architecture they bring is written back into the config
    (``audio.hf_config``, ``text.hf_config``) so a checkpoint reload rebuilds the same model.

    Args:
        config: The config; it is updated in place as described.
        load_pretrained: Load the weights named in the config.
        tokenizer: A tokenizer to use instead of building one (checkpoint reload).

    Returns:
        The model.
    """
    config.validate()
    d = config.embed_dim
    reports: dict[str, Any] = {}

    audio_tower = None
    if load_pretrained and config.audio.pretrained:
        clap_audio, extractor, reports["audio"] = load_clap_audio(config.audio.pretrained)
        au = config.audio
        au.hf_config = portable_config_dict(clap_audio.config)
        au.sample_rate = int(extractor.sampling_rate)
        au.hop_length = int(extractor.hop_length)
        au.clip_seconds = int(extractor.max_length_s)
        au.fft_window_size = int(extractor.fft_window_size)
        au.num_mel_bins = int(extractor.feature_size)
        au.frequency_max = float(extractor.frequency_max)
        au.enable_fusion = bool(clap_audio.config.enable_fusion)
        audio_tower = AudioTower(au, d, model=clap_audio, feature_extractor=extractor)

    tx = config.text
    text_tower = None
    if tx.backbone == "clap":
        if load_pretrained and tx.pretrained:
            clap_text, loaded_tokenizer, reports["text"] = load_clap_text(
                tx.pretrained, tx.max_length
            )
            tx.hf_config = portable_config_dict(clap_text.config)
            text_tower = TextTower(tx, d, tokenizer or loaded_tokenizer, backbone=clap_text)
        elif tokenizer is None:
            tokenizer = scratch_tokenizer(tx)
    else:
        if tx.hf_config is None:
            tx.hf_config = minilm_config_dict()
        if tokenizer is None:
            tokenizer = minilm_tokenizer(tx.max_length)
        if load_pretrained:
            backbone = AutoModel.from_pretrained(str(minilm_directory()), local_files_only=True)
            text_tower = TextTower(tx, d, tokenizer, backbone=backbone)
            reports["text"] = f"pretrained all-MiniLM-L6-v2 from {minilm_directory()}"

    model = PSMModel(
        config.validate(), tokenizer=tokenizer, audio_tower=audio_tower, text_tower=text_tower
    )
    if load_pretrained and config.image.pretrained:
        reports["image"] = load_satmae_vit(model.image_encoder, config.image.pretrained)
    model.load_reports = reports
    for name, report in reports.items():
        logger.info("%s weights: %s", name, getattr(report, "summary", lambda r=report: str(r))())
    return model
