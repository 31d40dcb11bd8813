"""The model side of a worker: load a version once per process (lazily) and run it in batches.

Imports only numpy, torch and psm_model, so it runs anywhere the model runs (a GPU box too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from psm_db.tiles import GridSpec, TileSet
    from worker.imagery import ImagerySource
    from worker.plan import ConditionSpec

log = logging.getLogger(__name__)


class VersionRef(Protocol):
    """What loading needs from a model version row."""

    @property
    def version(self) -> str:
        """The content hash."""

    @property
    def checkpoint_path(self) -> str:
        """Where the checkpoint file is."""



_MODELS: dict[str, Any] = {}


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def get_model(mv: VersionRef, device: str = "auto") -> Any:
    """The model of version ``mv``, loaded once per process (lazily, on first use)."""
    key = f"{mv.version}@{device}"
    model = _MODELS.get(key)
    if model is None:
        from psm_model import load_checkpoint

        dev = resolve_device(device)
        log.info("loading model %s from %s on %s", mv.version, mv.checkpoint_path, dev)
        model, info = load_checkpoint(mv.checkpoint_path, map_location=dev)
        if info["version"] != mv.version:
            raise ValueError(
                f"checkpoint {mv.checkpoint_path} holds model {info['version']}, not {mv.version}; "
                "re-register the checkpoint"
            )
        model.eval()
        _MODELS[key] = model
    return model


def compute_features(model: Any, images: np.ndarray, spec: GridSpec, batch_size: int) -> np.ndarray:
    """Pre-fusion image features of ``images`` (n, 3, S, S) in batches: (n, F) float32."""
    import torch

    out = []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size]))
            f = model.image_features(x, gsd=float(spec.gsd), zoom=int(spec.zoom))
            out.append(f.float().cpu().numpy())
    if not out:
        return np.empty((0, 0), dtype=np.float32)
    return np.concatenate(out)


def read_and_compute_features(
    source: ImagerySource, tiles: TileSet, model: Any, batch_size: int,
    lap: Callable[[str], None] = lambda step: None,
) -> np.ndarray:
    """Image features of ``tiles``, reading batch i+1 in a thread while the model runs on batch i.

    Raster reads (GDAL) and PyTorch both release the GIL, so reading is hidden behind compute.
    Every tile is computed, whatever share of it holds data (see :func:`read_valid_and_compute_features`).
    """
    features, _ = read_valid_and_compute_features(source, tiles, model, batch_size, lap=lap)
    return features


def read_valid_and_compute_features(
    source: ImagerySource, tiles: TileSet, model: Any, batch_size: int, *,
    compute: np.ndarray | None = None, min_valid: float = 0.0,
    lap: Callable[[str], None] = lambda step: None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``tiles`` with their share of valid pixels, and compute the features of those that qualify.

    A tile's features are computed when ``compute`` (a boolean mask, default all) selects it and
    at least ``min_valid`` of its pixels hold data; the other rows of the result are zero.
    Batch i+1 is read in a thread while the model runs on batch i.

    Returns:
        ``(features (n, F) float32, valid (n,) float64)``; ``F`` is 0 when nothing was computed.

    Raises:
        ValueError: When the imagery cannot be read (the source names the file).
    """
    from concurrent.futures import ThreadPoolExecutor

    n = len(tiles)
    todo = np.ones(n, dtype=bool) if compute is None else np.asarray(compute, dtype=bool)
    size = int(model.config.image.image_size)
    pieces = [(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
    valid = np.zeros(n, dtype=np.float64)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="psm-read") as pool:
        pending = pool.submit(source.read_valid, tiles.slice(*pieces[0]), size) if pieces else None
        for i, (start, stop) in enumerate(pieces):
            assert pending is not None
            images, share = pending.result()
            lap("read")
            pending = pool.submit(source.read_valid, tiles.slice(*pieces[i + 1]), size) if i + 1 < len(pieces) else None
            valid[start:stop] = share
            keep = np.flatnonzero(todo[start:stop] & (share >= min_valid))
            if len(keep):
                parts.append((start + keep, compute_features(model, images[keep], tiles.spec, batch_size)))
            lap("features")
    if not parts:
        return np.empty((n, 0), dtype=np.float32), valid
    features = np.zeros((n, parts[0][1].shape[1]), dtype=np.float32)
    for idx, f in parts:
        features[idx] = f
    return features, valid


def compute_gaussians(
    model: Any, features: np.ndarray, lat: np.ndarray, lon: np.ndarray, cond: ConditionSpec, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fusion and heads for one condition: (mu, sigma^2), each (n, d) float32."""
    import torch

    from psm_model import MetadataBatch

    mus, vars_ = [], []
    with torch.inference_mode():
        for s in range(0, len(features), batch_size):
            e = min(len(features), s + batch_size)
            meta = MetadataBatch.from_values(
                lat=[float(v) for v in lat[s:e]], lon=[float(v) for v in lon[s:e]],
                month=cond.month, hour=cond.hour, audio_source=cond.audio_source,
                caption_source=cond.caption_source,
            ).to(model.device)
            mu, logvar = model.fuse_image(torch.from_numpy(features[s:e]).to(model.device), meta)
            mus.append(mu.float().cpu().numpy())
            vars_.append(torch.exp(logvar.double()).float().cpu().numpy())
    return np.concatenate(mus), np.concatenate(vars_)


