"""Worker fixtures: a tiny registered model, small GeoTIFFs, a private queue, worker subprocesses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_helpers import Workers, write_geotiff


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The real tiny preset, saved with save_checkpoint."""
    import torch

    from psm_model import create_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(create_model("tiny"), path, metrics={"val_loss": 1.0})
    return path


@pytest.fixture(scope="session")
def model_version(db_url, tiny_checkpoint):
    """The tiny checkpoint registered in the session database."""
    from psm_db.engine import connection
    from psm_db.registry import register_model

    with connection(db_url) as conn:
        return register_model(conn, tiny_checkpoint)


@pytest.fixture(scope="session")
def geotiff(tmp_path_factory) -> Path:
    """A 6 km x 6 km UTM GeoTIFF at 10 m near 51 N, 1.5 E."""
    return write_geotiff(tmp_path_factory.mktemp("tif") / "scene.tif")


@pytest.fixture(scope="session")
def queue_name() -> str:
    """A queue of our own, so parallel test runs and real workers never take our tasks."""
    return f"psm-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def workers(db_url, queue_name, tmp_path) -> Iterator[Workers]:
    """Worker subprocesses for one test (all stopped afterwards)."""
    w = Workers(db_url, queue_name, tmp_path)
    yield w
    w.stop_all()
