"""Does the image show what the oracle knows? The oracle scored from the land cover the zoom-1 image shows.

The world draws a clip's sounds from the land-cover fractions of a 600 m hearing footprint,
sampled on a 12 x 12 grid of the exact field. The image is painted from the field's scores on a
coarse grid (8 px apart), bilinearly interpolated per pixel, so sub-pixel detail of the footprint
is not in it. This script counts, for each sample of a split, the classes of the image's own
pixels inside the footprint (the same coarse-grid classification the renderer uses) and scores
the oracle from those fractions: if that oracle ranks as well as the one told the exact
fractions, the image carries what the oracle uses, and the oracle is a reference a model that sees
the image could reach.

Usage:
    .venv/bin/python bench/visible_oracle.py --dataset WORLD [--split test]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psm_model.bayes import SOUND_METADATA, oracle_scores  # noqa: E402
from psm_model.metadata import AUDIO_SOURCES  # noqa: E402
from psm_model.metrics import retrieval_metrics  # noqa: E402
from psm_model.world.imagery import classify_from_coarse, coarse_grid  # noqa: E402
from psm_model.world.landcover import N_LANDCOVER  # noqa: E402
from psm_model.world.world import World  # noqa: E402


def visible_fractions(world: World, lat: np.ndarray, lon: np.ndarray, gsd: float, size: int) -> np.ndarray:
    """Land-cover fractions of the hearing footprint as the zoom-1 image's pixels show them ``[N, L]``."""
    big = world.config.zoom_max * size  # the renderer's full crop, centred on the sample
    px = max(1, int(round(world.config.hear_side_m / gsd)))
    c0 = big // 2 - px // 2
    out = np.zeros((lat.shape[0], N_LANDCOVER))
    for i, (la, lo) in enumerate(zip(lat, lon, strict=True)):
        k0, plat, plon = coarse_grid(float(la), float(lo), gsd, big, c0, c0 + px)
        scores, oj = world.field.evaluate(plat, plon)
        cls = classify_from_coarse(scores, oj, k0, c0, c0 + px)
        out[i] = np.bincount(cls.ravel().astype(np.int64), minlength=N_LANDCOVER) / cls.size
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True, help="a world folder (psm world build)")
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    meta = json.loads((args.dataset / "world.json").read_text())
    w = meta["world"]
    world = World(w["seed"], hear_side_m=w["hear_side_m"], hear_grid=w["hear_grid"], zoom_max=w["zoom_max"])
    gsd, size = float(meta["build"]["gsd"]), int(meta["build"]["image_size"])
    df = pd.read_parquet(args.dataset / "index.parquet")
    df = df[df["split"] == args.split].reset_index(drop=True)
    t0 = time.perf_counter()
    seen = visible_fractions(world, df["lat"].to_numpy(), df["lon"].to_numpy(), gsd, size)
    exact = np.stack(df["fractions"].to_numpy()).astype(np.float64)
    print(f"{len(df)} {args.split} samples; footprint {w['hear_side_m']:.0f} m = "
          f"{round(w['hear_side_m'] / gsd)} px at {gsd:g} m/px; visible fractions in {time.perf_counter() - t0:.1f} s")
    print(f"mean L1(exact, visible) {np.abs(exact - seen).sum(1).mean():.3f}; dominant class agrees "
          f"{(exact.argmax(1) == seen.argmax(1)).mean():.3f}; one class only (exact) {(exact.max(1) >= 0.999).mean():.3f}")
    src = np.array([AUDIO_SOURCES.index(s) if isinstance(s, str) else int(s) for s in df["audio_source"]])
    classes = [tuple(c) for c in df["classes"]]
    inputs = (df["lat"].to_numpy(), df["month"].to_numpy(), df["hour"].to_numpy(), src, classes)
    print("\n| metadata | oracle, exact fractions: I2A / A2I R@10% | oracle, visible fractions: I2A / A2I |")
    print("|---|---:|---:|")
    for name, known in (("all", SOUND_METADATA), ("hour", ("hour",)), ("none", ())):
        row = []
        for fr in (exact, seen):
            o = oracle_scores(fr, *inputs, known=known)
            row.append(f"{retrieval_metrics(o['i2a'])['r_at_10']:.3f} / {retrieval_metrics(o['a2i'])['r_at_10']:.3f}")
        print(f"| {name} | {row[0]} | {row[1]} |")


if __name__ == "__main__":
    main()
