"""Metadata: validation, encodings, masking and per-type dropout."""

from __future__ import annotations

import math

import pytest
import torch

from psm_model import MetadataBatch
from psm_model.fusion import encode_cyclic, encode_latlon
from psm_model.metadata import METADATA_TYPES


def test_from_values_broadcast_and_none():
    meta = MetadataBatch.from_values(
        lat=[10.0, None, -5.0],
        lon=[20.0, None, 170.0],
        month=[5, None, 12],
        hour=6,
        audio_source=["iNaturalist", None, "yfcc"],
    )
    assert len(meta) == 3
    assert meta.present.tolist() == [
        [True, False, True, True, True],
        [False, False, False, False, True],
        [True, False, True, True, True],
    ]
    assert meta.hour.tolist() == [6, 6, 6] and meta.month.tolist() == [5, 0, 12]
    assert meta.audio_source.tolist()[0] == 1  # AUDIO_SOURCES index of inaturalist
    single = MetadataBatch.from_values(month=5)
    assert len(single) == 1 and single.present[0].tolist() == [False, False, False, True, False]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"month": 0}, "month must be an integer in 1..12"),
        ({"month": 13}, "month must be an integer in 1..12"),
        ({"hour": 24}, "hour must be an integer in 0..23"),
        ({"audio_source": "spotify"}, "unknown audio source 'spotify'"),
        ({"caption_source": "gpt"}, "unknown caption source 'gpt'"),
        ({"lat": 95.0, "lon": 0.0}, "lat must be in \\[-90, 90\\]"),
        ({"lat": 10.0}, "give both lat and lon"),
        ({"month": [1, 2], "hour": [1, 2, 3]}, "entries but the batch has"),
    ],
)
def test_from_values_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MetadataBatch.from_values(**kwargs)


def test_encodings_follow_facts_page():
    ll = encode_latlon(torch.tensor([45.0]), torch.tensor([-90.0]))
    assert torch.allclose(
        ll, torch.tensor([[1.0, 0.0, -1.0, 0.0]]), atol=1e-6
    )  # sin(pi/2), cos(pi/2), sin(-pi/2)...
    hour = encode_cyclic(torch.tensor([6]), 24.0)
    assert torch.allclose(
        hour, torch.tensor([[1.0, math.cos(math.pi / 2)]]), atol=1e-6
    )  # period 24, not 23
    month = encode_cyclic(torch.tensor([3]), 12.0)
    assert torch.allclose(month, torch.tensor([[1.0, 0.0]]), atol=1e-6)


def test_dropping_all_metadata_equals_no_metadata(tiny, toy):
    images = toy.images(4)
    meta = toy.meta(4)
    with torch.no_grad():
        feats = tiny.image_features(images, gsd=10.0)
        none_mu, none_lv = tiny.fuse_image(feats, None)
        all_dropped = tiny.fuse_image(feats, meta.drop(*METADATA_TYPES))
        empty = tiny.fuse_image(feats, MetadataBatch.none(4))
        with_meta = tiny.fuse_image(feats, meta)
    assert torch.equal(none_mu, all_dropped[0]) and torch.equal(none_lv, all_dropped[1])
    assert torch.equal(none_mu, empty[0])
    assert not torch.allclose(none_mu, with_meta[0])


def test_masked_values_do_not_matter(tiny, toy):
    feats = tiny.image_features(toy.images(2), gsd=10.0).detach()
    a = MetadataBatch.from_values(month=[3, 7], hour=[1, 2]).drop("month")
    b = MetadataBatch.from_values(month=[11, 1], hour=[1, 2]).drop("month")
    c = MetadataBatch.from_values(hour=[1, 2])
    with torch.no_grad():
        ya, yb, yc = (tiny.fuse_image(feats, m)[0] for m in (a, b, c))
    assert torch.allclose(ya, yb, atol=1e-6) and torch.allclose(ya, yc, atol=1e-6)


def test_one_row_meta_broadcasts(tiny, toy):
    feats = tiny.image_features(toy.images(3), gsd=10.0).detach()
    one = MetadataBatch.from_values(month=5, hour=20, audio_source="inaturalist")
    with torch.no_grad():
        broadcast = tiny.fuse_image(feats, one)[0]
        explicit = tiny.fuse_image(
            feats,
            MetadataBatch.from_values(month=5, hour=20, audio_source="inaturalist", batch_size=3),
        )[0]
    assert torch.allclose(broadcast, explicit, atol=1e-6)
    with pytest.raises(ValueError, match="metadata has 2 rows"):
        tiny.fuse_image(feats, toy.meta(2))


def test_metadata_dropout_in_training_only(fresh_tiny, toy):
    fusion = fresh_tiny.fusion
    feats = torch.randn(64, fresh_tiny.config.embed_dim)
    meta = toy.meta(64)
    fusion.eval()
    with torch.no_grad():
        eval_out = fusion(feats, meta)
        assert torch.equal(eval_out, fusion(feats, meta))
        fusion.train()
        torch.manual_seed(0)
        train_out = fusion(feats, meta)
    # Some rows lost some metadata (dropout 0.5 per type), so some rows differ from eval.
    differs = (train_out - eval_out).abs().amax(1) > 1e-6
    assert 0 < int(differs.sum()) <= 64


def test_from_values_vectorised_arrays():
    import numpy as np

    lat = np.array([10.0, np.nan, -30.5, 89.0])
    lon = torch.tensor([5.0, float("nan"), 120.0, -179.0])
    meta = MetadataBatch.from_values(
        lat=lat, lon=lon, month=np.array([1, 2, 3, 12]), hour=20, audio_source="inaturalist"
    )
    assert meta.present[:, 2].tolist() == [True, False, True, True]  # NaN in an array = absent
    assert meta.lat.tolist()[2] == -30.5 and meta.month.tolist() == [1, 2, 3, 12]
    assert meta.audio_source.tolist() == [1, 1, 1, 1] and meta.hour.tolist() == [20] * 4
    with pytest.raises(ValueError, match="month must be an integer in 1..12"):
        MetadataBatch.from_values(month=np.array([1, 13]))
    with pytest.raises(ValueError, match="hour must be an integer in 0..23"):
        MetadataBatch.from_values(hour=[1.5])
    with pytest.raises(ValueError, match="lat must be in"):
        MetadataBatch.from_values(lat=np.array([91.0]), lon=np.array([0.0]))
    with pytest.raises(ValueError, match="audio source must be a name"):
        MetadataBatch.from_values(audio_source=[["yfcc"]])
    with pytest.raises(ValueError, match="must be a scalar or 1-D"):
        MetadataBatch.from_values(month=np.ones((2, 2)))
    big = MetadataBatch.from_values(lat=np.zeros(50_000), lon=np.zeros(50_000), month=5, hour=6)
    assert len(big) == 50_000 and bool(big.present[:, 2:].all())
