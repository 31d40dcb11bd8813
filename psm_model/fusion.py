"""Metadata tokens (lat/lon, month, hour, audio and caption source) fused with image features."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from psm_model.config import FusionConfig
from psm_model.metadata import (
    AUDIO_SOURCES,
    CAPTION_SOURCES,
    METADATA_TYPES,
    audio_source_index,
    caption_source_index,
    check_hour,
    check_latlon,
    check_month,
)


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor | np.ndarray):
        return value.item()
    return value


def _is_sequence(value: Any) -> bool:
    if isinstance(value, torch.Tensor | np.ndarray):
        return value.ndim > 0
    return isinstance(value, list | tuple)


def _length(value: Any, name: str) -> int | None:
    """Length of a per-row argument, or None for a scalar (broadcast)."""
    if isinstance(value, torch.Tensor | np.ndarray) and value.ndim > 1:
        raise ValueError(f"{name} must be a scalar or 1-D, got shape {tuple(value.shape)}")
    return len(value) if _is_sequence(value) else None


def _numbers(value: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, present mask) of a numeric column; None (or NaN in an array) is absent."""
    if value is None:
        return np.zeros(n), np.zeros(n, dtype=bool)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray) and value.ndim > 0 and value.dtype.kind in "fiu":
        values = value.astype(np.float64)
        present = ~np.isnan(values)
        return np.where(present, values, 0.0), present
    items = [_scalar(v) for v in value] if _is_sequence(value) else [_scalar(value)] * n
    present = np.array([v is not None for v in items], dtype=bool).reshape(n)
    values = np.zeros(n)
    for i, v in enumerate(items):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            raise ValueError(f"metadata values must be numbers or None, got {v!r}")
        values[i] = float(v)
    return values, present


def _check_integers(
    values: np.ndarray, present: np.ndarray, low: int, high: int, check: Any
) -> None:
    """Raise the ``check`` function's ValueError for the first present value not an integer in range."""
    bad = present & ((values != np.round(values)) | (values < low) | (values > high))
    if bad.any():
        v = float(values[np.flatnonzero(bad)[0]])
        check(int(v) if v.is_integer() else v)


