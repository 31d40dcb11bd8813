"""Training augmentations for tiles: RandomResizedCrop (scale 0.2-1) and horizontal flip, in torch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_resized_crop_boxes(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    attempts: int = 10,
) -> list[tuple[int, int, int, int]]:
    """Crop boxes ``(top, left, h, w)`` drawn as torchvision's RandomResizedCrop draws them.

    Area is uniform in ``scale`` times the image area, the log aspect ratio uniform in ``ratio``;
    after ``attempts`` failed draws the whole image (centre crop within ``ratio``) is used.
    """
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    boxes = []
    for _ in range(batch):
        box = None
        for _ in range(attempts):
            u = torch.rand(3, generator=generator).tolist()
            target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
            aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
                left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
                box = (top, left, h, w)
                break
        if box is None:
            in_ratio = width / height
            if in_ratio < ratio[0]:
                w, h = width, int(round(width / ratio[0]))
            elif in_ratio > ratio[1]:
                h, w = height, int(round(height * ratio[1]))
            else:
                w, h = width, height
            box = ((height - h) // 2, (width - w) // 2, h, w)
        boxes.append(box)
    return boxes


def augment_tiles(
    tiles: torch.Tensor,
    out_size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    flip: bool = True,
) -> torch.Tensor:
    """RandomResizedCrop to ``out_size`` then a random horizontal flip, per tile.

    Args:
        tiles: (B, 3, H, W) float in [0, 1] (already zoom-transformed).
        out_size: Output side in pixels.
        generator: Random generator (seeded by the caller for reproducible runs).
        scale: Crop area range relative to the tile.
        flip: Flip half of the tiles horizontally.

    Returns:
        (B, 3, out_size, out_size) float in [0, 1].
    """
    if tiles.dim() != 4 or tiles.shape[1] != 3:
        raise ValueError(f"tiles must be (B, 3, H, W), got shape {tuple(tiles.shape)}")
    b, _, h, w = tiles.shape
    boxes = random_resized_crop_boxes(b, h, w, generator, scale)
    out = torch.empty(b, 3, out_size, out_size, dtype=tiles.dtype)
    for i, (top, left, ch, cw) in enumerate(boxes):
        crop = tiles[i : i + 1, :, top : top + ch, left : left + cw]
        out[i] = F.interpolate(crop, size=(out_size, out_size), mode="bilinear", align_corners=False)[0]
    if flip:
        mask = torch.rand(b, generator=generator) < 0.5
        out[mask] = out[mask].flip(-1)
    return out.clamp_(0.0, 1.0)


def center_tiles(tiles: torch.Tensor, out_size: int) -> torch.Tensor:
    """Evaluation view: a centre crop of ``out_size`` (resized down first if the tile is smaller)."""
    if tiles.dim() != 4:
        raise ValueError(f"tiles must be (B, 3, H, W), got shape {tuple(tiles.shape)}")
    h, w = tiles.shape[-2:]
    if h < out_size or w < out_size:
        return F.interpolate(tiles, size=(out_size, out_size), mode="bilinear", align_corners=False)
    top, left = (h - out_size) // 2, (w - out_size) // 2
    return tiles[..., top : top + out_size, left : left + out_size]
