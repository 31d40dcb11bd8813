"""Map fidelity: does the model's text-query map follow the world's true class probability?

For every held-out tile (the val and test splits: their 1-degree cells were never trained on) the
model's map value for a text query is -CSD between the tile's metadata-fused image Gaussian and the
query's text Gaussian. The world gives the true probability of that class at the same place and
metadata (month, hour, audio source). We report, per class and hour, the Spearman correlation
between the two over all tiles; the rooster's dawn-vs-dusk contrast on farmland (one shared scale
across the two times, as the paper's temporal maps); and the correlation between each tile's
predicted uncertainty (sum of sigma^2) and the entropy of its true class distribution.

    .venv/bin/python bench/map_fidelity.py --checkpoint RUN/best.safetensors --dataset WORLD \
        --out bench-out/maps [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

CLASSES = ("birdsong", "insects", "rooster", "sheep", "dog", "traffic", "car_horn", "crowd")
"""Fixed before looking at any result: land-cover-driven animals, farm and urban sounds."""
HOURS = (6, 18)
MONTH = 5
SOURCE = "freesound"  # the world's neutral source (no preference between sounds)
FARMLAND = "cropland"
DOC_SECTION = "## Map fidelity"


def concat_splits(parts):
    """Concatenate SplitData objects row-wise (for val + test)."""
    from psm_model.features import SplitData

    first = parts[0]
    fields = {}
    for k, v in first.__dict__.items():
        if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == len(first):
            fields[k] = np.concatenate([np.asarray(getattr(p, k)) for p in parts])
        elif isinstance(v, list) and len(v) == len(first):
            fields[k] = [x for p in parts for x in getattr(p, k)]
        else:
            fields[k] = v
    fields["name"] = "+".join(p.name for p in parts)
    return SplitData(**fields)


@torch.no_grad()
def run(checkpoint: str, dataset: str, cache_dir: str | None = None, zoom: int = 1) -> dict:
    from psm_model import MetadataBatch, load_checkpoint
    from psm_model.features import load_split
    from psm_model.world.landcover import LANDCOVER_CLASSES
    from psm_model.world.sounds import CLASS_QUERIES, SOUND_CLASSES
    from psm_model.world.world import World

    t0 = time.perf_counter()
    model, info = load_checkpoint(checkpoint)
    meta = json.loads((Path(dataset) / "world.json").read_text())
    world = World(int(meta["world"]["seed"]))
    data = concat_splits([load_split(dataset, s, model, cache_dir=cache_dir) for s in ("val", "test")])
    n = len(data)
    slot = data.zoom_slot(zoom)
    feats = torch.cat([model.image_features(data.tiles(np.arange(a, min(a + 512, n)), slot), data.gsd, zoom)
                       for a in range(0, n, 512)])
    fr = data.fractions
    farm = fr[:, LANDCOVER_CLASSES.index(FARMLAND)] >= 0.5
    queries = {c: model.encode_text([CLASS_QUERIES[c]]) for c in CLASSES}
    out: dict = {"version": info["version"], "tiles": n, "farmland_tiles": int(farm.sum()), "zoom": zoom, "month": MONTH,
                 "source": SOURCE, "classes": list(CLASSES), "hours": list(HOURS), "rho": {}, "uncertainty": {}}
    maps: dict = {}
    for h in HOURS:
        mb = MetadataBatch.from_values(lat=data.lat.tolist(), lon=data.lon.tolist(), month=MONTH, hour=h,
                                       audio_source=SOURCE, batch_size=n)
        mu, logvar = model.fuse_image(feats, mb)
        var = logvar.exp()
        truth = world.probs_from_fractions(fr, data.lat, MONTH, h, SOURCE)  # [n, classes]
        for c in CLASSES:
            mt, lt = queries[c]
            score = -(((mu - mt) ** 2).sum(1) + var.sum(1) + lt.exp().sum()).double().numpy()
            p = truth[:, SOUND_CLASSES.index(c)]
            out["rho"][f"{c}@{h:02d}"] = float(spearmanr(score, p).statistic)
            maps[(c, h)] = (score, p)
        entropy = -(truth * np.log(np.clip(truth, 1e-300, None))).sum(1)
        out["uncertainty"][f"{h:02d}"] = float(spearmanr(var.sum(1).double().numpy(), entropy).statistic)
    rhos = list(out["rho"].values())
    out["mean_rho"] = float(np.mean(rhos))
    s6, p6 = maps[("rooster", HOURS[0])]
    s18, p18 = maps[("rooster", HOURS[1])]
    out["rooster_farmland"] = {
        "model_mean_06": float(s6[farm].mean()),
        "model_mean_18": float(s18[farm].mean()),
        "model_share_tiles_06_above_18": float((s6[farm] > s18[farm]).mean()),
        "true_mean_06": float(p6[farm].mean()),
        "true_mean_18": float(p18[farm].mean()),
    }
    out["seconds"] = time.perf_counter() - t0
    return out


def markdown(res: dict, command: str) -> str:
    lines = [
        DOC_SECTION, "",
        f"Command: `{command}`", "",
        f"Model version `{res['version']}`; {res['tiles']} held-out tiles (the val and test splits, whose 1-degree cells "
        f"were never trained on) at zoom {res['zoom']}; metadata month {res['month']}, audio source {res['source']}, "
        "each tile's own lat/lon. Map value = -CSD between the tile's fused image Gaussian and the text query's Gaussian "
        "(the world's `class_queries`); truth = the world's class probability at that place and metadata. "
        "Classes fixed before any run.", "",
        "| class | " + " | ".join(f"Spearman rho at {h:02d}:00" for h in res["hours"]) + " |",
        "|---|" + "---:|" * len(res["hours"]),
    ]
    for c in res["classes"]:
        lines.append(f"| {c} | " + " | ".join(f"{res['rho'][f'{c}@{h:02d}']:.3f}" for h in res["hours"]) + " |")
    ok = "met" if res["mean_rho"] >= 0.7 else "**missed**"
    r = res["rooster_farmland"]
    lines += [
        "", f"Mean rho over {len(res['rho'])} maps: **{res['mean_rho']:.3f}** (target >= 0.7: {ok}).", "",
        f"Rooster on farmland ({res['farmland_tiles']} tiles with >= 50% cropland), one shared scale for both times: "
        f"mean map value {r['model_mean_06']:.3f} at 06:00 vs {r['model_mean_18']:.3f} at 18:00; 06:00 is higher on "
        f"{100 * r['model_share_tiles_06_above_18']:.1f}% of those tiles (true probability {r['true_mean_06']:.3f} vs "
        f"{r['true_mean_18']:.3f}).", "",
        "Uncertainty: Spearman rho between each tile's predicted sum of sigma^2 and the entropy of its true class "
        "distribution: " + ", ".join(f"{v:.3f} at {h}:00" for h, v in res["uncertainty"].items()) + ".", "",
    ]
    return "\n".join(lines)


def write_section(doc: Path, section: str, text: str) -> None:
    """Replace (or append) one '## ' section of a Markdown file, leaving the others alone."""
    old = doc.read_text() if doc.is_file() else "# Benchmarks\n"
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == section), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "".join(lines[:start]) + text.rstrip("\n") + "\n\n" + "".join(lines[end:])
    doc.write_text(new.rstrip("\n") + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--out", default="bench-out/maps")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--write-docs", action="store_true", help="rewrite the section in docs/benchmarks.md")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    res = run(a.checkpoint, a.dataset, a.cache_dir)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "map_fidelity.json").write_text(json.dumps(res, indent=2) + "\n")
    import shlex
    import sys

    md = markdown(res, " ".join(shlex.quote(x) for x in [".venv/bin/python", *sys.argv]))
    (out / "map_fidelity.md").write_text(md)
    print(md)
    if a.write_docs:
        write_section(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md", DOC_SECTION, md)


if __name__ == "__main__":
    main()
