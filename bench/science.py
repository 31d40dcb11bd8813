"""Science checks of trained checkpoints against the world's law: uncertainty, temporal fidelity, hour gain.

For each checkpoint, on the test split of a world dataset (queries = gallery), with
:mod:`psm_model.fidelity`:

1. Spearman rho of each fused image's sum sigma^2 (all metadata) with the oracle's I2A ambiguity of
   that image as a query (share of the gallery the oracle scores at least as high as the true clip),
   and with the entropy of the true class distribution; the same for the audio side (A2I).
2. CV of sum sigma^2 across the tiles of a region (a Colorado-sized box rendered by the world on the
   map's tile grid, through the worker's imagery and feature code) and across the split's tiles,
   at month 5, 06:00, aporee.
3. Temporal fidelity: per held-out tile and class, Spearman rho across the 24 hours between the
   model's match probability with the class's text query and the law's class probability; and
   across the 12 months for a seasonal class.
4. Rooster on cropland-dominated tiles: mean model probability at 06:00 vs 18:00 beside the truth.
5. Hour gain: I2A R@10% of metadata "hour" over "none", model vs oracle.

    .venv/bin/python bench/science.py --checkpoint RUN/best.safetensors [RUN2/best.safetensors ...] \
        --dataset WORLD [--tiles 300] [--out bench-out/science] [--cache-dir DIR] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.map_fidelity import write_section  # noqa: E402

DOC_SECTION = "## Science checks"
REGION = (-109.05, 36.99, -102.04, 41.0)
"""A US state-sized box (Colorado: plains, mountains and towns), west, south, east, north."""
REGION_ZOOM = 5


def region_spread(model: Any, dataset: str, bounds: tuple[float, float, float, float], zoom: int,
                  month: int, hour: int, audio_source: str, caption_source: str) -> dict[str, Any]:
    """CV of sum sigma^2 over a region's map tiles, rendered by the dataset's world as the worker does."""
    from shapely.geometry import box

    from psm_db.tiles import GridSpec, grid_tiles
    from psm_model.fidelity import fused_sum_variance, uses_variance, variance_spread
    from worker.imagery import ImagerySpec, open_source
    from worker.model_runner import read_and_compute_features

    meta = json.loads((Path(dataset) / "world.json").read_text())
    build = meta.get("build", {})
    spec = ImagerySpec(kind="world", seed=int(build.get("seed", meta.get("world", {}).get("seed", 0))),
                       imagery=str(build.get("imagery", "sentinel")), gsd=float(build["gsd"]),
                       size_px=int(build["image_size"]))
    source = open_source(spec)
    tiles = grid_tiles(box(*bounds), GridSpec(source.name, source.gsd, source.size_px, zoom))
    t0 = time.perf_counter()
    feats = torch.from_numpy(read_and_compute_features(source, tiles, model, 128))
    lat, lon = tiles.centroids()
    var = fused_sum_variance(model, feats, lat, lon, month=month, hour=hour, audio_source=audio_source,
                             caption_source=caption_source)
    return {"bounds": list(bounds), "zoom": zoom, "seconds": time.perf_counter() - t0,
            **variance_spread(var, model.match_params()[0] if uses_variance(model) else None)}


def run_one(checkpoint: str, dataset: str, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    from psm_model import load_checkpoint
    from psm_model.features import load_split
    from psm_model.science import science_report

    t0 = time.perf_counter()
    model, info = load_checkpoint(checkpoint)
    model.eval()
    data = load_split(dataset, args.split, model, cache_dir=args.cache_dir)
    cache = Path(args.cache_dir) if args.cache_dir else Path(dataset) / "cache"
    source = None if args.source == "own" else args.source
    res = science_report(model, data, tiles=args.tiles, seed=args.seed, audio_source=source, template=args.template,
                         cache_dir=cache, hour_gain=not args.no_hour_gain)
    arrays = res.pop("arrays")
    if not args.no_region:
        res["spread"]["region"] = region_spread(model, dataset, tuple(args.region), args.region_zoom,
                                                res["spread"]["month"], res["spread"]["hour"],
                                                res["spread"]["audio_source"], "captioner_b")
    res.update({"checkpoint": checkpoint, "version": info["version"], "loss": model.config.loss,
                "preset": model.config.preset, "total_seconds": time.perf_counter() - t0})
    return res, arrays


def _f(x: Any, fmt: str = ".3f") -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, fmt)


def summary_row(r: dict[str, Any]) -> list[str]:
    u, s, h, m, c = r["uncertainty"], r["spread"], r["hourly"], r["seasonal"], r["contrast"]
    g = r.get("hour_gain", {})
    return [
        f"`{r['version']}`", _f(u["image_vs_ambiguity"]), _f(u["image_vs_expected_ambiguity"]),
        _f(u["image_vs_entropy"]), _f(u["audio_vs_ambiguity"]),
        _f(u.get("image_vs_crowding")), _f(u.get("crowding_vs_ambiguity")), _f(u.get("model_vs_oracle_ambiguity")),
        _f(s.get("region", {}).get("cv_percent"), ".1f"), _f(s["split"]["cv_percent"], ".1f"),
        _f(s.get("region", {}).get("odds_p5_p95"), ".2f"),
        _f(h["median"]), _f(m["median"]),
        f"{_f(c.get('model_ratio'), '.2f')} / {_f(c.get('true_ratio'), '.2f')}",
        f"{_f(g.get('model_gain'))} / {_f(g.get('oracle_gain'))}", _f(g.get("ratio"), ".2f"),
    ]


HEADER = ["model", "rho(sum s2, I2A ambiguity)", "rho(sum s2, expected ambiguity)", "rho(sum s2, entropy)",
          "rho(audio sum s2, A2I ambiguity)", "rho(sum s2, crowding)", "rho(crowding, ambiguity)",
          "rho(model ambiguity, oracle ambiguity)",
          "CV region %", "CV split %", "odds factor p5-p95 region", "hourly rho (median)", "monthly rho (median)",
          "rooster 06/18 model / true", "hour gain model / oracle", "gain ratio"]


def markdown(results: list[dict[str, Any]], command: str) -> str:
    first = results[0]
    h, m, c, s = first["hourly"], first["seasonal"], first["contrast"], first["spread"]
    region = s.get("region")
    lines = [
        DOC_SECTION, "",
        f"Command: `{command}`", "",
        f"Test split of {first['n']} samples (queries = gallery), zoom {first['zoom']}, score {first['score']}. "
        "Ambiguity = share of the gallery the oracle (all metadata) scores at least as high as the true match; "
        "expected ambiguity = the same averaged over clips drawn from the image's own law "
        "(psm_model.uncertainty.expected_ambiguity). Crowding = how many non-matching clips a training batch "
        "of 64 would give a match probability, with the image's own sum s2 set to the mean "
        "(psm_model.uncertainty.crowding); model ambiguity = the ambiguity of the model's own scores. "
        f"sum s2 = sum of sigma^2 of the fused image (all metadata) or of the clip. CV of sum s2 at month {s['month']}, "
        f"{s['hour']:02d}:00, {s['audio_source']}, over the split's tiles"
        + (f" and over the {region['n']} zoom-{region['zoom']} map tiles of the box {region['bounds']}" if region else "")
        + "; odds factor = exp(a * (p95 - p5)) of the region's sum s2, how much the variance term alone changes "
        "a tile's match odds from the 5th to the 95th percentile tile (the CV depends on the level of sum s2, "
        "which the loss leaves to the log-variance bias; this does not)"
        + f". Temporal rho: per tile ({h['tiles']} test tiles) and class, Spearman across the 24 hours between "
        "sigmoid(-a CSD + b) with the class's text query and the law's class probability (hour sweep classes: "
        + ", ".join(f"{k} \"{v}\"" for k, v in h["phrases"].items())
        + f"); monthly: {m['class']} at {m['hour']:02d}:00 across the 12 months. Rooster: mean probability at "
        f"06:00 / 18:00 on {c.get('tiles', 0)} {c['landcover']}-dominated tiles, model ratio / true ratio.", "",
        "| " + " | ".join(HEADER) + " |",
        "|---|" + "---:|" * (len(HEADER) - 1),
    ]
    lines += ["| " + " | ".join(summary_row(r)) + " |" for r in results]
    lines += ["", "Per class (median rho across hours; skipped = flat truth):", "",
              "| model | " + " | ".join(h["per_class"]) + " | skipped | " + f"{m['class']} (months) |",
              "|---|" + "---:|" * (len(h["per_class"]) + 2)]
    for r in results:
        pc = r["hourly"]["per_class"]
        lines.append(f"| `{r['version']}` | " + " | ".join(_f(v["median"]) for v in pc.values())
                     + f" | {r['hourly']['skipped']}/{r['hourly']['pairs']} | {_f(r['seasonal']['median'])} "
                     f"(skipped {r['seasonal']['skipped']}) |")
    if len(results) > 1:
        cols = {"hourly": [r["hourly"]["median"] for r in results],
                "I2A ambiguity": [r["uncertainty"]["image_vs_ambiguity"] for r in results]}
        lines += ["", "Across checkpoints: " + "; ".join(
            f"{k} {np.mean(v):.3f} +- {np.std(v, ddof=1):.3f}" for k, v in cols.items()) + "."]
    return "\n".join(lines) + "\n"


def publish(out: Path, results: list[dict[str, Any]], write_docs: bool) -> str:
    """Write results.json and results.md under ``out`` (and the docs section); return the Markdown."""
    command = shlex.join([".venv/bin/python", *sys.argv])
    md = markdown(results, command)
    files = {"results.json": json.dumps({"command": command, "results": results}, indent=2) + "\n",
             "results.md": md}
    for name, text in files.items():
        (out / name).write_text(text)
    if write_docs:
        write_section(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md", DOC_SECTION, md)
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, nargs="+", help="one or more checkpoints (e.g. seeds)")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--tiles", type=int, default=300, help="tiles of the temporal sweeps")
    ap.add_argument("--seed", type=int, default=0, help="seed of the tile draw")
    ap.add_argument("--source", default="aporee", help="audio source of the sweeps, or 'own'")
    ap.add_argument("--template", default="The sound of {noun}.", help="text query template with {noun}")
    ap.add_argument("--region", type=float, nargs=4, default=REGION, metavar=("W", "S", "E", "N"))
    ap.add_argument("--region-zoom", type=int, default=REGION_ZOOM)
    ap.add_argument("--no-region", action="store_true", help="skip rendering the region")
    ap.add_argument("--no-hour-gain", action="store_true", help="skip the none/hour evaluation")
    ap.add_argument("--out", default="bench-out/science", help="folder of results.json, results.md, arrays-*.npz")
    ap.add_argument("--cache-dir", default=None, help="feature and oracle cache (default DATASET/cache)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--write-docs", action="store_true", help="rewrite the section in docs/benchmarks.md")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for k, ckpt in enumerate(a.checkpoint):
        res, arrays = run_one(ckpt, a.dataset, a)
        np.savez_compressed(out / f"arrays-{k}-{res['version']}.npz", **arrays)
        row = dict(zip(HEADER[1:], summary_row(res)[1:], strict=True))
        print(json.dumps({"version": res["version"], "seconds": round(res["total_seconds"], 1), **row}), flush=True)
        results.append(res)
    print(publish(out, results, a.write_docs))

if __name__ == "__main__":
    main()