def _names(
    value: Any, n: int, names: tuple[str, ...], lookup: Any, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """(int64 indices, present mask) of a source column given as names, indices or None."""
    items = [_scalar(v) for v in value] if _is_sequence(value) else [_scalar(value)] * n
    memo: dict[Any, int | None] = {}
    index = np.zeros(n, dtype=np.int64)
    present = np.zeros(n, dtype=bool)
    for i, v in enumerate(items):
        if not isinstance(v, str | int | np.integer | None):
            _source_index(v, names, lookup, what)  # raises a clear ValueError
        if v not in memo:
            memo[v] = _source_index(v, names, lookup, what)
        if memo[v] is not None:
            index[i] = memo[v]
            present[i] = True
    return index, present


def _source_index(value: Any, names: tuple[str, ...], lookup: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        if not 0 <= int(value) < len(names):
            raise ValueError(
                f"{what} index {value} out of range 0..{len(names) - 1} ({', '.join(names)})"
            )
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a name ({', '.join(names)}) or None, got {value!r}")
    return lookup(value)


@dataclass(frozen=True)
class MetadataBatch:
    """Metadata of a batch, encoded for the fusion module; absent entries are masked.

    Attributes:
        lat: (B,) latitude in degrees (0 where absent).
        lon: (B,) longitude in degrees (0 where absent).
        month: (B,) month 1..12 (0 where absent).
        hour: (B,) hour 0..23 (0 where absent).
        audio_source: (B,) index into AUDIO_SOURCES (0 where absent).
        caption_source: (B,) index into CAPTION_SOURCES (0 where absent).
        present: (B, 5) bool, one column per type in METADATA_TYPES order
            (audio_source, caption_source, latlon, month, hour).
    """

    lat: torch.Tensor
    lon: torch.Tensor
    month: torch.Tensor
    hour: torch.Tensor
    audio_source: torch.Tensor
    caption_source: torch.Tensor
    present: torch.Tensor

    def __len__(self) -> int:
        return int(self.present.shape[0])

    @classmethod
    def none(cls, batch_size: int, device: torch.device | str | None = None) -> MetadataBatch:
        """A batch with every metadata type masked (the same as passing no metadata)."""
        if batch_size < 0:
            raise ValueError(f"batch_size must be >= 0, got {batch_size}")
        z = torch.zeros(batch_size, device=device)
        zi = torch.zeros(batch_size, dtype=torch.long, device=device)
        present = torch.zeros(batch_size, len(METADATA_TYPES), dtype=torch.bool, device=device)
        return cls(z, z.clone(), zi, zi.clone(), zi.clone(), zi.clone(), present)

    @classmethod
    def from_values(
        cls,
        lat: Any = None,
        lon: Any = None,
        month: Any = None,
        hour: Any = None,
        audio_source: Any = None,
        caption_source: Any = None,
        *,
        batch_size: int | None = None,
    ) -> MetadataBatch:
        """Validate and encode metadata given as scalars or per-row lists.

        Each argument is a scalar (broadcast to the batch), a sequence (list, numpy array, tensor)
        of length B, or None. A None entry (or a None argument, or NaN in a numeric array) masks
        that type for that row. lat and lon go together. Validation is vectorised, so map-sized
        batches (one row per tile) are cheap.

        Args:
            lat: Latitude(s) in degrees, [-90, 90].
            lon: Longitude(s) in degrees, [-180, 180].
            month: Month(s) 1..12.
            hour: Hour(s) of day 0..23.
            audio_source: Audio source name(s) from AUDIO_SOURCES (or their index).
            caption_source: Caption source name(s) from CAPTION_SOURCES (or their index).
            batch_size: B, needed when every argument is a scalar (default 1 then).

        Returns:
            The encoded batch.

        Raises:
            ValueError: On out-of-range values, unknown source names, lat without lon, or lengths
                that disagree.
        """
        args = {
            "lat": lat,
            "lon": lon,
            "month": month,
            "hour": hour,
            "audio_source": audio_source,
            "caption_source": caption_source,
        }
        lengths = {k: _length(v, k) for k, v in args.items()}
        lengths = {k: n for k, n in lengths.items() if n is not None}
        if batch_size is None:
            batch_size = next(iter(lengths.values())) if lengths else 1
        for key, n in lengths.items():
            if n != batch_size:
                raise ValueError(f"{key} has {n} entries but the batch has {batch_size}: {lengths}")
        n = batch_size
        lat_v, lat_p = _numbers(lat, n)
        lon_v, lon_p = _numbers(lon, n)
        both = lat_p & lon_p
        if not np.array_equal(lat_p, lon_p):
            i = int(np.flatnonzero(lat_p != lon_p)[0])
            raise ValueError(f"row {i}: give both lat and lon or neither")
        bad = both & ~(
            np.isfinite(lat_v) & np.isfinite(lon_v) & (np.abs(lat_v) <= 90) & (np.abs(lon_v) <= 180)
        )
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            check_latlon(float(lat_v[i]), float(lon_v[i]))
        month_v, month_p = _numbers(month, n)
        _check_integers(month_v, month_p, 1, 12, check_month)
        hour_v, hour_p = _numbers(hour, n)
        _check_integers(hour_v, hour_p, 0, 23, check_hour)
        as_v, as_p = _names(audio_source, n, AUDIO_SOURCES, audio_source_index, "audio source")
        cs_v, cs_p = _names(
            caption_source, n, CAPTION_SOURCES, caption_source_index, "caption source"
        )
        present = np.stack([as_p, cs_p, both, month_p, hour_p], axis=1).reshape(
            n, len(METADATA_TYPES)
        )
        return cls(
            lat=torch.from_numpy(np.where(both, lat_v, 0.0).astype(np.float32)),
            lon=torch.from_numpy(np.where(both, lon_v, 0.0).astype(np.float32)),
            month=torch.from_numpy(np.where(month_p, month_v, 0).astype(np.int64)),
            hour=torch.from_numpy(np.where(hour_p, hour_v, 0).astype(np.int64)),
            audio_source=torch.from_numpy(as_v),
            caption_source=torch.from_numpy(cs_v),
            present=torch.from_numpy(present),
        )

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]]) -> MetadataBatch:
        """Build a batch from per-sample dicts with any of the keys of :meth:`from_values`."""
        keys = ("lat", "lon", "month", "hour", "audio_source", "caption_source")
        for r in records:
            unknown = set(r) - set(keys)
            if unknown:
                raise ValueError(f"unknown metadata key(s) {sorted(unknown)}; expected {keys}")
        return cls.from_values(
            **{k: [r.get(k) for r in records] for k in keys}, batch_size=len(records)
        )

    def to(self, device: torch.device | str) -> MetadataBatch:
        """Move every tensor to ``device``."""
        return MetadataBatch(*(getattr(self, f).to(device) for f in self._fields()))

    def drop(self, *types: str) -> MetadataBatch:
        """Return a copy with the named metadata types (see METADATA_TYPES) masked for every row."""
        present = self.present.clone()
        for t in types:
            if t not in METADATA_TYPES:
                raise ValueError(
                    f"unknown metadata type {t!r}; expected one of {', '.join(METADATA_TYPES)}"
                )
            present[:, METADATA_TYPES.index(t)] = False
        return replace(self, present=present)

    def select(self, index: torch.Tensor | slice | Sequence[int]) -> MetadataBatch:
        """Return the rows picked by ``index``."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long, device=self.present.device)
        return MetadataBatch(*(getattr(self, f)[index] for f in self._fields()))

    def repeat(self, batch_size: int) -> MetadataBatch:
        """Broadcast a one-row batch to ``batch_size`` rows."""
        if len(self) != 1:
            raise ValueError(
                f"only a one-row MetadataBatch can be repeated, this one has {len(self)} rows"
            )
        return MetadataBatch(
            *(
                getattr(self, f).expand(batch_size, *getattr(self, f).shape[1:]).clone()
                for f in self._fields()
            )
        )

    @staticmethod
    def _fields() -> tuple[str, ...]:
        return ("lat", "lon", "month", "hour", "audio_source", "caption_source", "present")


def encode_latlon(lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """[sin(pi lat/90), cos(pi lat/90), sin(pi lon/180), cos(pi lon/180)], shape (B, 4)."""
    a = math.pi * lat / 90.0
    o = math.pi * lon / 180.0
    return torch.stack([a.sin(), a.cos(), o.sin(), o.cos()], dim=-1)


def encode_cyclic(value: torch.Tensor, period: float) -> torch.Tensor:
    """[sin(2 pi v / period), cos(2 pi v / period)], shape (B, 2); period 12 for months, 24 for hours."""
    x = 2.0 * math.pi * value.to(torch.float32) / period
    return torch.stack([x.sin(), x.cos()], dim=-1)


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class MetadataFusion(nn.Module):
    """Transformer over [special, image, audio source, caption source, lat/lon, month, hour] tokens.

    The special token's output is the metadata-conditioned image feature. Absent metadata is
    zeroed and removed from attention by the key-padding mask; in training each type is also
    masked per sample with probability ``metadata_dropout``.

    Args:
        config: Fusion config.
        width: Token width (embed_dim).
    """

    def __init__(self, config: FusionConfig, width: int) -> None:
        super().__init__()
        self.config = config
        h = config.meta_hidden
        self.latlon = _mlp(4, h, width)
        self.month = _mlp(2, h, width)
        self.hour = _mlp(2, h, width)
        self.audio_source = nn.Embedding(len(AUDIO_SOURCES), width)
        self.caption_source = nn.Embedding(len(CAPTION_SOURCES), width)
        self.special = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width,
            config.heads,
            int(width * config.mlp_ratio),
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, config.layers, norm=nn.LayerNorm(width), enable_nested_tensor=False
        )

    def forward(
        self, image_features: torch.Tensor, meta: MetadataBatch | None = None
    ) -> torch.Tensor:
        """Fuse (B, width) image features with metadata.

        Args:
            image_features: Output of the image encoder.
            meta: Metadata for the same B rows; None masks every type.

        Returns:
            (B, width) output of the special token.

        Raises:
            ValueError: On a wrong rank or a batch size that differs from the metadata's.
        """
        if not isinstance(image_features, torch.Tensor) or image_features.dim() != 2:
            shape = (
                tuple(image_features.shape) if isinstance(image_features, torch.Tensor) else None
            )
            raise ValueError(f"image features must be a (B, F) tensor, got {shape}")
        b, device = image_features.shape[0], image_features.device
        if meta is None:
            meta = MetadataBatch.none(b, device)
        if not isinstance(meta, MetadataBatch):
            raise ValueError(f"meta must be a MetadataBatch or None, got {type(meta).__name__}")
        if len(meta) == 1 and b != 1:
            meta = meta.repeat(b)
        if len(meta) != b:
            raise ValueError(f"metadata has {len(meta)} rows but there are {b} image features")
        meta = meta.to(device)
        keep = meta.present
        if self.training and self.config.metadata_dropout > 0:
            keep = keep & (torch.rand(keep.shape, device=device) >= self.config.metadata_dropout)
        dtype = image_features.dtype
        meta_tokens = torch.stack(
            [
                self.audio_source(meta.audio_source).to(dtype),
                self.caption_source(meta.caption_source).to(dtype),
                self.latlon(encode_latlon(meta.lat, meta.lon).to(self.latlon[0].weight.dtype)).to(
                    dtype
                ),
                self.month(encode_cyclic(meta.month, 12.0).to(self.month[0].weight.dtype)).to(
                    dtype
                ),
                self.hour(encode_cyclic(meta.hour, 24.0).to(self.hour[0].weight.dtype)).to(dtype),
            ],
            dim=1,
        )
        meta_tokens = meta_tokens * keep.unsqueeze(-1).to(dtype)
        tokens = torch.cat(
            [self.special.to(dtype).expand(b, -1, -1), image_features.unsqueeze(1), meta_tokens],
            dim=1,
        )
        padding = torch.cat([torch.zeros(b, 2, dtype=torch.bool, device=device), ~keep], dim=1)
        return self.encoder(tokens, src_key_padding_mask=padding)[:, 0]
