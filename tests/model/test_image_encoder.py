"""Image encoder: GSDPE, shapes, input validation and the zoom transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psm_model import zoom_transform
from psm_model.image_encoder import gsd_sincos_embedding


def test_image_features_shape_dtype(tiny, toy):
    with torch.no_grad():
        feats = tiny.image_features(toy.images(3), gsd=10.0, zoom=1)
    assert feats.shape == (3, tiny.config.embed_dim) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()


def test_gsd_and_zoom_change_features(tiny, toy):
    images = toy.images(2)
    with torch.no_grad():
        base = tiny.image_features(images, gsd=10.0, zoom=1)
        zoomed = tiny.image_features(images, gsd=10.0, zoom=3)
        same_scale = tiny.image_features(images, gsd=30.0, zoom=1)
        per_sample = tiny.image_features(
            images, gsd=torch.tensor([10.0, 10.0]), zoom=torch.tensor([1, 3])
        )
    assert not torch.allclose(base, zoomed)
    assert torch.allclose(zoomed, same_scale, atol=1e-6)  # GSDPE depends on gsd x zoom only
    assert torch.allclose(per_sample[0], base[0], atol=1e-6) and torch.allclose(
        per_sample[1], zoomed[1], atol=1e-6
    )


def test_gsdpe_formula():
    emb = gsd_sincos_embedding(8, 3, torch.tensor([2.0]))
    assert emb.shape == (1, 9, 8)
    # patch (row 1, col 2): y = 1 * 2, x = 2 * 2, omega = [1, 1e-2]
    y, x = 2.0, 4.0
    expected = [
        np.sin(y),
        np.sin(y / 100),
        np.cos(y),
        np.cos(y / 100),
        np.sin(x),
        np.sin(x / 100),
        np.cos(x),
        np.cos(x / 100),
    ]
    assert np.allclose(emb[0, 5].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(2, 3, 16, 16), "must be 32x32"),
        (torch.rand(2, 4, 32, 32), "3 \\(RGB\\) channels"),
        (torch.rand(3, 32, 32), "rank 4"),
        (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), "must be float"),
        (torch.rand(1, 3, 32, 32) * 255, "in \\[0, 1\\]"),
    ],
)
def test_bad_images(tiny, images, message):
    with pytest.raises(ValueError, match=message):
        tiny.image_features(images, gsd=10.0)


@pytest.mark.parametrize(
    ("gsd", "zoom", "message"),
    [
        (10.0, 0, "zoom must be positive"),
        (-1.0, 1, "gsd must be positive"),
        (10.0, torch.ones(3), "zoom must be a number or a \\(2,\\)"),
    ],
)
def test_bad_gsd_zoom(tiny, toy, gsd, zoom, message):
    with pytest.raises(ValueError, match=message):
        tiny.image_features(toy.images(2), gsd=gsd, zoom=zoom)


def test_zoom_transform_crops_centre_and_resizes():
    tile = np.zeros((90, 90, 3), dtype=np.uint8)
    tile[30:60, 30:60] = 255  # the central 30x30 block
    one = zoom_transform(tile, 1, 30)
    assert one.shape == (3, 30, 30) and one.dtype == torch.float32
    assert torch.all(one == 1.0)
    three = zoom_transform(tile, 3, 30)
    assert three.shape == (3, 30, 30)
    assert (
        three[:, 15, 15].min() > 0.99 and three[:, 0, 0].max() < 0.01
    )  # centre white, corner black
    batch = zoom_transform(torch.rand(2, 3, 100, 100), 5, 20)
    assert batch.shape == (2, 3, 20, 20) and 0 <= float(batch.min()) and float(batch.max()) <= 1
    chw = zoom_transform(torch.rand(3, 64, 64), 2, 32)
    assert chw.shape == (3, 32, 32)


def test_zoom_transform_errors():
    tile = np.zeros((90, 90, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="zoom must be a positive integer"):
        zoom_transform(tile, 0, 30)
    with pytest.raises(ValueError, match="zoom must be a positive integer"):
        zoom_transform(tile, 1.5, 30)
    with pytest.raises(ValueError, match="too small for zoom 4"):
        zoom_transform(tile, 4, 30)
    with pytest.raises(ValueError, match="3 channels"):
        zoom_transform(np.zeros((90, 90, 5), dtype=np.uint8), 1, 30)
