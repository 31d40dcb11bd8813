"""Mixed read load on an embedded database: N reader clients for S seconds, latency per call type.

Runs against a database ``make demo`` left (the ``demo`` region set, the USA at zoom 5, a city at
zoom 1, stored queries), as the read-only role the dashboard and psql users get. Each client
loops over a random stored query and a random call type:

* ``regions``: ``psm.rank_regions`` over the region set (mean, max or share);
* ``tiles_all``: ``psm.rank_tiles`` top 100 over every tile at the zoom;
* ``tiles_box``: ``psm.rank_tiles`` top 100 in a random box of about a state;
* ``map_box``: ``psm.map_tiles``, the whole map of a random box of about a state.

    PSM_HOME=.psm .venv/bin/python bench/load_bench.py --clients 16 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from psm_db.settings import Settings  # noqa: E402

KINDS = {"regions": 0.3, "tiles_all": 0.2, "tiles_box": 0.3, "map_box": 0.2}


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--set", default="demo")
    p.add_argument("--zoom", type=int, default=5)
    p.add_argument("--month", type=int, default=5)
    p.add_argument("--hour", type=int, default=6)
    p.add_argument("--audio-source", default="aporee")
    p.add_argument("--out", default=None, help="write the figures here as JSON")
    args = p.parse_args()

    s = Settings()
    url = s.reader_url
    with psycopg.connect(url, autocommit=True) as c:
        qids = [r[0] for r in c.execute("SELECT id FROM psm.queries ORDER BY id")]
        west, south, east, north = c.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(centroid) e"
            " FROM psm.tiles WHERE zoom = %s) x", (args.zoom,)).fetchone()
    if not qids:
        sys.exit("no stored queries: psm query embed --model VERSION --text '...' first")
    rng = np.random.default_rng(1)
    boxes = [(x, y, x + 7.0, y + 4.0) for x, y in zip(rng.uniform(west, east - 7, 64), rng.uniform(south, north - 4, 64),
                                                      strict=True)]
    cond = (args.month, args.hour, args.audio_source, None)
    lat: dict[str, list[float]] = {k: [] for k in KINDS}
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + args.seconds

    def client(seed: int) -> None:
        r = np.random.default_rng(seed)
        with psycopg.connect(url, autocommit=True) as conn:
            while time.perf_counter() < stop_at:
                qid = int(r.choice(qids))
                kind = str(r.choice(list(KINDS), p=list(KINDS.values())))
                box = boxes[int(r.integers(len(boxes)))]
                t0 = time.perf_counter()
                try:
                    if kind == "regions":
                        rows = conn.execute("SELECT * FROM psm.rank_regions(%s, %s, %s, %s, %s, %s, %s, 20, %s)",
                                            (qid, args.set, *cond, args.zoom,
                                             str(r.choice(["mean", "max", "share"])))).fetchall()
                    elif kind == "tiles_all":
                        rows = conn.execute("SELECT tile_id, distance FROM psm.rank_tiles(%s, NULL, %s, %s, %s, %s,"
                                            " %s, 100)", (qid, *cond, args.zoom)).fetchall()
                    elif kind == "tiles_box":
                        rows = conn.execute("SELECT tile_id, distance FROM psm.rank_tiles(%s, ST_MakeEnvelope(%s, %s,"
                                            " %s, %s, 4326), %s, %s, %s, %s, %s, 100)",
                                            (qid, *box, *cond, args.zoom)).fetchall()
                    else:
                        rows = conn.execute("SELECT tile_id, probability FROM psm.map_tiles(%s, %s, %s, %s, %s, %s,"
                                            " ST_MakeEnvelope(%s, %s, %s, %s, 4326))",
                                            (qid, *cond, args.zoom, *box)).fetchall()
                    if not rows:
                        raise RuntimeError("empty result")
                except Exception as e:  # noqa: BLE001 - every error counts against the run
                    with lock:
                        errors.append(f"{kind}: {e}")
                    continue
                with lock:
                    lat[kind].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    every = [x for xs in lat.values() for x in xs]
    out = {
        "clients": args.clients, "seconds": round(wall, 1), "calls": len(every), "errors": len(errors),
        "calls_per_s": round(len(every) / wall, 1), "cores": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "by_kind": {k: {"n": len(v), "p50_ms": round(1000 * _pct(v, 50), 1), "p99_ms": round(1000 * _pct(v, 99), 1),
                        "mean_ms": round(1000 * statistics.fmean(v), 1) if v else None}
                    for k, v in lat.items()},
        "first_errors": errors[:5],
    }
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
