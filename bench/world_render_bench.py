"""Rendering the synthetic world's tiles for a region job: the worker's batch read against a per-tile loop.

The demo embeds the continental USA at zoom 5 (24,872 tiles of 48 px at 100 m, each a 240 px render
shrunk to 48), and rendering them was most of each chunk's time. This times, in one run and
alternating, for ``--tiles`` tiles drawn at random from that grid:

* ``loop``: ``World.render_tile`` per tile (what the worker's world source did before);
* ``batch``: the world source's ``read`` (``World.render_tiles``, one vectorised land-cover
  evaluation per batch), which the worker uses now;

and checks that both give the same pixels.

Usage:
    .venv/bin/python bench/world_render_bench.py [--tiles 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psm_db.tiles import GridSpec, grid_tiles  # noqa: E402
from psm_model.world.world import World  # noqa: E402
from worker.imagery import ImagerySpec, open_source  # noqa: E402

USA = (-125.0, 24.5, -66.9, 49.4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    grid = grid_tiles(shapely.box(*USA), GridSpec("world-demo", 100.0, 48, 5))
    pick = np.sort(np.random.default_rng(0).choice(len(grid), size=args.tiles, replace=False))
    source = open_source(ImagerySpec(kind="world", seed=0, gsd=100.0, size_px=48))
    world = World(0)
    lat, lon = (c[pick] for c in grid.centroids())

    def loop() -> np.ndarray:
        return np.stack([world.render_tile(float(a), float(b), gsd=100.0, size=48, zoom=5) for a, b in zip(lat, lon, strict=True)])

    def batch() -> np.ndarray:
        return world.render_tiles(lat, lon, gsd=100.0, size=48, zoom=5)

    same = np.array_equal(loop(), batch())
    # the worker's own read over a contiguous run of the grid (its chunks are contiguous)
    start = int(pick[0])
    run = grid.slice(start, min(len(grid), start + args.tiles))
    times: dict[str, list[float]] = {"loop": [], "batch": [], "worker read (contiguous run)": []}
    for _ in range(args.repeat):
        for name, fn in (("loop", loop), ("batch", batch), ("worker read (contiguous run)", lambda: source.read(run, 48))):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    load = os.getloadavg()
    print(f"{len(grid)} USA grid tiles at zoom 5; {args.tiles} timed per call; median of {args.repeat}; "
          f"same pixels: {same}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    base = statistics.median(times["loop"])
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:30s} {m:7.2f} s  {1000 * m / args.tiles:6.1f} ms/tile  x{base / m:4.2f} vs loop")


if __name__ == "__main__":
    main()
