"""The paper's Table 1 on our synthetic world: train the rows' models, evaluate them beside the oracle.

The world is split by 1-degree cells (train / val / test), so the test places are unseen. Trained
models (one training can serve several rows, see ROWS):

* ``infonce-nometa``: InfoNCE, metadata never shown (GeoCLAP-style);
* ``infonce-meta``: InfoNCE with metadata fusion and metadata dropout;
* ``pcmepp-nometa``: PCME++, metadata never shown;
* ``pcmepp-meta``: PCME++ with metadata fusion and metadata dropout.

Every row is evaluated at zoom 1, 3 and 5 on the whole test split (queries = gallery), with the
oracle of the same metadata and text setting beside it (a text row with the caption-aware oracle).
The table, the model-to-row mapping, the paper's claims and the timings are written to
docs/benchmarks.md (section "## Table 1 on the synthetic world").

    .venv/bin/python bench/table1.py --world WORLD_DIR --out bench-out/table1 --minutes 8 --threads 1 --write-docs
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from map_fidelity import write_section  # noqa: E402

DOC_SECTION = "## Table 1 on the synthetic world"
MODELS = {
    "infonce-nometa": {"loss": "infonce", "use_metadata": False},
    "infonce-meta": {"loss": "infonce", "use_metadata": True},
    "pcmepp-nometa": {"loss": "pcmepp", "use_metadata": False},
    "pcmepp-meta": {"loss": "pcmepp", "use_metadata": True},
}
# (method, loss, text, metadata) -> (trained model, with_text, metadata condition at evaluation)
ROWS = [
    ("GeoCLAP", "InfoNCE", False, False, "infonce-nometa", False, "none"),
    ("GeoCLAP", "InfoNCE", True, False, "infonce-nometa", True, "none"),
    ("ours", "InfoNCE", True, True, "infonce-meta", True, "all"),
    ("ours", "PCME++", False, False, "pcmepp-nometa", False, "none"),
    ("ours", "PCME++", False, True, "pcmepp-meta", False, "all"),
    ("ours", "PCME++", True, True, "pcmepp-meta", True, "all"),
]
# Extra rows for the claims "PCME++ >= InfoNCE under the same inputs" (not in the paper's table).
EXTRA = [
    ("ours", "InfoNCE", False, True, "infonce-meta", False, "all"),
    ("ours", "PCME++", True, False, "pcmepp-nometa", True, "none"),
]
ZOOMS = (1, 3, 5)
TABLE4 = ("latlon", "month", "hour", "audio_source", "caption_source")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_models(world: str, out: Path, names: list[str], args: argparse.Namespace) -> dict:
    from psm_model.train import train

    info = {}
    for name in names:
        run_dir = out / name
        done = run_dir / "best.safetensors"
        if args.reuse and done.is_file() and (run_dir / "result.json").is_file():
            info[name] = json.loads((run_dir / "result.json").read_text())
            log(f"reuse {name}: {info[name]['checkpoint_path']}")
            continue
        log(f"train {name} ({args.minutes} min max)")
        t0 = time.perf_counter()
        res = train(world, run_dir, preset=args.preset, seed=args.seed, epochs=args.epochs, max_minutes=args.minutes,
                    cache_dir=args.cache_dir, batch_size=args.batch_size, lr=args.lr, **MODELS[name])
        d = res.to_dict()
        d["wall_s"] = time.perf_counter() - t0
        (run_dir / "result.json").write_text(json.dumps(d, indent=2, default=str) + "\n")
        info[name] = d
        log(f"{name}: {res.steps} steps in {d['wall_s'] / 60:.1f} min, best val I2A R@10% "
            f"{res.best_metrics['val_i2a_r10']:.3f}")
    return info


def evaluate_models(world: str, out: Path, names: list[str], args: argparse.Namespace) -> dict:
    from psm_model import load_checkpoint
    from psm_model.evaluate import evaluate, write_results
    from psm_model.features import load_split

    results = {}
    cache = Path(args.cache_dir) if args.cache_dir else Path(world) / "cache"
    for name in names:
        t0 = time.perf_counter()
        model, info = load_checkpoint(out / name / "best.safetensors")
        data = load_split(world, "test", model, cache_dir=args.cache_dir)
        meta = ("all", "none") if MODELS[name]["use_metadata"] else ("none",)
        res = evaluate(model, data, zooms=ZOOMS, text=(False, True), metadata=meta, oracle=True, cache_dir=cache)
        rows = res.rows
        if name == "pcmepp-meta":  # paper Table 4: one metadata type alone, zoom 1, no text
            t4 = evaluate(model, data, zooms=(1,), text=(False,), metadata=TABLE4, oracle=True, cache_dir=cache)
            rows = rows + t4.rows
            res.ranks.update(t4.ranks)
        res.rows = rows
        write_results(res, out / name / "eval", {"version": info["version"]}, f"{name} ({info['version']})")
        results[name] = {"version": info["version"], "rows": rows, "n": len(data)}
        log(f"evaluated {name} on {len(data)} test samples in {time.perf_counter() - t0:.0f} s")
    return results


def pick(rows: list[dict], scorer: str, direction: str, zoom: int, text: bool, meta: str) -> dict:
    for r in rows:
        if (r["scorer"], r["direction"], r["zoom"], r["with_text"], r["metadata"]) == (scorer, direction, zoom, text, meta):
            return r
    raise KeyError((scorer, direction, zoom, text, meta))


def yn(b: bool) -> str:
    return "yes" if b else "no"


def build_markdown(results: dict, trained: dict, timing: dict, command: str, world_meta: dict) -> tuple[str, dict]:
    lines = [DOC_SECTION, "", f"Command: `{command}`", ""]
    counts = world_meta.get("counts", {})
    b = world_meta.get("build", {})
    lines += [
        f"World: seed {world_meta.get('world', {}).get('seed')}, {sum(counts.values())} samples "
        f"(train {counts.get('train')}, val {counts.get('val')}, test {counts.get('test')}), split by "
        f"{b.get('cell_deg') or b.get('cell_km')} {'degree' if b.get('cell_deg') else 'km'} cells; imagery "
        f"{b.get('imagery')} at {b.get('gsd')} m/px, {b.get('image_size')} px tiles. Metrics on the whole test split "
        "(queries = gallery); R@10% = share of queries with rank < 0.1 N; ties broken at random in expectation; "
        "score -CSD (InfoNCE models: their variance heads are untrained, so the variances are left out).", "",
        "Which trained model serves which row:", "",
        "| trained model | loss | metadata in training | serves rows |",
        "|---|---|---|---|",
    ]
    serve: dict[str, list[str]] = {}
    for method, loss, text, meta, model, _, _ in ROWS:
        serve.setdefault(model, []).append(f"{method} {loss}, text {yn(text)}, metadata {yn(meta)}")
    for name, spec in MODELS.items():
        if name in trained:
            t = trained[name]
            lines.append(f"| `{name}` ({t['steps']} steps, {t['wall_s'] / 60:.1f} min, version `{t['version']}`) | "
                         f"{spec['loss']} | {yn(spec['use_metadata'])} | {'; '.join(serve.get(name, []))} |")
    lines += ["", "| method | loss | text | metadata | zoom | I2A R@10% | I2A median rank | A2I R@10% | A2I median rank "
              "| oracle I2A R@10% | oracle I2A median | oracle A2I R@10% | oracle A2I median |",
              "|---|---|:---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    table = {}
    for z in ZOOMS:
        for row in ROWS + EXTRA:
            method, loss, text, meta, model, with_text, cond = row
            if model not in results:
                continue
            rr = results[model]["rows"]
            i2a, a2i = pick(rr, "model", "i2a", z, with_text, cond), pick(rr, "model", "a2i", z, with_text, cond)
            oi, oa = pick(rr, "oracle", "i2a", z, with_text, cond), pick(rr, "oracle", "a2i", z, with_text, cond)
            table[(row, z)] = (i2a, a2i, oi, oa)
            extra = " (extra)" if row in EXTRA else ""
            lines.append(f"| {method}{extra} | {loss} | {yn(text)} | {yn(meta)} | {z} | {i2a['r_at_10']:.3f} | "
                         f"{i2a['median_rank']:.0f} | {a2i['r_at_10']:.3f} | {a2i['median_rank']:.0f} | {oi['r_at_10']:.3f} | "
                         f"{oi['median_rank']:.0f} | {oa['r_at_10']:.3f} | {oa['median_rank']:.0f} |")
    n = next(iter(results.values()))["n"]
    lines += ["", f"N = {n} test samples; chance R@10% is about 0.10 and chance median rank about {n / 2:.0f}. "
              "The oracle scores each pair with the world's exact sampling law given the place and the same metadata. "
              "Beside a row without text it is the best ranking any model could reach; beside a text row it is "
              "the caption-aware oracle, also told what the true match's caption names (its exact sound set, its "
              "place and any context it names, and its caption source when the gallery is given it).", ""]
    claims = check_claims(table, results)
    lines += ["Targets and the paper's claims:", ""]
    for c in claims["list"]:
        lines.append(f"- {'PASS' if c['ok'] else '**FAIL**'}: {c['text']}")
    lines += ["", f"Time: {timing['total_s'] / 60:.1f} min in all (target <= 45 min): training "
              f"{timing['train_s'] / 60:.1f} min, evaluation with the oracle {timing['eval_s'] / 60:.1f} min"
              f"{timing.get('note', '')}.", ""]
    if "pcmepp-meta" in results:
        rr = results["pcmepp-meta"]["rows"]
        lines += ["Metadata ablation (paper Table 4) with `pcmepp-meta`, zoom 1, no text, one metadata type alone:", "",
                  "| metadata | I2A R@10% | I2A median rank | A2I R@10% | A2I median rank | oracle I2A R@10% | oracle A2I R@10% |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for m in ("none", *TABLE4, "all"):
            i, a = pick(rr, "model", "i2a", 1, False, m), pick(rr, "model", "a2i", 1, False, m)
            oi, oa = pick(rr, "oracle", "i2a", 1, False, m), pick(rr, "oracle", "a2i", 1, False, m)
            lines.append(f"| {m} | {i['r_at_10']:.3f} | {i['median_rank']:.0f} | {a['r_at_10']:.3f} | "
                         f"{a['median_rank']:.0f} | {oi['r_at_10']:.3f} | {oa['r_at_10']:.3f} |")
        lines.append("")
    return "\n".join(lines), claims


def check_claims(table: dict, results: dict) -> dict:
    out = []

    def get(row_idx: int, z: int, direction: str = "i2a", extra: bool = False) -> float | None:
        row = (EXTRA if extra else ROWS)[row_idx]
        v = table.get((row, z))
        return None if v is None else v[0 if direction == "i2a" else 1]["r_at_10"]

    def oracle(row_idx: int, z: int) -> float | None:
        v = table.get((ROWS[row_idx], z))
        return None if v is None else v[2]["r_at_10"]

    full = [get(5, z) for z in ZOOMS]
    orc = [oracle(5, z) for z in ZOOMS]
    if None not in full:
        ratio = [f / o for f, o in zip(full, orc, strict=True)]
        out.append({"ok": min(ratio) >= 0.8, "text": "quality: PCME++ with metadata and text reaches "
                    f"{', '.join(f'{r:.2f}' for r in ratio)} of the oracle's I2A R@10% at zoom 1/3/5 (target >= 0.8; "
                    "caption-aware oracle with all metadata and text)"})
    meta_on, meta_off = [get(4, z) for z in ZOOMS], [get(3, z) for z in ZOOMS]
    if None not in meta_on + meta_off:
        d = [a - b for a, b in zip(meta_on, meta_off, strict=True)]
        out.append({"ok": min(d) >= 0.03, "text": "metadata clearly beats no metadata (PCME++, no text): I2A R@10% "
                    f"+{', +'.join(f'{x:.3f}' for x in d)} at zoom 1/3/5 (taken as clear when >= 0.03)"})
    t_on, t_off = [get(5, z) for z in ZOOMS], [get(4, z) for z in ZOOMS]
    g_on, g_off = [get(1, z) for z in ZOOMS], [get(0, z) for z in ZOOMS]
    if None not in t_on + t_off:
        d = [a - b for a, b in zip(t_on, t_off, strict=True)]
        d2 = [a - b for a, b in zip(g_on, g_off, strict=True)] if None not in g_on + g_off else []
        out.append({"ok": min(d + d2) > 0, "text": "adding text beats no text: PCME++ with metadata I2A R@10% "
                    f"{', '.join(f'{x:+.3f}' for x in d)}" + (f"; GeoCLAP {', '.join(f'{x:+.3f}' for x in d2)}" if d2 else "")
                    + " at zoom 1/3/5"})
    pairs = [("no text, no metadata", get(3, z), get(0, z)) for z in ZOOMS]
    pairs += [("text, metadata", get(5, z), get(2, z)) for z in ZOOMS]
    pairs += [("no text, metadata", get(4, z), get(0, z, extra=True)) for z in ZOOMS]
    pairs += [("text, no metadata", get(1, z, extra=True), get(1, z)) for z in ZOOMS]
    pairs = [p for p in pairs if None not in p[1:]]
    if pairs:
        diffs = {}
        for label, p, i in pairs:
            diffs.setdefault(label, []).append(p - i)
        out.append({"ok": all(min(v) >= 0 for v in diffs.values()), "text": "PCME++ at least as good as InfoNCE under "
                    "the same inputs (I2A R@10% difference at zoom 1/3/5): " + "; ".join(
                        f"{k} {', '.join(f'{x:+.3f}' for x in v)}" for k, v in diffs.items())})
    spans = []
    for row in ROWS:
        vals = [table[(row, z)][0]["r_at_10"] for z in ZOOMS if (row, z) in table]
        vals_a = [table[(row, z)][1]["r_at_10"] for z in ZOOMS if (row, z) in table]
        if len(vals) == len(ZOOMS):
            spans.append(max(max(vals) - min(vals), max(vals_a) - min(vals_a)))
    if spans:
        out.append({"ok": max(spans) <= 0.03, "text": "R@10% varies by no more than 0.03 across zoom 1, 3, 5: largest "
                    f"spread over rows and directions {max(spans):.3f}"})
    return {"list": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", required=True, help="a world dataset (psm world build)")
    ap.add_argument("--out", default="bench-out/table1")
    ap.add_argument("--models", default=",".join(MODELS), help="which trainings to run (comma-separated)")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--minutes", type=float, default=8.0, help="training time limit per model")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--reuse", action="store_true", help="reuse finished trainings under --out")
    ap.add_argument("--world-build-s", type=float, default=None, help="seconds the world build took (reported)")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [m.strip() for m in a.models.split(",") if m.strip()]
    t0 = time.perf_counter()
    trained = train_models(a.world, out, names, a)
    t1 = time.perf_counter()
    results = evaluate_models(a.world, out, names, a)
    t2 = time.perf_counter()
    timing = {"train_s": t1 - t0, "eval_s": t2 - t1, "total_s": t2 - t0}
    if a.world_build_s:
        timing["note"] = f"; the world build ({a.world_build_s / 60:.1f} min) is not included"
    world_meta = json.loads((Path(a.world) / "world.json").read_text())
    command = " ".join(shlex.quote(x) for x in [".venv/bin/python", *sys.argv])
    md, claims = build_markdown(results, trained, timing, command, world_meta)
    (out / "table1.md").write_text(md)
    (out / "table1.json").write_text(json.dumps({"timing": timing, "claims": claims, "trained": trained,
                                                 "results": results}, indent=2, default=str) + "\n")
    print(md)
    if a.write_docs:
        write_section(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md", DOC_SECTION, md)


if __name__ == "__main__":
    main()
