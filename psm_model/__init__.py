"""PSM: probabilistic soundscape mapping model library (encoders, fusion, losses, checkpoints).

Typical use::

    model = create_model("tiny")                      # presets tiny, demo, paper; overrides win
    feats = model.image_features(tiles, gsd=10.0, zoom=1)   # once per tile
    mu_i, logvar_i = model.fuse_image(feats, MetadataBatch.from_values(month=5, hour=20))
    mu_t, logvar_t = model.encode_text(["sound of insects"])
    score = -csd(mu_i, logvar_i.exp(), mu_t, logvar_t.exp())
    version = save_checkpoint(model, "model.safetensors")

The names below are imported on first use, so that the metadata modules
(:mod:`psm_model.metadata`, :mod:`psm_model.condition`) load without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psm_model.audio_text import AudioInputs
    from psm_model.checkpoint import (
        load_checkpoint,
        model_version,
        read_checkpoint_info,
        save_checkpoint,
    )
    from psm_model.condition import Condition
    from psm_model.config import ModelConfig, preset_config
    from psm_model.distance import csd
    from psm_model.errors import CheckpointError
    from psm_model.factory import create_model
    from psm_model.fusion import MetadataBatch
    from psm_model.image_encoder import zoom_transform
    from psm_model.loss import InfoNCELoss, PCMEppLoss, TriModalLoss
    from psm_model.model import PSMModel
    from psm_model.query import EncodedQuery, compose, encode_query

_WHERE = {
    "AudioInputs": "audio_text",
    "CheckpointError": "errors",
    "Condition": "condition",
    "EncodedQuery": "query",
    "InfoNCELoss": "loss",
    "MetadataBatch": "fusion",
    "ModelConfig": "config",
    "PCMEppLoss": "loss",
    "PSMModel": "model",
    "TriModalLoss": "loss",
    "compose": "query",
    "create_model": "factory",
    "csd": "distance",
    "encode_query": "query",
    "load_checkpoint": "checkpoint",
    "model_version": "checkpoint",
    "preset_config": "config",
    "read_checkpoint_info": "checkpoint",
    "save_checkpoint": "checkpoint",
    "zoom_transform": "image_encoder",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'psm_model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"psm_model.{where}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


__all__ = [
    "AudioInputs",
    "CheckpointError",
    "Condition",
    "EncodedQuery",
    "InfoNCELoss",
    "MetadataBatch",
    "ModelConfig",
    "PCMEppLoss",
    "PSMModel",
    "TriModalLoss",
    "compose",
    "create_model",
    "csd",
    "encode_query",
    "load_checkpoint",
    "model_version",
    "preset_config",
    "read_checkpoint_info",
    "save_checkpoint",
    "zoom_transform",
]
