"""Helpers for the worker tests: GeoTIFF writers, worker subprocesses, job polling."""


from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
PSM = str(Path(sys.executable).with_name("psm"))


def write_geotiff(path: Path, *, crs: str | None = "EPSG:32631", west: float = 300_000.0,
                  north: float = 5_660_000.0, res: float = 10.0, size: int = 600, seed: int = 0,
                  dtype: str = "uint8") -> Path:
    """A small 3-band GeoTIFF with smooth colour gradients and a seeded texture."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    bands = np.stack([200 * xx + 20, 200 * yy + 20, 120 + 60 * np.sin(8 * xx + 5 * yy)])
    bands += rng.normal(0, 8, bands.shape)
    data = np.clip(bands, 0, 255).astype(dtype)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": dtype,
               "transform": from_origin(west, north, res, res), "tiled": True,
               "blockxsize": 256, "blockysize": 256}
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def geotiff_region(path: Path, shrink: float = 0.15) -> str:
    """A bbox (lon/lat) well inside the GeoTIFF."""
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as ds:
        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    dx, dy = (e - w) * shrink, (n - s) * shrink
    return f"{w + dx},{s + dy},{e - dx},{n - dy}"














def worker_env(db_url: str, queue: str, **extra: str) -> dict[str, str]:
    """Environment for a worker (or CLI) subprocess bound to the test database and queue."""
    env = dict(os.environ)
    env.update({
        "PSM_DATABASE_URL": db_url,
        "PSM_QUEUE": queue,
        "PSM_VISIBILITY_TIMEOUT": "6",
        "PSM_RESTORE_INTERVAL": "1",
        "PSM_TORCH_THREADS": "1",
        "PSM_TASK_MAX_RETRIES": "40",
        "PSM_HOME": os.environ.get("PSM_HOME", str(ROOT / ".psm")),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def celery_app_for(db_url: str, queue: str):
    from worker.app import WorkerSettings, create_app

    return create_app(WorkerSettings(database_url=db_url, queue=queue, visibility_timeout=6,
                                     restore_interval=1))


class Workers:
    """Starts and stops real ``celery -A worker worker`` processes."""

    def __init__(self, db_url: str, queue: str, logdir: Path) -> None:
        self.db_url, self.queue, self.logdir = db_url, queue, logdir
        self.procs: list[subprocess.Popen] = []

    def start(self, pool: str = "solo", env: dict[str, str] | None = None, db_url: str | None = None) -> subprocess.Popen:
        name = f"w{len(self.procs)}-{uuid.uuid4().hex[:6]}@%h"
        log = open(self.logdir / f"worker{len(self.procs)}.log", "w")  # noqa: SIM115
        cmd = [CELERY, "-A", "worker", "worker", "-P", pool, "-c", "1", "-Q", self.queue, "-n", name,
               "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env or worker_env(db_url or self.db_url, self.queue),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def send(self, proc: subprocess.Popen, sig: int) -> None:
        """Send ``sig`` to the worker's whole process group without waiting (SIGSTOP, SIGCONT)."""
        if proc.poll() is None:
            os.killpg(proc.pid, sig)

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=30)

    def stop_all(self) -> None:
        # SIGKILL: quick, and a test queue's leftover unacked messages are harmless (idempotent tasks).
        for p in self.procs:
            self.kill(p)

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-tail:]}" for p in sorted(self.logdir.glob("*.log")))





def wait_job(db_url: str, job_id: str, timeout: float = 90.0,
             until: Callable[[dict], bool] | None = None) -> dict:
    """Poll a job row until it is final (or ``until(row)``); fail the test on timeout."""
    from psm_db import jobs
    from psm_db.engine import connection

    deadline = time.monotonic() + timeout
    row: dict | None = None
    while time.monotonic() < deadline:
        try:
            with connection(db_url) as conn:
                row = jobs.get_job(conn, job_id)
        except Exception:  # noqa: BLE001 - the database may be restarting
            row = None
        if row is not None and ((until and until(row)) or (not until and row["status"] in jobs.FINAL_STATES)):
            return row
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not get there in {timeout} s; last row: {row}")
