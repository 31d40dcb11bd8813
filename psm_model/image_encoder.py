"""ViT satellite-image encoder with the GSD-aware sin-cos position embedding, and the zoom transform."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from psm_model.config import ImageConfig


def gsd_sincos_embedding(width: int, grid: int, scale: torch.Tensor) -> torch.Tensor:
    """2-D sin-cos position embedding on a ``grid x grid`` patch grid scaled per sample (GSDPE).

    Position ``pos`` along each axis becomes ``scale * pos`` with ``scale = gsd * zoom / G``, then
    ``[sin(y w), cos(y w), sin(x w), cos(x w)]`` with ``w_i = 10000^(-i / (width / 4))``.

    Args:
        width: Embedding width; a multiple of 4.
        grid: Patches per side.
        scale: (B,) per-sample position scale.

    Returns:
        (B, grid * grid, width) float32 embedding, patches in row-major order.
    """
    quarter = width // 4
    omega = 1.0 / (
        10000.0 ** (torch.arange(quarter, dtype=torch.float64, device=scale.device) / quarter)
    )
    coords = torch.arange(grid, dtype=torch.float64, device=scale.device)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    s = scale.to(torch.float64).view(-1, 1, 1)
    y = (ys.reshape(1, -1, 1) * s) * omega.view(1, 1, -1)
    x = (xs.reshape(1, -1, 1) * s) * omega.view(1, 1, -1)
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=-1).to(torch.float32)


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens with one strided convolution (MAE layout: ``proj``)."""

    def __init__(self, patch_size: int, width: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, width)."""
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (MAE layout: ``qkv``, ``proj``)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the (B, N, width) tokens."""
        b, n, w = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, w))


