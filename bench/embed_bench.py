"""End-to-end benchmark: psm.embed_region tiles/s with 1 and 2 Celery workers vs forward-only throughput.

Usage:
    PSM_HOME=.psm .venv/bin/python bench/embed_bench.py --tiles 20000 --workers 1 2

It builds the demo preset, saves and registers it in a throwaway database, writes a UTM
GeoTIFF at 10 m that holds a region of about ``--tiles`` grid tiles (48 px each, the demo
model's input size), and then, in the same run:

* forward-only: ``image_features`` + ``fuse_image`` (one condition) on ready tensors at the
  workers' batch size, with the same number of torch threads as one worker;
* end to end: for each worker count, starts that many ``celery -A worker worker -P solo``
  processes, queues the region (one condition) and times it from submission to the job's
  succeeded state (reading the GeoTIFF, the model, COPY writes, queueing, all included).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from psm_db import migrate  # noqa: E402
from psm_db.engine import connection, driver_connection  # noqa: E402
from psm_db.registry import register_model  # noqa: E402
from psm_db.settings import Settings  # noqa: E402

CELERY = str(Path(sys.executable).with_name("celery"))


def write_scene(path: Path, n_tiles: int, tile_px: int, res: float) -> str:
    """A 3-band UTM GeoTIFF (10 m) covering about n_tiles tiles; returns a lon/lat bbox inside it."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.warp import transform_bounds

    side_tiles = math.ceil(math.sqrt(n_tiles)) + 4
    size = side_tiles * tile_px
    west, north = 400_000.0, 5_700_000.0
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32631", "transform": from_origin(west, north, res, res), "tiled": True,
               "blockxsize": 512, "blockysize": 512}
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as ds:
        step = 1024
        for r0 in range(0, size, step):
            h = min(step, size - r0)
            yy, xx = np.mgrid[r0 : r0 + h, 0:size].astype(np.float32)
            base = np.stack([np.sin(xx / 97.0) * 60 + 120, np.cos(yy / 131.0) * 60 + 120,
                             np.sin((xx + yy) / 53.0) * 50 + 110])
            base += rng.normal(0, 10, base.shape).astype(np.float32)
            ds.write(np.clip(base, 0, 255).astype(np.uint8), window=((r0, r0 + h), (0, size)))
    w, s, e, n = transform_bounds("EPSG:32631", "EPSG:4326", west, north - size * res, west + size * res, north)
    # a square-ish region inside the raster holding about n_tiles tiles
    frac = math.sqrt(n_tiles) / side_tiles
    cx, cy = (w + e) / 2, (s + n) / 2
    hx, hy = (e - w) * frac / 2 * 1.02, (n - s) * frac / 2 * 1.02
    return f"{cx - hx},{cy - hy},{cx + hx},{cy + hy}"


def forward_only(checkpoint: Path, batch: int, n: int, threads: int) -> float:
    """Tiles/s of image_features + fuse_image (one condition) on ready tensors."""
    import torch

    from psm_model import MetadataBatch, load_checkpoint

    torch.set_num_threads(threads)
    model, _ = load_checkpoint(checkpoint)
    s = model.config.image.image_size
    x = torch.rand(batch, 3, s, s)
    lat = np.linspace(51.0, 51.5, batch)
    lon = np.linspace(1.0, 1.5, batch)
    with torch.inference_mode():
        f = model.image_features(x, gsd=10.0, zoom=1)  # warm-up
        t0 = time.perf_counter()
        done = 0
        while done < n:
            f = model.image_features(x, gsd=10.0, zoom=1)
            meta = MetadataBatch.from_values(lat=[float(v) for v in lat], lon=[float(v) for v in lon], month=5)
            mu, logvar = model.fuse_image(f, meta)
            torch.exp(logvar)
            done += batch
    return done / (time.perf_counter() - t0)


