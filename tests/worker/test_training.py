"""The psm.train job body: train, register the checkpoint, store its metrics, report progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from psm_db import jobs
from worker.training import TrainRequest, run_training_job, submit_training


@dataclass
class FakeResult:
    checkpoint_path: str
    version: str
    best_metrics: dict = field(default_factory=dict)


def test_training_job_registers_the_checkpoint_with_its_metrics(db, conn, settings, tmp_path, tiny_checkpoint):
    import shutil

    from psm_model import read_checkpoint_info


    def fake_train(dataset_dir, out_dir, preset="demo", loss="pcmepp", use_metadata=True, epochs=None,
                   progress=None, **overrides):
        assert Path(dataset_dir) == tmp_path and preset == "tiny" and loss == "pcmepp" and epochs == 2
        for step in range(3):
            progress({"stage": "train", "done": step + 1, "total": 3, "loss": 1.0 / (step + 1)})
        path = Path(out_dir) / "best.safetensors"
        shutil.copy(tiny_checkpoint, path)
        return FakeResult(str(path), read_checkpoint_info(path)["version"], {"val_i2a_r10": 0.25})

    job_id = submit_training(db, TrainRequest(str(tmp_path), "tiny", "pcmepp", True, 2), lambda j: "no-celery")
    reports = []
    result = run_training_job(db, str(job_id), settings, train=fake_train,
                              progress=lambda d, t, m: reports.append((d, t, m)))
    assert reports[-1][:2] == (3, 3) and "loss" in reports[-1][2]
    row = jobs.get_job(db, job_id)
    assert row["status"] == "succeeded" and row["model_version"] == result["version"]
    stored = conn.execute("SELECT metrics, checkpoint_path FROM psm.model_versions WHERE version = %s",
                          (result["version"],)).fetchone()
    assert stored[0]["val_i2a_r10"] == 0.25
    assert Path(stored[1]).is_relative_to(settings.checkpoints_dir)


def test_training_request_is_validated(db, conn, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        submit_training(db, TrainRequest(str(tmp_path / "nope")), lambda j: "x")
    with pytest.raises(ValueError, match="unknown preset"):
        submit_training(db, TrainRequest(str(tmp_path), preset="huge"), lambda j: "x")
    with pytest.raises(ValueError, match="unknown loss"):
        submit_training(db, TrainRequest(str(tmp_path), loss="mse"), lambda j: "x")
    row = conn.execute("SELECT status, error FROM psm.jobs WHERE kind = 'train' ORDER BY created_at DESC LIMIT 1").fetchone()
    assert row[0] == "failed" and "unknown loss" in row[1]
