"""Fixtures for the model tests: tiny models, toy batches and synthetic audio, all built in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psm_model import MetadataBatch, create_model

SR = 16_000


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # tiny ops: one thread is faster, and immune to a busy shared CPU


@pytest.fixture(scope="session")
def tiny():
    """A tiny PCME++ model in eval mode (shared; tests must not train it)."""
    model = create_model("tiny", seed=0)
    return model.eval()


@pytest.fixture
def fresh_tiny():
    """A tiny model a test may train or modify."""
    return create_model("tiny", seed=0)


class Toy:
    """Builders for toy inputs, handed to tests through the ``toy`` fixture."""

    sr = SR
    captions = None  # set below

    @staticmethod
    def images(batch: int, size: int = 32, seed: int = 0) -> torch.Tensor:
        return make_images(batch, size, seed)

    @staticmethod
    def waves(batch: int, **kwargs) -> list[np.ndarray]:
        return make_waves(batch, **kwargs)

    @staticmethod
    def meta(batch: int) -> MetadataBatch:
        return make_meta(batch)


@pytest.fixture(scope="session")
def toy() -> type[Toy]:
    return Toy


def make_images(batch: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g)


def make_waves(
    batch: int, seconds: float = 0.6, sr: int = SR, seed: int = 0, long_every: int = 2
) -> list[np.ndarray]:
    """Tones plus noise; every ``long_every``-th clip is longer than the tiny clip length (1 s)."""
    rng = np.random.default_rng(seed)
    waves = []
    for i in range(batch):
        dur = 1.7 if long_every and i % long_every == 1 else seconds
        t = np.arange(int(dur * sr)) / sr
        wave = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.standard_normal(t.size)
        waves.append(wave.astype(np.float32))
    return waves


def make_meta(batch: int) -> MetadataBatch:
    sources = ["yfcc", "inaturalist", "aporee", "freesound"]
    return MetadataBatch.from_values(
        lat=[float((37 * i) % 170 - 85) for i in range(batch)],
        lon=[float((53 * i) % 350 - 175) for i in range(batch)],
        month=[(i % 12) + 1 for i in range(batch)],
        hour=[(3 * i) % 24 for i in range(batch)],
        audio_source=[sources[i % 4] for i in range(batch)],
        caption_source=["metadata", "captioner_a", "captioner_b"] * (batch // 3)
        + ["metadata"] * (batch % 3),
    )


CAPTIONS = [
    "the sound of insects at night",
    "a rooster crowing in the morning",
    "cars passing and a car horn",
    "waves on a beach",
    "sheep on a farm",
    "church bells in a village",
    "rain and thunder",
    "people talking in a market",
]


Toy.captions = CAPTIONS
