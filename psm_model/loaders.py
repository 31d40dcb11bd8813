"""Loaders for pretrained weights on disk: SatMAE / MAE ViT pretrain checkpoints and CLAP towers."""

from __future__ import annotations

import argparse
import logging
import pathlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    ClapAudioModelWithProjection,
    ClapFeatureExtractor,
    ClapTextModelWithProjection,
)

from psm_model.image_encoder import ImageEncoder
from psm_model.tokenizer import TextTokenizer

logger = logging.getLogger(__name__)

CLAP_FUSED = "laion/clap-htsat-fused"
"""Hugging Face id of the CLAP checkpoint the paper fine-tunes (read from the local cache only)."""

_SATMAE_DROPPED = ("decoder_", "mask_token", "cls_token", "pos_embed", "head.", "fc_norm_decoder")


@dataclass
class LoadReport:
    """What a weight loader did.

    Attributes:
        source: Where the weights came from.
        loaded: Model keys that received weights.
        missing: Model keys the checkpoint did not provide (they keep their fresh initialisation).
        unexpected: Checkpoint keys that match nothing in the model.
        dropped: Checkpoint keys deliberately not used (decoder, class token, learned position table).
        mismatched: Keys whose shapes disagree, as "key: checkpoint shape vs model shape".
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line with the counts and the first few missing / unexpected keys."""
        return (
            f"{self.source}: loaded {len(self.loaded)}, missing {len(self.missing)} {self.missing[:6]}, "
            f"unexpected {len(self.unexpected)} {self.unexpected[:6]}, dropped {len(self.dropped)}, "
            f"mismatched {len(self.mismatched)} {self.mismatched[:3]}"
        )


def satmae_key(key: str) -> str | None:
    """Map a SatMAE / MAE pretrain key to our ImageEncoder key, or None for keys we drop.

    The encoder keys (``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``)
    are the same. The final ``norm`` (applied to tokens in MAE) initialises our ``fc_norm`` (applied
    to the mean token). The decoder, mask token, class token and learned position table are dropped:
    positions come from GSDPE.
    """
    for prefix in ("module.", "model.", "encoder."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    if key.startswith(_SATMAE_DROPPED):
        return None
    if key.startswith("norm."):
        return "fc_norm." + key[len("norm.") :]
    return key


def read_torch_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a PyTorch checkpoint's state dict without running arbitrary pickled code.

    Accepts ``{"model": state_dict, ...}`` (MAE / SatMAE), ``{"state_dict": ...}`` or a bare
    state dict. ``argparse.Namespace`` and paths (stored by MAE training scripts) are allowed.

    Raises:
        ValueError: If the file is missing, unreadable or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(
            [argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath]
        ):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"could not read checkpoint {path} (truncated or not a PyTorch file?): {e}"
        ) from e
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"checkpoint {path} holds no state dict of tensors")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_satmae_vit(encoder: ImageEncoder, path: str | Path) -> LoadReport:
    """Initialise an :class:`ImageEncoder` from a SatMAE (or MAE) ViT pretrain checkpoint.

    Args:
        encoder: The encoder to fill in place.
        path: The ``.pth`` file the user downloaded (for the paper: SatMAE ViT-B/16 pretrain).

    Returns:
        The report; missing keys always include our projection ``proj.*``.

    Raises:
        ValueError: If the file cannot be read or no encoder weight matches.
    """
    state = read_torch_checkpoint(path)
    own = encoder.state_dict()
    report = LoadReport(source=str(path))
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = satmae_key(key)
        if target is None:
            report.dropped.append(key)
        elif target not in own:
            report.unexpected.append(key)
        elif own[target].shape != value.shape:
            report.mismatched.append(f"{key}: {tuple(value.shape)} vs {tuple(own[target].shape)}")
        else:
            mapped[target] = value
    if not mapped:
        raise ValueError(
            f"no weight in {path} fits the image encoder (width {encoder.config.width}, patch "
            f"{encoder.config.patch_size}); mismatched: {report.mismatched[:3]}"
        )
    encoder.load_state_dict(mapped, strict=False)
    report.loaded = sorted(mapped)
    report.missing = sorted(set(own) - set(mapped))
    logger.info("SatMAE load %s", report.summary())
    return report


def _clap_error(path: str, e: Exception) -> ValueError:
    return ValueError(
        f"could not load CLAP from {path!r} offline: {e}. Give a local folder with config.json and "
        f"model.safetensors (for example a copy of {CLAP_FUSED}), or put it in the Hugging Face cache"
    )


def _tower_report(
    path: str, info: dict, prefixes: tuple[str, ...], model: torch.nn.Module
) -> LoadReport:
    unexpected = sorted(k for k in info.get("unexpected_keys", []) if k.startswith(prefixes))
    missing = sorted(info.get("missing_keys", []))
    mismatched = [str(m) for m in info.get("mismatched_keys", [])]
    loaded = sorted(set(model.state_dict()) - set(missing))
    return LoadReport(
        source=path, loaded=loaded, missing=missing, unexpected=unexpected, mismatched=mismatched
    )


def load_clap_audio(
    path: str | Path,
) -> tuple[ClapAudioModelWithProjection, ClapFeatureExtractor, LoadReport]:
    """Load CLAP's audio tower and feature extractor from a local folder or the HF cache (never the network).

    Args:
        path: Folder with a ``ClapModel`` or ``ClapAudioModelWithProjection`` checkpoint, or a cached hub id.

    Returns:
        (model, feature extractor, report). Without a ``preprocessor_config.json`` the extractor
        gets CLAP's defaults.

    Raises:
        ValueError: If nothing loadable is found offline.
    """
    path = str(path)
    try:
        model, info = ClapAudioModelWithProjection.from_pretrained(
            path, local_files_only=True, output_loading_info=True
        )
    except Exception as e:
        raise _clap_error(path, e) from e
    try:
        extractor = ClapFeatureExtractor.from_pretrained(path, local_files_only=True)
    except Exception:
        logger.info("no CLAP feature extractor config in %s; using CLAP defaults", path)
        extractor = ClapFeatureExtractor()
    report = _tower_report(path, info, ("audio_model.", "audio_projection."), model)
    logger.info("CLAP audio load %s", report.summary())
    return model, extractor, report


def load_clap_text(
    path: str | Path, max_length: int
) -> tuple[ClapTextModelWithProjection, TextTokenizer, LoadReport]:
    """Load CLAP's text tower and its RoBERTa tokenizer from a local folder or the HF cache (offline).

    Args:
        path: Folder with a ``ClapModel`` or ``ClapTextModelWithProjection`` checkpoint and tokenizer
            files, or a cached hub id.
        max_length: Tokenizer truncation length (CLAP: 128).

    Returns:
        (model, tokenizer, report).

    Raises:
        ValueError: If the model or the tokenizer cannot be loaded offline.
    """
    path = str(path)
    try:
        model, info = ClapTextModelWithProjection.from_pretrained(
            path, local_files_only=True, output_loading_info=True
        )
    except Exception as e:
        raise _clap_error(path, e) from e
    tokenizer = TextTokenizer.from_directory(path, max_length)
    report = _tower_report(path, info, ("text_model.", "text_projection."), model)
    logger.info("CLAP text load %s", report.summary())
    return model, tokenizer, report