class Mlp(nn.Module):
    """Block feed-forward network (MAE layout: ``fc1``, ``fc2``)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply fc2(gelu(fc1(x)))."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (MAE layout: ``norm1``, ``attn``, ``norm2``, ``mlp``)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual attention then residual MLP."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _per_sample(
    value: float | int | torch.Tensor, batch: int, name: str, device: torch.device
) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.detach().to(device=device, dtype=torch.float32).reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        if t.numel() != batch:
            raise ValueError(
                f"{name} must be a number or a ({batch},) tensor, got shape {tuple(value.shape)}"
            )
    elif isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        t = torch.full((batch,), float(value), device=device)
    else:
        raise ValueError(f"{name} must be a number or a (B,) tensor, got {type(value).__name__}")
    if not bool(torch.isfinite(t).all()) or bool((t <= 0).any()):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return t


class ImageEncoder(nn.Module):
    """ViT over satellite tiles: GSDPE, transformer blocks, mean of patch tokens, LayerNorm, projection.

    There is no class token and no learned position table; positions come from
    :func:`gsd_sincos_embedding` at each tile's GSD x zoom. The module names follow the MAE / SatMAE
    pretrain layout so that checkpoint loads with a small key mapping (see ``psm_model.loaders``).

    Args:
        config: Image config.
        out_dim: Width of the output features (the fusion width, i.e. embed_dim).
    """

    def __init__(self, config: ImageConfig, out_dim: int) -> None:
        super().__init__()
        self.config = config
        self.grid = config.image_size // config.patch_size
        self.patch_embed = PatchEmbed(config.patch_size, config.width)
        self.blocks = nn.ModuleList(
            Block(config.width, config.heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self.fc_norm = nn.LayerNorm(config.width, eps=1e-6)
        self.proj = nn.Linear(config.width, out_dim)
        self.register_buffer(
            "pixel_mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)

    def check_images(self, images: torch.Tensor) -> None:
        """Raise ValueError unless ``images`` is a float (B, 3, S, S) batch in [0, 1] at the model size."""
        s = self.config.image_size
        if not isinstance(images, torch.Tensor):
            raise ValueError(
                f"images must be a torch tensor of shape (B, 3, {s}, {s}), got {type(images).__name__}"
            )
        if images.dim() != 4:
            raise ValueError(
                f"images must have rank 4 (B, 3, {s}, {s}), got shape {tuple(images.shape)}"
            )
        if images.shape[1] != 3:
            raise ValueError(
                f"images need 3 (RGB) channels in dim 1, got {images.shape[1]} (shape {tuple(images.shape)})"
            )
        if images.shape[2] != s or images.shape[3] != s:
            raise ValueError(
                f"images must be {s}x{s} pixels for this model, got {images.shape[2]}x{images.shape[3]}; "
                "use psm_model.zoom_transform(tile, zoom, out_size) to crop and resize"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"images must be float in [0, 1], got dtype {images.dtype}; divide uint8 pixels by 255"
            )
        if images.numel() and (float(images.min()) < -1e-3 or float(images.max()) > 1 + 1e-3):
            raise ValueError("images must be in [0, 1]; divide 0-255 pixel values by 255")

    def forward(
        self,
        images: torch.Tensor,
        gsd: float | int | torch.Tensor,
        zoom: float | int | torch.Tensor = 1,
    ) -> torch.Tensor:
        """Encode tiles to pre-fusion features.

        Args:
            images: Float (B, 3, S, S) in [0, 1] at the model's image size (already zoom-transformed).
            gsd: Ground sample distance of the source imagery in metres per pixel (number or (B,)).
            zoom: Zoom level(s) used to make the tiles (positive; number or (B,)).

        Returns:
            (B, out_dim) features.

        Raises:
            ValueError: On a wrong rank, channel count, size, dtype or range, or a bad gsd / zoom.
        """
        self.check_images(images)
        b = images.shape[0]
        device = images.device
        scale = (
            _per_sample(gsd, b, "gsd", device)
            * _per_sample(zoom, b, "zoom", device)
            / self.config.reference_gsd
        )
        x = (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)
        x = self.patch_embed(x.to(self.patch_embed.proj.weight.dtype))
        x = x + gsd_sincos_embedding(self.config.width, self.grid, scale).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.proj(self.fc_norm(x.mean(dim=1)))


def zoom_transform(tile: np.ndarray | torch.Tensor, zoom: int, out_size: int) -> torch.Tensor:
    """See a location at zoom level ``zoom``: centre-crop ``zoom * out_size`` pixels, resize to ``out_size``.

    Args:
        tile: A large tile centred on the location: uint8 (0-255) or float (0-1); HWC or CHW with 3
            channels, or a (B, 3, H, W) batch. numpy arrays and tensors are both accepted.
        zoom: Zoom level, any positive integer (the paper uses 1, 3, 5).
        out_size: Output side in pixels (the tile size, e.g. 256 or 300; the model then expects its
            own image size, which may call for a further resize or centre crop).

    Returns:
        Float32 tensor in [0, 1], (3, out_size, out_size) or (B, 3, out_size, out_size).

    Raises:
        ValueError: On a non-positive or non-integer zoom, a bad layout, or a tile too small for the crop.
    """
    if isinstance(zoom, bool) or not isinstance(zoom, int | np.integer) or zoom < 1:
        raise ValueError(f"zoom must be a positive integer (1, 3, 5, ...), got {zoom!r}")
    if isinstance(out_size, bool) or not isinstance(out_size, int | np.integer) or out_size < 1:
        raise ValueError(f"out_size must be a positive integer, got {out_size!r}")
    t = torch.from_numpy(np.ascontiguousarray(tile)) if isinstance(tile, np.ndarray) else tile
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"tile must be a numpy array or torch tensor, got {type(tile).__name__}")
    if t.dtype == torch.uint8:
        t = t.to(torch.float32) / 255.0
    elif t.is_floating_point():
        t = t.to(torch.float32)
    else:
        raise ValueError(f"tile must be uint8 (0-255) or float (0-1), got dtype {t.dtype}")
    batched = t.dim() == 4
    if t.dim() == 3:
        if t.shape[0] == 3:
            t = t.unsqueeze(0)
        elif t.shape[-1] == 3:
            t = t.permute(2, 0, 1).unsqueeze(0)
        else:
            raise ValueError(f"tile must have 3 channels (HWC or CHW), got shape {tuple(t.shape)}")
    elif not batched or t.shape[1] != 3:
        raise ValueError(
            f"tile must be (H, W, 3), (3, H, W) or (B, 3, H, W), got shape {tuple(t.shape)}"
        )
    h, w = t.shape[-2:]
    crop = int(zoom) * int(out_size)
    if crop > h or crop > w:
        raise ValueError(
            f"tile of {h}x{w} px is too small for zoom {zoom} at out_size {out_size}: the crop needs {crop}x{crop} px"
        )
    top, left = (h - crop) // 2, (w - crop) // 2
    t = t[..., top : top + crop, left : left + crop]
    if crop != out_size:
        t = F.interpolate(
            t, size=(out_size, out_size), mode="bilinear", antialias=True, align_corners=False
        )
    t = t.clamp(0.0, 1.0)
    return t if batched else t[0]
