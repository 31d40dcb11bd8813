"""Table 1 over several training seeds: mean ± standard error per row, paired PCME++ − InfoNCE, learning curves.

Each seed trains the four models of ``bench/table1.py`` (InfoNCE / PCME++, with and without metadata)
with equal steps (the preset's epochs; no time limit), evaluates them on the whole test split beside
the oracle of the same inputs (the caption-aware oracle beside text rows), and the seeds are then
aggregated. Trainings run ``--jobs`` at a time, one torch thread each.

    .venv/bin/python bench/table1_seeds.py --world WORLD --out bench-out/t1 --seeds 0,1,2 --jobs 2 --write-docs

A run on a world never used for tuning adds one row per model (``--section`` names its own docs section):

    .venv/bin/python bench/table1_seeds.py --world WORLD_SEED7 --out bench-out/t1-w7 --seeds 0 \
        --models pcmepp-meta,infonce-meta --section "## Table 1 on a world never tuned on" --write-docs
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from map_fidelity import write_section  # noqa: E402
from table1 import EXTRA, MODELS, ROWS, evaluate_models, pick, train_models, yn  # noqa: E402

SECTION = "## Table 1 over seeds"
CURVES = "docs/img/learning_curves.png"


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _train(job: tuple[str, Path, str, argparse.Namespace]) -> dict:
    world, out, name, args = job
    return train_models(world, out, [name], args)[name]


def _evaluate(job: tuple[str, Path, str, argparse.Namespace]) -> dict:
    world, out, name, args = job
    return evaluate_models(world, out, [name], args)[name]


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values to average")
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
    return float(v.mean()), se


def fmt(values: list[float]) -> str:
    m, se = mean_se(values)
    return f"{m:.3f} ± {se:.3f}" if len(values) > 1 else f"{m:.3f}"


def run_jobs(fn, jobs: list, n: int) -> list:
    if n <= 1:
        _one_thread()
        return [fn(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=n, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
        return list(pool.map(fn, jobs))


def learning_curves(out: Path, seeds: list[int], names: list[str], path: Path) -> dict[str, dict]:
    """Validation I2A R@10% against steps for every (model, seed), plotted to ``path``; plateau summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary: dict[str, dict] = {}
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = dict(zip(MODELS, ("tab:blue", "tab:cyan", "tab:red", "tab:orange"), strict=True))
    for name in names:
        gains = []
        for s in seeds:
            log = out / f"seed{s}" / name / "metrics.jsonl"
            if not log.is_file():
                continue
            val = [r for r in map(json.loads, log.read_text().splitlines()) if r.get("kind") == "val"]
            if not val:
                continue
            steps = [r["step"] for r in val]
            r10 = [r["val_i2a_r10"] for r in val]
            ax.plot(steps, r10, color=colours.get(name), alpha=0.8, label=name if s == seeds[0] else None)
            # the gain over the last quarter of training: near 0 when the curve has plateaued
            last = [v for st, v in zip(steps, r10, strict=True) if st >= 0.75 * steps[-1]]
            gains.append(max(last) - last[0] if last else float("nan"))
        if gains:
            summary[name] = {"last_quarter_gain": gains}
    ax.set_xlabel("training step")
    ax.set_ylabel("validation I2A R@10% (zoom 1, no text)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return summary


def aggregate(results: dict[int, dict], trained: dict[int, dict]) -> dict:
    """Per row and zoom: the model's R@10% per seed, the oracle's, and paired PCME++ − InfoNCE differences."""
    seeds = sorted(results)
    table: dict = {}
    for row in ROWS + EXTRA:
        method, loss, text, meta, model, with_text, cond = row
        for z in (1, 3, 5):
            per = {"i2a": [], "a2i": [], "oi2a": None, "oa2i": None}
            for s in seeds:
                if model not in results[s]:
                    continue
                rr = results[s][model]["rows"]
                per["i2a"].append(pick(rr, "model", "i2a", z, with_text, cond)["r_at_10"])
                per["a2i"].append(pick(rr, "model", "a2i", z, with_text, cond)["r_at_10"])
                per["oi2a"] = pick(rr, "oracle", "i2a", z, with_text, cond)["r_at_10"]
                per["oa2i"] = pick(rr, "oracle", "a2i", z, with_text, cond)["r_at_10"]
            if per["i2a"]:
                table[(row, z)] = per
    return table


PAIRS = {  # setting -> (PCME++ row, InfoNCE row), each an index into ROWS + EXTRA
    "no text, no metadata": (3, 0),
    "text, no metadata": (7, 1),
    "no text, metadata": (4, 6),
    "text, metadata": (5, 2),
}


def build_markdown(table: dict, results: dict, trained: dict, curves: dict, args, command: str, world_meta: dict,
                   hours: dict) -> str:
    seeds = sorted(results)
    rows = ROWS + EXTRA
    counts = world_meta.get("counts", {})
    b = world_meta.get("build", {})
    lines = [args.section, "", f"Command: `{command}`", "",
             f"World: seed {world_meta.get('world', {}).get('seed')}, {sum(counts.values())} samples (train "
             f"{counts.get('train')}, val {counts.get('val')}, test {counts.get('test')}), {b.get('image_size')} px "
             f"tiles at {b.get('gsd')} m/px; captions {'with' if b.get('caption_context') else 'without'} "
             f"month/time/source context. Training seeds {', '.join(map(str, seeds))}; the preset "
             f"`{args.preset}` with its own epochs and schedule, equal steps for every loss. Cells: mean ± standard "
             "error over seeds of R@10% on the whole test split (queries = gallery), zoom 1. The oracle uses "
             "the same inputs; beside text rows it is the caption-aware oracle.", ""]
    steps = {name: sorted({t[name]["steps"] for t in trained.values() if name in t}) for name in MODELS}
    minutes = {name: [t[name]["wall_s"] / 60 for t in trained.values() if name in t] for name in MODELS}
    lines += ["| trained model | steps | minutes per run (1 thread) |", "|---|---:|---:|"]
    for name in MODELS:
        if minutes[name]:
            lines.append(f"| `{name}` | {', '.join(map(str, steps[name]))} | {np.median(minutes[name]):.1f} |")
    lines += ["", "| method | loss | text | metadata | I2A R@10% | A2I R@10% | oracle I2A | oracle A2I | I2A / oracle |",
              "|---|---|:---:|:---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        v = table.get((row, 1))
        if v is None:
            continue
        method, loss, text, meta = row[:4]
        ratio = [x / v["oi2a"] for x in v["i2a"]]
        extra = " (extra)" if row in EXTRA else ""
        lines.append(f"| {method}{extra} | {loss} | {yn(text)} | {yn(meta)} | {fmt(v['i2a'])} | {fmt(v['a2i'])} | "
                     f"{v['oi2a']:.3f} | {v['oa2i']:.3f} | {fmt(ratio)} |")
    lines += ["", "PCME++ − InfoNCE, same inputs and steps, paired by seed (zoom 1):", "",
              "| setting | I2A difference | A2I difference | seeds |", "|---|---:|---:|---:|"]
    for label, (p, i) in PAIRS.items():
        vp, vi = table.get((rows[p], 1)), table.get((rows[i], 1))
        if vp is None or vi is None or len(vp["i2a"]) != len(vi["i2a"]):
            continue
        di = [a - c for a, c in zip(vp["i2a"], vi["i2a"], strict=True)]
        da = [a - c for a, c in zip(vp["a2i"], vi["a2i"], strict=True)]
        lines.append(f"| {label} | {fmt(di)} | {fmt(da)} | {len(di)} |")
    spans = []
    for row in rows:
        vals = [mean_se(table[(row, z)]["i2a"])[0] for z in (1, 3, 5) if (row, z) in table]
        if len(vals) == 3:
            spans.append(max(vals) - min(vals))
    if spans:
        lines += ["", f"Largest spread of mean I2A R@10% across zoom 1, 3, 5 over the rows: {max(spans):.3f}."]
    if hours:
        lines += ["", "Metadata alone (`pcmepp-meta`, zoom 1, no text): gain in I2A R@10% over no metadata, model "
                  "beside the oracle:", "", "| metadata | model gain | oracle gain | model / oracle |",
                  "|---|---:|---:|---:|"]
        for m, (g, og) in hours.items():
            lines.append(f"| {m} | {fmt(g)} | {og:+.3f} | {fmt([x / og for x in g]) if og > 0 else '–'} |")
    if curves:
        lines += ["", f"Learning curves (validation I2A R@10% against steps, every model and seed): "
                  f"![learning curves]({CURVES.removeprefix('docs/')}). Gain over the last quarter of training "
                  "(near 0 on a plateau): " + "; ".join(
                      f"`{k}` {', '.join(f'{g:+.3f}' for g in v['last_quarter_gain'])}" for k, v in curves.items())
                  + "."]
    return "\n".join(lines) + "\n"


def metadata_gains(results: dict) -> dict:
    """Per single metadata type: the model's gain over "none" per seed, and the oracle's gain."""
    out = {}
    for m in ("latlon", "month", "hour", "audio_source", "caption_source", "all"):
        g, og = [], None
        for s in sorted(results):
            rr = results[s].get("pcmepp-meta", {}).get("rows")
            if not rr:
                continue
            try:
                g.append(pick(rr, "model", "i2a", 1, False, m)["r_at_10"] - pick(rr, "model", "i2a", 1, False, "none")["r_at_10"])
                og = pick(rr, "oracle", "i2a", 1, False, m)["r_at_10"] - pick(rr, "oracle", "i2a", 1, False, "none")["r_at_10"]
            except KeyError:
                continue
        if g and og is not None:
            out[m] = (g, og)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", required=True)
    ap.add_argument("--out", default="bench-out/table1-seeds")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--jobs", type=int, default=2, help="trainings run at the same time, one thread each")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--section", default=SECTION)
    ap.add_argument("--curves", default=CURVES, help="learning-curve PNG, relative to the repository")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    names = [m.strip() for m in a.models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        raise SystemExit(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    # train_models / evaluate_models read these from their namespace
    a.minutes, a.batch_size, a.lr, a.reuse = None, None, None, True
    out = Path(a.out)
    jobs = []
    for s in seeds:
        ns = argparse.Namespace(**{**vars(a), "seed": s})
        jobs += [(a.world, out / f"seed{s}", name, ns) for name in names]
    # the first job alone, so the feature cache is written once before the others read it
    t0 = time.perf_counter()
    first = run_jobs(_train, jobs[:1], 1)
    trained_list = first + run_jobs(_train, jobs[1:], a.jobs)
    t1 = time.perf_counter()
    evaluated = run_jobs(_evaluate, jobs, a.jobs)
    t2 = time.perf_counter()
    trained: dict[int, dict] = {}
    results: dict[int, dict] = {}
    for (_, _, name, ns), t, r in zip(jobs, trained_list, evaluated, strict=True):
        trained.setdefault(ns.seed, {})[name] = t
        results.setdefault(ns.seed, {})[name] = r
    root = Path(__file__).resolve().parent.parent
    curves = learning_curves(out, seeds, names, root / a.curves if a.write_docs else out / "learning_curves.png")
    table = aggregate(results, trained)
    world_meta = json.loads((Path(a.world) / "world.json").read_text())
    command = " ".join(shlex.quote(x) for x in [".venv/bin/python", *sys.argv])
    md = build_markdown(table, results, trained, curves, a, command, world_meta, metadata_gains(results))
    md += f"\nTime: training {(t1 - t0) / 60:.1f} min, evaluation {(t2 - t1) / 60:.1f} min ({a.jobs} at a time).\n"
    (out / "table1_seeds.md").write_text(md)
    (out / "table1_seeds.json").write_text(json.dumps(
        {"trained": trained, "results": results, "seconds": {"train": t1 - t0, "eval": t2 - t1}}, indent=2,
        default=str) + "\n")
    print(md)
    if a.write_docs:
        write_section(root / "docs" / "benchmarks.md", a.section, md)


if __name__ == "__main__":
    main()
