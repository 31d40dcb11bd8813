"""Real model embeddings of a large synthetic region, for the query benchmark.

Renders every grid tile of a region from the synthetic world, runs a trained checkpoint's
image tower, fusion and heads under one condition (the worker's own functions:
``worker.model_runner.read_and_compute_features`` and ``compute_gaussians``), and encodes
real text and audio queries (test-split captions, the world's class queries, test-split
clips). Everything lands in one ``.npz`` that ``bench/query_bench.py load --source`` reads.

    PSM_HOME=.psm .venv/bin/python bench/real_embeddings.py \\
        --checkpoint .psm/checkpoints/demo512/best.safetensors \\
        --dataset .psm/data/world-demo --zoom 3 --out .psm/bench512/real.npz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", required=True, help="the world dataset the model was trained on")
    p.add_argument("--region", default="-125.0,24.5,-66.9,49.4", help="lon/lat box west,south,east,north")
    p.add_argument("--zoom", type=int, default=3)
    p.add_argument("--gsd", type=float, default=100.0)
    p.add_argument("--size-px", type=int, default=48)
    p.add_argument("--month", type=int, default=5)
    p.add_argument("--hour", type=int, default=6)
    p.add_argument("--audio-source", default="aporee")
    p.add_argument("--text-queries", type=int, default=120)
    p.add_argument("--audio-queries", type=int, default=80)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    import pandas as pd
    import torch
    from shapely.geometry import box
    from tqdm import tqdm

    from psm_db.tiles import GridSpec, grid_tiles
    from psm_model import load_checkpoint
    from worker.embed import ConditionSpec
    from worker.imagery import ImagerySpec, open_source
    from worker.model_runner import compute_gaussians, read_and_compute_features

    torch.set_num_threads(args.threads)
    model, info = load_checkpoint(args.checkpoint, map_location="cpu")
    model.eval()
    source = open_source(ImagerySpec(kind="world", gsd=args.gsd, size_px=args.size_px,
                                     name=f"world-{Path(args.dataset).name}"))
    spec = GridSpec(imagery_source=getattr(source, "name", "world"), gsd=args.gsd, size_px=args.size_px,
                    zoom=args.zoom)
    w, s, e, n = (float(v) for v in args.region.split(","))
    tiles = grid_tiles(box(w, s, e, n), spec)
    cond = ConditionSpec(month=args.month, hour=args.hour, audio_source=args.audio_source)
    lat, lon = tiles.centroids()
    print(f"model {info['version']}: {len(tiles)} tiles at zoom {args.zoom}", flush=True)

    mus, vars_ = [], []
    started = time.perf_counter()
    step = 4096
    for s0 in tqdm(range(0, len(tiles), step), desc="tiles", unit="chunk"):
        part = tiles.slice(s0, min(len(tiles), s0 + step))
        feats = read_and_compute_features(source, part, model, args.batch)
        mu, var = compute_gaussians(model, feats, lat[s0:s0 + len(part)], lon[s0:s0 + len(part)], cond, args.batch)
        mus.append(mu)
        vars_.append(var)
    mu = np.concatenate(mus)
    var = np.concatenate(vars_)
    tiles_s = time.perf_counter() - started

    # Real queries: the world's class queries and test captions (text), test clips (audio).
    ds = Path(args.dataset)
    world = json.loads((ds / "world.json").read_text())
    index = pd.read_parquet(ds / "index.parquet")
    test = index[index["split"] == "test"]
    texts = list(dict.fromkeys([str(t) for t in _class_queries(world)] + test["caption"].astype(str).tolist()))
    texts = texts[: args.text_queries]
    q_mu, q_var, q_kind, q_label = [], [], [], []
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            m, lv = model.encode_text(texts[i:i + 32])
            q_mu.append(m.float().numpy())
            q_var.append(np.exp(lv.double().numpy()).astype(np.float32))
        q_kind += ["text"] * len(texts)
        q_label += texts
        rng = np.random.default_rng(0)
        rows = test.iloc[rng.permutation(len(test))[: args.audio_queries]]
        shards: dict[str, np.lib.npyio.NpzFile] = {}
        rate = int(world.get("build", {}).get("sample_rate", 16000))
        for _, row in rows.iterrows():
            z = shards.setdefault(row["shard"], np.load(ds / row["shard"]))
            wave = z["audio"][int(row["row"])].astype(np.float32) / 32768.0
            m, lv = model.encode_audio([wave], rate)
            q_mu.append(m.float().numpy())
            q_var.append(np.exp(lv.double().numpy()).astype(np.float32))
            q_kind.append("audio")
            q_label.append(f"{row['key']} ({row['caption']})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, lon=lon.astype(np.float64), lat=lat.astype(np.float64), mu=mu, var=var,
             q_mu=np.concatenate(q_mu), q_var=np.concatenate(q_var), q_kind=np.array(q_kind),
             q_label=np.array(q_label), model_version=np.array(info["version"]),
             match=np.array([float(v) for v in model.match_params()]),
             condition=np.array([args.month, args.hour]), zoom=np.array(args.zoom))
    print(json.dumps({"tiles": len(tiles), "seconds": round(tiles_s, 1),
                      "tiles_per_s": round(len(tiles) / tiles_s, 1), "queries": len(q_kind),
                      "var_sum_mean": float(var.sum(1).mean()), "var_sum_std": float(var.sum(1).std()),
                      "out": str(out)}, indent=2))


def _class_queries(world: dict) -> list[str]:
    cq = world.get("class_queries", {})
    if isinstance(cq, dict):
        return [v if isinstance(v, str) else str(v) for v in cq.values()]
    return [str(v) for v in cq]


if __name__ == "__main__":
    main()