def run_e2e(db_url: str, version: str, scene: Path, region: str, workers: int, threads: int,
            batch: int, chunk: int, logdir: Path) -> tuple[float, int, dict[int, int]]:
    from worker.app import WorkerSettings, create_app
    from worker.embed import ConditionSpec, EmbedRequest, Limits, submit
    from worker.imagery import ImagerySpec

    queue = f"psm-bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PSM_DATABASE_URL": db_url, "PSM_QUEUE": queue, "PSM_TORCH_THREADS": str(threads),
           "PSM_EMBED_BATCH_SIZE": str(batch), "PSM_CHUNK_TILES": str(chunk), "PSM_MAX_REGION_TILES": "1000000"}
    procs = []
    for i in range(workers):
        log = open(logdir / f"w{workers}-{i}.log", "w")  # noqa: SIM115
        procs.append(subprocess.Popen(
            [CELERY, "-A", "worker", "worker", "-P", "solo", "-Q", queue, "-n", f"bench{i}-{queue}@%h",
             "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    app = create_app(WorkerSettings(database_url=db_url, queue=queue))
    try:
        # Let the workers import torch and connect before the clock starts.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=1.0) or []
            if sum(1 for r in replies for k in r if queue in k) >= workers:
                break
        request = EmbedRequest(region=region, model_version=version,
                               imagery=ImagerySpec(kind="geotiff", path=str(scene), size_px=48, gsd=10.0,
                                                   name=f"bench-{workers}w-{uuid.uuid4().hex[:6]}"),
                               conditions=(ConditionSpec(month=5),), chunk_tiles=chunk)
        t0 = time.perf_counter()
        with connection(db_url) as db:
            conn = driver_connection(db)
            job_id, plan = submit(db, request, Limits(max_region_tiles=1_000_000, chunk_tiles=chunk,
                                                        batch_size=batch),
                                  lambda j: str(app.send_task("psm.embed_region", args=[j]).id))
            while True:
                status = conn.execute("SELECT status, error FROM psm.jobs WHERE id = %s", (job_id,)).fetchone()
                conn.commit()
                if status[0] in ("succeeded", "failed"):
                    break
                time.sleep(0.2)
        elapsed = time.perf_counter() - t0
        if status[0] != "succeeded":
            raise RuntimeError(f"job failed: {status[1]}")
        per_worker: dict[int, int] = {}
        steps: dict[str, float] = {}
        for p in sorted(logdir.glob(f"w{workers}-*.log")):
            text = p.read_text()
            lines = [ln for ln in text.splitlines() if " tiles, plan " in ln]
            per_worker[len(per_worker)] = len(lines)
            for ln in lines:
                for part in ln.split(" tiles, ", 1)[1].split(", "):
                    k, v = part.split()
                    steps[k] = steps.get(k, 0.0) + float(v.rstrip("s"))
        print(f"  {workers} worker(s): {elapsed:.1f} s wall; chunk step seconds summed over workers: "
              + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()), flush=True)
        return plan.total / elapsed, plan.total, per_worker
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=20_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: cores / workers)")
    ap.add_argument("--preset", default="demo")
    args = ap.parse_args()

    import torch

    from psm_model import create_model, save_checkpoint

    settings = Settings()
    admin = settings.db_url.rpartition("/")[0] + "/postgres"
    name = f"psm_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    db_url = admin.rpartition("/")[0] + "/" + name
    tmp = Path(tempfile.mkdtemp(prefix="psm-embed-bench-"))
    try:
        migrate.upgrade(db_url)
        torch.manual_seed(0)
        model = create_model(args.preset)
        ckpt = tmp / f"{args.preset}.safetensors"
        save_checkpoint(model, ckpt)
        with connection(db_url) as db:
            mv = register_model(db, ckpt)
        size = model.config.image.image_size
        t0 = time.perf_counter()
        region = write_scene(tmp / "scene.tif", args.tiles, size, 10.0)
        print(f"scene written in {time.perf_counter() - t0:.1f} s; region {region}")
        cores = os.cpu_count() or 1
        results = {}
        for w in args.workers:
            threads = args.threads or max(1, cores // w)
            # Forward-only just before and just after the end-to-end run (the machine's load drifts).
            fwd_before = forward_only(ckpt, args.batch, max(4096, args.batch * 16), threads)
            rate, total, per = run_e2e(db_url, mv.version, tmp / "scene.tif", region, w, threads,
                                       args.batch, args.chunk, tmp)
            fwd_after = forward_only(ckpt, args.batch, max(4096, args.batch * 16), threads)
            fwd = (fwd_before + fwd_after) / 2
            print(f"  forward-only before {fwd_before:.1f}, after {fwd_after:.1f} tiles/s", flush=True)
            results[w] = {"tiles": total, "e2e_tiles_per_s": round(rate, 1),
                          "forward_tiles_per_s_per_worker": round(fwd, 1), "torch_threads": threads,
                          "chunks_per_worker": per}
            print(f"{w} worker(s), {threads} thread(s) each: end to end {rate:.1f} tiles/s over {total} tiles; "
                  f"forward-only {fwd:.1f} tiles/s (one process, batch {args.batch}); "
                  f"ratio to {w} x forward-only {rate / (fwd * w):.2f}", flush=True)
        if 1 in results and 2 in results:
            print(f"scale-out 2 vs 1 worker: {results[2]['e2e_tiles_per_s'] / results[1]['e2e_tiles_per_s']:.2f}x")
        print(json.dumps(results, indent=2))
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
