"""Self-contained model checkpoints (config, weights, tokenizer) keyed by a content hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from psm_model.config import ModelConfig
from psm_model.errors import CheckpointError
from psm_model.factory import build_model
from psm_model.files import atomic_write
from psm_model.model import PSMModel
from psm_model.tokenizer import TextTokenizer

FORMAT = "psm-checkpoint/1"
"""Value of the ``format`` metadata entry of our checkpoint files."""


def _hashed_config(config: ModelConfig) -> str:
    data = config.to_dict()
    for section in ("image", "audio", "text"):
        data[section]["pretrained"] = None  # where weights came from does not change the model
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def content_hash(config: ModelConfig, state: dict[str, torch.Tensor], tokenizer_json: str) -> str:
    """Model version id: 16 hex chars of sha256 over the config, every weight and the tokenizer.

    Args:
        config: The model config (pretrained source paths are left out).
        state: The state dict.
        tokenizer_json: The serialised tokenizer.

    Returns:
        The version string.
    """
    h = hashlib.sha256()
    h.update(FORMAT.encode())
    h.update(_hashed_config(config).encode())
    h.update(tokenizer_json.encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def model_version(model: PSMModel) -> str:
    """The content hash of a model as it is now (what :func:`save_checkpoint` would return)."""
    return content_hash(model.config, model.state_dict(), model.tokenizer.to_json())


def save_checkpoint(
    model: PSMModel,
    path: str | Path,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write a self-contained safetensors checkpoint: config, weights, tokenizer and version.

    The file is written to a temporary name and renamed, so a crash never leaves a half file.

    Args:
        model: The model.
        path: Destination file (conventionally ``*.safetensors``).
        metrics: JSON-serialisable evaluation numbers to keep with it (not hashed).
        extra: Any other JSON-serialisable information (not hashed).

    Returns:
        The model version (content hash); the database keys every embedding by it.

    Raises:
        ValueError: If metrics or extra are not JSON-serialisable.
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    tokenizer_json = model.tokenizer.to_json()
    version = content_hash(model.config, state, tokenizer_json)
    try:
        metadata = {
            "format": FORMAT,
            "version": version,
            "preset": model.config.preset,
            "config": model.config.to_json(),
            "tokenizer": tokenizer_json,
            "tokenizer_max_length": str(model.tokenizer.max_length),
            "tokenizer_pad": model.tokenizer.pad_token,
            "metrics": json.dumps(metrics or {}),
            "extra": json.dumps(extra or {}),
        }
    except TypeError as e:
        raise ValueError(f"metrics and extra must be JSON-serialisable: {e}") from e
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return version


def read_checkpoint_info(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint's metadata without building the model.

    Returns:
        Dict with version, preset, config (dict), metrics, extra.

    Raises:
        CheckpointError: (a ValueError) if the file is missing, truncated or not a PSM checkpoint.
    """
    meta = _read_metadata(Path(path))
    return _info(meta, Path(path))


def _read_metadata(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a safetensors file: {e}"
        ) from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a PSM model checkpoint (format {meta.get('format')!r}, want {FORMAT!r})"
        )
    missing = [
        k
        for k in ("version", "config", "tokenizer", "tokenizer_pad", "tokenizer_max_length")
        if k not in meta
    ]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks metadata {missing}")
    return meta


def _info(meta: dict[str, str], path: Path) -> dict[str, Any]:
    try:
        return {
            "version": meta["version"],
            "preset": meta.get("preset"),
            "config": json.loads(meta["config"]),
            "metrics": json.loads(meta.get("metrics", "{}")),
            "extra": json.loads(meta.get("extra", "{}")),
            "path": str(path),
        }
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {path} has corrupt metadata: {e}") from e


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[PSMModel, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`, verifying its content hash.

    No pretrained weights are read from elsewhere: the file holds everything.

    Args:
        path: The checkpoint file.
        map_location: Device to put the model on.

    Returns:
        (model in eval mode, info) with info keys version, preset, config, metrics, extra, path.

    Raises:
        CheckpointError: (a ValueError) on a missing, truncated or corrupted file, a config that
            does not match the weights, or a content hash that does not match.
    """
    path = Path(path)
    meta = _read_metadata(path)
    info = _info(meta, path)
    try:
        config = ModelConfig.from_dict(info["config"])
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path} holds an invalid config: {e}") from e
    try:
        tokenizer = TextTokenizer.from_json(
            meta["tokenizer"], int(meta["tokenizer_max_length"]), meta["tokenizer_pad"]
        )
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path}: {e}") from e
    try:
        state = load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt: {e}") from e
    model = build_model(config, load_pretrained=False, tokenizer=tokenizer)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs config {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if own[k].shape != state[k].shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"checkpoint {path}: the weights do not match the config; missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), shape mismatches {shapes[:5]} ({len(shapes)})"
        )
    version = content_hash(config, state, meta["tokenizer"])
    if version != meta["version"]:
        raise CheckpointError(
            f"checkpoint {path} content hash {version} differs from the recorded version {meta['version']}: "
            "the file was modified or corrupted"
        )
    model.load_state_dict(state, strict=True)
    model.to(map_location).eval()
    return model, info
