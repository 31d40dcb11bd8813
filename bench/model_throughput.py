"""Forward throughput of the PSM model: image features, fusion+heads, audio, text; with peak memory.

Examples:
    python bench/model_throughput.py --preset tiny
    python bench/model_throughput.py --preset demo --threads 2
    python bench/model_throughput.py --preset paper --device cuda        # bf16 image features at batch 256

Medians over --repeats timed runs after one warm-up run. Weights are random (built from config):
throughput does not depend on them. Prints a markdown table and, with --json, writes the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psm_model import MetadataBatch, create_model  # noqa: E402
from psm_model.metadata import AUDIO_SOURCES  # noqa: E402

DEFAULTS = {  # image batch, fusion batch, audio batch, text batch
    ("tiny", "cpu"): (256, 1024, 16, 128),
    ("demo", "cpu"): (256, 1024, 16, 128),
    ("paper", "cpu"): (8, 64, 2, 16),
    ("tiny", "cuda"): (256, 4096, 64, 256),
    ("demo", "cuda"): (256, 4096, 64, 256),
    ("paper", "cuda"): (256, 4096, 32, 256),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _meta(n: int, rng: np.random.Generator) -> MetadataBatch:
    return MetadataBatch.from_values(
        lat=rng.uniform(-60, 60, n).tolist(),
        lon=rng.uniform(-170, 170, n).tolist(),
        month=rng.integers(1, 13, n).tolist(),
        hour=rng.integers(0, 24, n).tolist(),
        audio_source=[AUDIO_SOURCES[i % 4] for i in range(n)],
        caption_source="metadata",
    )


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    b_img, b_fuse, b_audio, b_text = DEFAULTS[(args.preset, device.type)]
    b_img = args.image_batch or b_img
    b_fuse = args.fusion_batch or b_fuse
    b_audio = args.audio_batch or b_audio
    b_text = args.text_batch or b_text
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    amp = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if dtype == torch.bfloat16
        else contextlib.nullcontext()
    )

    t0 = time.perf_counter()
    model = create_model(args.preset, pretrained=args.pretrained, seed=0).to(device).eval()
    build_s = time.perf_counter() - t0
    c = model.config
    rng = np.random.default_rng(0)
    out: dict = {
        "preset": args.preset,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "build_s": round(build_s, 2),
        "repeats": args.repeats,
    }
    s = c.image.image_size
    images = torch.rand(b_img, 3, s, s, device=device)
    zoom = torch.tensor([1, 3, 5], device=device).repeat(b_img // 3 + 1)[:b_img]

    def image_step():
        with torch.inference_mode(), amp:
            return model.image_features(images, gsd=0.6, zoom=zoom)

    dt = _time(image_step, device, args.repeats)
    out["image_features"] = {"batch": b_img, "median_s": dt, "per_s": b_img / dt}

    with torch.inference_mode(), amp:
        feats = model.image_features(images[:1], gsd=0.6).float().expand(b_fuse, -1).contiguous()
    meta = _meta(b_fuse, rng).to(device)

    def fuse_step():
        with torch.inference_mode(), amp:
            return model.fuse_image(feats, meta)

    dt = _time(fuse_step, device, args.repeats)
    out["fusion_heads"] = {"batch": b_fuse, "median_s": dt, "per_s": b_fuse / dt}

    if not args.skip_audio:
        sr = c.audio.sample_rate
        waves = [
            rng.standard_normal(int(sr * c.audio.clip_seconds)).astype(np.float32)
            for _ in range(b_audio)
        ]
        dt = _time(lambda: model.audio_inputs(waves, sr), torch.device("cpu"), args.repeats)
        out["audio_features"] = {"batch": b_audio, "median_s": dt, "per_s": b_audio / dt}
        inputs = model.audio_inputs(waves, sr).to(device)

        def audio_step():
            with torch.inference_mode(), amp:
                return model.encode_audio_inputs(inputs)

        dt = _time(audio_step, device, args.repeats)
        out["audio_tower"] = {"batch": b_audio, "median_s": dt, "per_s": b_audio / dt}

    if not args.skip_text:
        words = [
            "insects",
            "rooster",
            "car horn",
            "sheep",
            "rain",
            "waves",
            "church bells",
            "traffic",
        ]
        counter = iter(range(10**9))

        def text_step():
            k = next(counter)  # fresh texts each run: no cache hits
            texts = [f"the sound of {words[i % 8]} number {k}-{i}" for i in range(b_text)]
            with torch.inference_mode(), amp:
                return model.encode_text(texts)

        dt = _time(text_step, device, args.repeats)
        out["text"] = {"batch": b_text, "median_s": dt, "per_s": b_text / dt}

    out["peak_memory_mb"] = round(_peak_mb(device), 1)
    out["load_average_1m"] = round(os.getloadavg()[0], 2)
    return out


def markdown(r: dict) -> str:
    rows = [
        ("image features", "tiles/s", "image_features"),
        ("fusion + heads", "tiles/s", "fusion_heads"),
        ("audio mel features (CPU)", "clips/s", "audio_features"),
        ("audio tower + heads", "clips/s", "audio_tower"),
        ("text (tokenise + tower + heads)", "texts/s", "text"),
    ]
    lines = [
        f"preset `{r['preset']}` on {r['device']} ({r['threads']} threads, {r['dtype']}), "
        f"{r['params_m']} M params, peak memory {r['peak_memory_mb']} MB, "
        f"load average {r['load_average_1m']} at the end",
        "",
        "| stage | batch | median s/batch | throughput |",
        "|---|---|---|---|",
    ]
    for label, unit, key in rows:
        if key in r:
            v = r[key]
            lines.append(
                f"| {label} | {v['batch']} | {v['median_s']:.4f} | {v['per_s']:.1f} {unit} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", default="demo", choices=["tiny", "demo", "paper"])
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--dtype", default=None, choices=["float32", "bfloat16"], help="default: bf16 on cuda"
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--image-batch", type=int, default=0)
    p.add_argument("--fusion-batch", type=int, default=0)
    p.add_argument("--audio-batch", type=int, default=0)
    p.add_argument("--text-batch", type=int, default=0)
    p.add_argument("--skip-audio", action="store_true")
    p.add_argument("--skip-text", action="store_true")
    p.add_argument(
        "--pretrained", action="store_true", help="load pretrained weights named by the preset"
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    result = run(args)
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
