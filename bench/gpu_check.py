"""GPU check of the worker's model runner: CUDA results match CPU, and batch throughput per preset.

Usage (on a GPU machine; needs only torch, numpy and psm_model):
    python3 bench/gpu_check.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Ref:
    version: str
    checkpoint_path: str


@dataclass(frozen=True)
class Spec:
    gsd: float = 10.0
    zoom: int = 1


@dataclass(frozen=True)
class Cond:
    month: int | None = 5
    hour: int | None = 20
    audio_source: str | None = "inaturalist"
    caption_source: str | None = None


def main() -> None:
    import torch

    from psm_model import create_model, save_checkpoint
    from worker import model_runner as mr

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    out: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    tmp = Path(tempfile.mkdtemp())
    for preset in ("tiny", "demo"):
        torch.manual_seed(0)
        path = tmp / f"{preset}.safetensors"
        try:
            ref = Ref(save_checkpoint(create_model(preset), path), str(path))
        except ImportError as e:  # e.g. the demo preset's pretrained MiniLM package is not installed
            out[preset] = {"skipped": str(e)}
            print(preset, "skipped:", e, flush=True)
            continue
        cpu, gpu = mr.get_model(ref, "cpu"), mr.get_model(ref, "auto")
        assert str(gpu.device).startswith("cuda"), gpu.device
        s = cpu.config.image.image_size
        rng = np.random.default_rng(0)
        n = 512
        images = rng.random((n, 3, s, s), dtype=np.float32)
        lat, lon = rng.uniform(-60, 60, n), rng.uniform(-180, 180, n)
        f_cpu = mr.compute_features(cpu, images, Spec(), 128)
        f_gpu = mr.compute_features(gpu, images, Spec(), 128)
        mu_c, var_c = mr.compute_gaussians(cpu, f_cpu, lat, lon, Cond(), 128)
        mu_g, var_g = mr.compute_gaussians(gpu, f_gpu, lat, lon, Cond(), 128)
        rec = {
            "features_max_abs_diff": float(np.abs(f_cpu - f_gpu).max()),
            "mu_max_abs_diff": float(np.abs(mu_c - mu_g).max()),
            "var_max_rel_diff": float(np.abs(var_c / var_g - 1).max()),
            "finite": bool(np.isfinite(mu_g).all() and np.isfinite(var_g).all()),
            "var_positive": bool((var_g > 0).all()),
        }
        for batch in (256, 1024):
            big = rng.random((batch * 8, 3, s, s), dtype=np.float32)
            bl, bo = rng.uniform(-60, 60, len(big)), rng.uniform(-180, 180, len(big))
            mr.compute_features(gpu, big[:batch], Spec(), batch)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            f = mr.compute_features(gpu, big, Spec(), batch)
            mr.compute_gaussians(gpu, f, bl, bo, Cond(), batch)
            torch.cuda.synchronize()
            rec[f"tiles_per_s_batch{batch}"] = round(len(big) / (time.perf_counter() - t0), 1)
        out[preset] = rec
        print(preset, rec, flush=True)
        assert rec["finite"] and rec["var_positive"]
        assert rec["mu_max_abs_diff"] < 1e-3 and rec["var_max_rel_diff"] < 1e-2, rec
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
