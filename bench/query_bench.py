"""Query benchmark: exact and HNSW ranking in PostgreSQL vs numpy brute force and FAISS HNSW.

Usage (phases can be run one at a time; state lives in the benchmark database and in
``$PSM_HOME/bench_queries``):

    export PSM_HOME=.psm
    .venv/bin/python bench/query_bench.py load   --rows 1000000   # tiles + embeddings (binary COPY)
    .venv/bin/python bench/query_bench.py index                   # HNSW on [mu, sqrt(var_sum)]
    .venv/bin/python bench/query_bench.py query                   # exact / ANN / map vs numpy, FAISS
    .venv/bin/python bench/query_bench.py storage                 # vector vs halfvec vs PLAIN, 100k rows
    .venv/bin/python bench/query_bench.py load-test --clients 16 --seconds 60
    .venv/bin/python bench/query_bench.py report                  # markdown for docs/benchmarks.md

Data: with ``load --source real.npz`` (from ``bench/real_embeddings.py``) the rows are drawn to
match a trained model's real tile embeddings (see :func:`draw_like`) and the queries are the
model's real text and audio encodings. Without it, the older synthetic draw is used:
unit-norm means around a few hundred centres with small isotropic noise, sigma^2 ~
exp(N(-4, 0.5)) -- far harder for a graph index than model output (no low-dimensional
structure), kept only to compare with earlier runs.
"""

from __future__ import annotations

import argparse
import json
import math
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

from psm_db import migrate  # noqa: E402
from psm_db.ann import DEFAULT_EF_CONSTRUCTION, DEFAULT_M  # noqa: E402
from psm_db.settings import Settings  # noqa: E402

DB_NAME = os.environ.get("PSM_BENCH_DB", "psm_bench_queries")
MODEL = "b3c4d5e6f7a8b9c0"
D = 512
CENTRES = 300
NOISE = 0.02
LON0, LON1, LAT0, LAT1 = -125.0, -67.0, 25.0, 49.0
MATCH_A, MATCH_B = 5.0, 5.0 * 21.5   # sigmoid centred near typical CSD values of these data
CHUNK = 25_000


def _settings() -> Settings:
    return Settings()


def _urls() -> tuple[str, str]:
    base = _settings().db_url.rpartition("/")[0]
    return f"{base}/postgres", f"{base}/{DB_NAME}"


def _state_dir() -> Path:
    path = _settings().home / "bench_queries"
    if DB_NAME != "psm_bench_queries":
        path = path / DB_NAME
    path.mkdir(parents=True, exist_ok=True)
    return path


def _results() -> dict:
    path = _state_dir() / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save(section: str, values: dict) -> None:
    data = _results()
    data[section] = values
    (_state_dir() / "results.json").write_text(json.dumps(data, indent=2))
    print(json.dumps({section: values}, indent=2), flush=True)


def _connect(url: str, **kw) -> psycopg.Connection:
    from pgvector.psycopg import register_vector

    conn = psycopg.connect(url, **kw)
    register_vector(conn)
    return conn


def grid_shape(n: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n * (LON1 - LON0) / (LAT1 - LAT0)))
    rows = math.ceil(n / cols)
    return rows, cols


def _centres(seed: int = 0) -> np.ndarray:
    c = np.random.default_rng(seed).standard_normal((CENTRES, D)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def gaussians(n: int, rng: np.random.Generator, cluster: np.ndarray, centres: np.ndarray):
    mu = centres[cluster] + rng.standard_normal((n, D), dtype=np.float32) * NOISE
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    var = np.exp(rng.normal(-4.0, 0.5, (n, D))).astype(np.float32)
    return mu, var


def tile_clusters(rows: int, cols: int, n: int, seed: int = 1) -> np.ndarray:
    """Spatially coherent cluster ids: 40x40-tile blocks share a cluster, 30% are random."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    r, c = idx // cols, idx % cols
    blocks = rng.integers(0, CENTRES, (rows // 40 + 1, cols // 40 + 1))
    cl = blocks[r // 40, c // 40]
    noisy = rng.random(n) < 0.3
    cl[noisy] = rng.integers(0, CENTRES, noisy.sum())
    return cl


def _model() -> str:
    return _results().get("load", {}).get("model", MODEL)


def draw_like(source: dict, lon: np.ndarray, lat: np.ndarray, seed: int = 7,
              neighbours: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Draw (mu, sigma^2) for grid cells at (lon, lat) to match real tile embeddings.

    Each cell takes the real tile nearest to it on the ground as its parent and one of the
    parent's ``neighbours`` nearest real embeddings (L2 in mu) as a partner, and is a random
    point on the segment between them (SMOTE-style interpolation): mu is interpolated and
    re-normalised, log sigma^2 interpolated. The draws stay on the model's embedding manifold
    (its low intrinsic dimension and its correlation of sigma^2 with mu), keep the spatial
    coherence of the real map, and never duplicate a real row.
    """
    import faiss
    from scipy.spatial import cKDTree

    mu_r = np.ascontiguousarray(source["mu"], dtype=np.float32)
    logvar_r = np.log(np.asarray(source["var"], dtype=np.float64)).astype(np.float32)
    coslat = np.cos(np.radians(40.0))
    ground = cKDTree(np.stack([source["lon"] * coslat, source["lat"]], axis=1))
    _, parent = ground.query(np.stack([lon * coslat, lat], axis=1), workers=-1)
    index = faiss.IndexFlatL2(mu_r.shape[1])
    index.add(mu_r)
    _, knn = index.search(mu_r, neighbours + 1)
    rng = np.random.default_rng(seed)
    partner = knn[parent, rng.integers(1, neighbours + 1, len(parent))]
    lam = rng.random(len(parent), dtype=np.float32)[:, None]
    mu = (1.0 - lam) * mu_r[parent] + lam * mu_r[partner]
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    var = np.exp((1.0 - lam) * logvar_r[parent] + lam * logvar_r[partner])
    return mu.astype(np.float32), var.astype(np.float32)


def distribution_check(source: dict, mu: np.ndarray, var: np.ndarray, seed: int = 3) -> dict:
    """Compare drawn rows with the real ones they were drawn like (same number of rows each).

    Intrinsic dimension (PCA participation ratio and components for 90 % of the variance),
    sum sigma^2, and, for the real queries, the CSD of the 1st and 100th nearest tile and the
    relative gap between them (how many near-ties a top-100 has to resolve).
    """
    rng = np.random.default_rng(seed)
    n = len(source["mu"])
    sample = {"real": (np.asarray(source["mu"], np.float32), np.asarray(source["var"], np.float32)),
              "drawn": tuple(a[np.sort(rng.choice(len(mu), n, replace=False))] for a in (mu, var))}
    q_mu, q_vs = source["q_mu"].astype(np.float32), source["q_var"].astype(np.float64).sum(1)
    out: dict = {"rows_each": n}
    for name, (m, v) in sample.items():
        x = m - m.mean(0)
        eig = np.linalg.eigvalsh((x.T @ x).astype(np.float64) / len(x))[::-1]
        vs = v.astype(np.float64).sum(1)
        d = (np.einsum("ij,ij->i", m, m)[None, :] - 2.0 * (q_mu @ m.T) + np.einsum("ij,ij->i", q_mu, q_mu)[:, None]
             + vs[None, :] + q_vs[:, None])
        part = np.sort(np.partition(d, 100, axis=1)[:, :100], axis=1)
        out[name] = {
            "pca_participation_ratio": round(float(eig.sum() ** 2 / (eig ** 2).sum()), 1),
            "pca_components_90pct": int(np.searchsorted(np.cumsum(eig) / eig.sum(), 0.9) + 1),
            "var_sum_mean": round(float(vs.mean()), 4), "var_sum_std": round(float(vs.std()), 4),
            "query_d1_median": round(float(np.median(part[:, 0])), 4),
            "query_d100_median": round(float(np.median(part[:, 99])), 4),
            "query_gap_1_to_100_median": round(float(np.median(part[:, 99] / part[:, 0] - 1.0)), 4),
        }
    return out


def encode_copy(model: str, cond: int, tile_ids: np.ndarray, mu: np.ndarray, var: np.ndarray) -> bytes:
    n = len(tile_ids)
    vec = [("len", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("v", ">f4", (D,))]
    dtype = np.dtype([("nf", ">i2"), ("mv_len", ">i4"), ("mv", "S16"), ("c_len", ">i4"), ("c", ">i4"),
                      ("t_len", ">i4"), ("t", ">i8"), ("d_len", ">i4"), ("d", ">i4"),
                      ("mu", np.dtype(vec)), ("var", np.dtype(vec)), ("s_len", ">i4"), ("s", ">f8")])
    rows = np.empty(n, dtype=dtype)
    rows["nf"], rows["mv_len"], rows["mv"] = 7, 16, model.encode()
    rows["c_len"], rows["c"], rows["t_len"], rows["t"] = 4, cond, 8, tile_ids
    rows["d_len"], rows["d"] = 4, D
    for name, values in (("mu", mu), ("var", var)):
        rows[name]["len"], rows[name]["dim"], rows[name]["unused"] = 4 + 4 * D, D, 0
        rows[name]["v"] = values
    rows["s_len"], rows["s"] = 8, var.sum(axis=1, dtype=np.float64)
    return rows.tobytes()


# --------------------------------------------------------------------------- load


def cmd_load(args: argparse.Namespace) -> None:
    admin, url = _urls()
    with psycopg.connect(admin, autocommit=True) as c:
        exists = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
        if exists and args.fresh:
            c.execute(f'DROP DATABASE "{DB_NAME}" WITH (FORCE)')
            exists = None
        if not exists:
            c.execute(f'CREATE DATABASE "{DB_NAME}"')
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS postgis; CREATE EXTENSION IF NOT EXISTS vector")
    migrate.upgrade(url)
    n = args.rows
    rows, cols = grid_shape(n)
    dlon, dlat = (LON1 - LON0) / cols, (LAT1 - LAT0) / rows
    source = dict(np.load(args.source)) if args.source else None
    model, preset, match_a, match_b = MODEL, "paper", MATCH_A, MATCH_B
    if source is not None:
        model, preset = str(source["model_version"]), "demo"
        match_a, match_b = (float(v) for v in source["match"])
        if source["mu"].shape[1] != D:
            raise SystemExit(f"{args.source} holds d = {source['mu'].shape[1]} embeddings; this benchmark is d = {D}")
    _save("load", {"model": model, "source": str(args.source or "")})
    started = time.perf_counter()
    with _connect(url) as c:
        c.execute(
            "INSERT INTO psm.model_versions (version, name, preset, loss, embed_dim, feature_dim, match_a,"
            " match_b, checkpoint_path) VALUES (%s, 'bench', %s, 'pcmepp', %s, 768, %s, %s, '/bench')"
            " ON CONFLICT DO NOTHING", (model, preset, D, match_a, match_b))
        cond = c.execute("SELECT psm.ensure_condition(5, 6, NULL, NULL)").fetchone()[0]
        have = c.execute("SELECT count(*) FROM psm.tiles").fetchone()[0]
        if have < n:
            c.execute("TRUNCATE psm.tiles CASCADE")
            c.execute(
                "INSERT INTO psm.tiles (imagery_source, gsd, size_px, zoom, grid_row, grid_col, geom, centroid) "
                "SELECT 'bing', 0.6, 300, 1, i / %(cols)s, i %% %(cols)s,"
                " ST_MakeEnvelope(%(x)s + (i %% %(cols)s) * %(dx)s, %(y)s + (i / %(cols)s) * %(dy)s,"
                "   %(x)s + (i %% %(cols)s + 1) * %(dx)s, %(y)s + (i / %(cols)s + 1) * %(dy)s, 4326),"
                " ST_SetSRID(ST_MakePoint(%(x)s + (i %% %(cols)s + 0.5) * %(dx)s,"
                "   %(y)s + (i / %(cols)s + 0.5) * %(dy)s), 4326)"
                " FROM generate_series(0, %(n)s - 1) i ORDER BY i",
                {"cols": cols, "x": LON0, "y": LAT0, "dx": dlon, "dy": dlat, "n": n})
            c.commit()
        tiles_s = time.perf_counter() - started
        ids = np.array([r[0] for r in c.execute(
            "SELECT id FROM psm.tiles ORDER BY grid_row, grid_col").fetchall()], dtype=np.int64)
        c.execute("TRUNCATE psm.embeddings")
        c.commit()
    centroid_lon = LON0 + (np.arange(n) % cols + 0.5) * dlon
    centroid_lat = LAT0 + (np.arange(n) // cols + 0.5) * dlat
    if source is not None:
        t0 = time.perf_counter()
        if args.real_only:  # the real rows themselves, on the benchmark's grid (unfiltered ANN check)
            n = len(source["mu"])
            if n != args.rows:
                raise SystemExit(f"--real-only needs --rows {n} (the number of real rows)")
        drawn = ((np.asarray(source["mu"], np.float32), np.asarray(source["var"], np.float32)) if args.real_only
                 else draw_like(source, centroid_lon, centroid_lat))
        print(f"drew {n} rows like {len(source['mu'])} real ones in {time.perf_counter() - t0:.0f} s", flush=True)
        check = distribution_check(source, *drawn)
        print(json.dumps({"distribution": check}, indent=2), flush=True)
    else:
        centres = _centres()
        clusters = tile_clusters(rows, cols, n)
    state = _state_dir()
    mu_all = np.lib.format.open_memmap(state / "mu.npy", mode="w+", dtype=np.float32, shape=(n, D))
    var_sum = np.empty(n, dtype=np.float64)
    copy_started = time.perf_counter()
    with _connect(url) as c:
        c.execute("SET synchronous_commit = off")
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            rng = np.random.default_rng(1000 + start // CHUNK)
            if source is not None:
                mu, var = drawn[0][start:stop], drawn[1][start:stop]
            else:
                mu, var = gaussians(stop - start, rng, clusters[start:stop], centres)
            mu_all[start:stop] = mu
            var_sum[start:stop] = var.sum(axis=1, dtype=np.float64)
            payload = encode_copy(model, cond, ids[start:stop], mu, var)
            with c.cursor().copy(
                "COPY psm.embeddings (model_version, condition_id, tile_id, dim, mu, var, var_sum)"
                " FROM STDIN (FORMAT binary)") as cp:
                cp.write(b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") * 2)
                view = memoryview(payload)
                for i in range(0, len(view), 1 << 20):
                    cp.write(view[i:i + (1 << 20)])
                cp.write((-1).to_bytes(2, "big", signed=True))
            c.commit()
            done = stop
            rate = done / (time.perf_counter() - copy_started)
            print(f"{done}/{n} rows, {rate:,.0f} rows/s", flush=True)
        c.execute("ANALYZE psm.embeddings; ANALYZE psm.tiles")
    mu_all.flush()
    np.save(state / "var_sum.npy", var_sum)
    np.save(state / "tile_ids.npy", ids)
    np.save(state / "centroids.npy", np.stack([centroid_lon, centroid_lat], axis=1))
    copy_s = time.perf_counter() - copy_started
    _save("load", {"model": model, "source": str(args.source or ""),
                   "distribution": check if source is not None else None, "rows": n, "grid": [rows, cols], "tiles_seconds": round(tiles_s, 1),
                   "copy_seconds": round(copy_s, 1), "copy_rows_per_s": round(n / copy_s),
                   **_sizes(url)})


def _sizes(url: str) -> dict:
    with psycopg.connect(url) as c:
        heap, toast, idx, total = c.execute(
            "SELECT pg_relation_size(c.oid), coalesce(pg_total_relation_size(c.reltoastrelid), 0),"
            " pg_indexes_size(c.oid), pg_total_relation_size(c.oid)"
            " FROM pg_class c WHERE c.oid = 'psm.embeddings'::regclass").fetchone()
        ann = c.execute("SELECT coalesce(sum(pg_relation_size(('psm.' || index_name)::regclass)), 0)"
                        " FROM psm.ann_indexes").fetchone()[0]
    mb = 1 << 20
    return {"heap_mb": round(heap / mb), "toast_mb": round(toast / mb), "indexes_mb": round(idx / mb),
            "hnsw_mb": round(ann / mb), "total_mb": round(total / mb)}


# --------------------------------------------------------------------------- index


def cmd_index(args: argparse.Namespace) -> None:
    from psm_db.ann import build_ann_index
    from psm_db.engine import make_engine

    _, url = _urls()
    engine = make_engine(url)
    with psycopg.connect(url) as c:
        cond = c.execute("SELECT psm.find_condition(5, 6, NULL, NULL)").fetchone()[0]
    entry = build_ann_index(engine=engine, model_version=_model(), condition_id=cond, m=args.m,
                            ef_construction=args.ef_construction, key_type=args.key, concurrently=False,
                            maintenance_work_mem=args.mem, workers=args.workers)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("VACUUM ANALYZE psm.embeddings")
    _save("index", {"rows": entry.rows, "key": args.key, "m": args.m, "ef_construction": args.ef_construction,
                    "workers": args.workers, "build_seconds": round(entry.build_seconds, 1),
                    **_sizes(url)})


# --------------------------------------------------------------------------- queries


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def _ms(xs: list[float]) -> dict:
    return {"p50_ms": round(1000 * statistics.median(xs), 2), "p95_ms": round(1000 * _pct(xs, 95), 2),
            "n": len(xs)}


def _store_queries(url: str, count: int) -> list[int]:
    with _connect(url) as c:
        have = [r[0] for r in c.execute("SELECT id FROM psm.queries WHERE name = 'bench' ORDER BY id")]
        if len(have) >= count:
            return have[:count]
        src = _results().get("load", {}).get("source")
        if src:  # the model's real text and audio encodings
            z = np.load(src)
            mu, var = z["q_mu"][:count], z["q_var"][:count]
            kinds, labels = z["q_kind"][:count].tolist(), z["q_label"][:count].tolist()
        else:
            rng = np.random.default_rng(99)
            mu, var = gaussians(count, rng, rng.integers(0, CENTRES, count), _centres())
            kinds, labels = ["text"] * count, [f"bench query {i}" for i in range(count)]
        model = _model()
        for i in range(len(mu)):
            text, audio = (labels[i][:500], None) if kinds[i] == "text" else (None, labels[i][:200])
            c.execute("INSERT INTO psm.queries (model_version, name, kind, text, audio_name, dim, mu, var, var_sum)"
                      " VALUES (%s, 'bench', %s, %s, %s, %s, %s, %s, %s)",
                      (model, kinds[i], text, audio, D, mu[i], var[i], float(var[i].sum(dtype=np.float64))))
        c.commit()
        return [r[0] for r in c.execute("SELECT id FROM psm.queries WHERE name = 'bench' ORDER BY id")]


def _query_vectors(url: str, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    with _connect(url) as c:
        rows = c.execute("SELECT mu, var_sum FROM psm.queries WHERE id = ANY(%s) ORDER BY id", (ids,)).fetchall()
    mu = np.stack([np.asarray(r[0].to_numpy() if hasattr(r[0], "to_numpy") else r[0]) for r in rows])
    return mu.astype(np.float32), np.array([r[1] for r in rows])


def _state_boxes(rng: np.random.Generator, count: int, w: float = 7.0, h: float = 4.0) -> list[tuple]:
    out = []
    for _ in range(count):
        x = rng.uniform(LON0, LON1 - w)
        y = rng.uniform(LAT0, LAT1 - h)
        out.append((x, y, x + w, y + h))
    return out


def cmd_query(args: argparse.Namespace) -> None:
    _, url = _urls()
    state = _state_dir()
    mu = np.load(state / "mu.npy", mmap_mode="r")
    mu = np.ascontiguousarray(mu)
    var_sum = np.load(state / "var_sum.npy")
    tile_ids = np.load(state / "tile_ids.npy")
    centroids = np.load(state / "centroids.npy")
    n = len(tile_ids)
    qids = _store_queries(url, args.queries)
    q_mu, q_vs = _query_vectors(url, qids)
    k = 100
    mu_sq = np.einsum("ij,ij->i", mu, mu).astype(np.float64)
    out: dict = {"rows": n, "k": k, "queries": len(qids)}

    # numpy brute force: the floor (one matrix-vector product over all rows per query)
    np_times, truth, truth_kth = [], [], []
    for i in range(len(qids)):
        t0 = time.perf_counter()
        d = mu_sq - 2.0 * (mu @ q_mu[i]).astype(np.float64) + float(q_mu[i] @ q_mu[i]) + var_sum + q_vs[i]
        top = np.argpartition(d, k)[:k]
        top = top[np.argsort(d[top])]
        np_times.append(time.perf_counter() - t0)
        truth.append(tile_ids[top])
        truth_kth.append(float(d[top[-1]]))
    out["numpy_bruteforce"] = _ms(np_times)
    print("numpy", out["numpy_bruteforce"], flush=True)

    with _connect(url, autocommit=True) as c:
        c.execute("SET jit = off")
        # ANN through psm.rank_tiles (HNSW on [mu, sqrt(var_sum)], re-ranked by exact CSD)
        for method in () if args.skip_ann else ("ann",):
            times, recalls, kth_err = [], [], []
            for i, qid in enumerate(qids):
                t0 = time.perf_counter()
                got = c.execute("SELECT tile_id, distance FROM psm.rank_tiles(%s, NULL, 5, 6, NULL, NULL, 1, %s, %s)",
                                (qid, k, method)).fetchall()
                times.append(time.perf_counter() - t0)
                recalls.append(len({r[0] for r in got} & set(truth[i].tolist())) / k)
                kth_err.append(got[-1][1] / truth_kth[i] - 1.0)
            out["pg_ann"] = {**_ms(times), "recall_at_100": round(statistics.mean(recalls), 4),
                             "kth_distance_rel_error": float(f"{statistics.mean(kth_err):.2e}"),
                             "recall_min": round(min(recalls), 3)}
            print("pg ann", out["pg_ann"], flush=True)
        sweep = []
        for spec in [] if args.skip_ann else args.ann_sweep.split(","):
            ef, cand = (int(x) for x in spec.split(":"))
            c.execute("SELECT set_config('psm.ann_ef_search', %s, false), set_config('psm.ann_candidates', %s, false)",
                      (str(ef), str(cand)))
            times, recalls, kth_err = [], [], []
            for i, qid in enumerate(qids[: args.sweep_queries]):
                t0 = time.perf_counter()
                got = c.execute("SELECT tile_id, distance FROM psm.rank_tiles(%s, NULL, 5, 6, NULL, NULL, 1, %s, 'ann')",
                                (qid, k)).fetchall()
                times.append(time.perf_counter() - t0)
                recalls.append(len({r[0] for r in got} & set(truth[i].tolist())) / k)
                kth_err.append(got[-1][1] / truth_kth[i] - 1.0)
            sweep.append({"ef_search": ef, "candidates": cand, **_ms(times),
                          "recall_at_100": round(statistics.mean(recalls), 4),
                          "kth_distance_rel_error": float(f"{statistics.mean(kth_err):.2e}")})
            print("pg ann sweep", sweep[-1], flush=True)
        c.execute("RESET psm.ann_ef_search; RESET psm.ann_candidates")
        out["pg_ann_sweep"] = sweep
        # exact over the whole table (a handful: it scans every row)
        times, recalls = [], []
        for i, qid in enumerate(qids[: args.exact_full]):
            t0 = time.perf_counter()
            got = c.execute("SELECT tile_id FROM psm.rank_tiles(%s, NULL, 5, 6, NULL, NULL, 1, %s, 'exact')",
                            (qid, k)).fetchall()
            times.append(time.perf_counter() - t0)
            recalls.append(len({r[0] for r in got} & set(truth[i].tolist())) / k)
        out["pg_exact_full_table"] = {**_ms(times), "recall_vs_numpy": round(statistics.mean(recalls), 4)}
        print("pg exact full", out["pg_exact_full_table"], flush=True)

        # state-sized polygons: exact, auto, and numpy with the same mask
        rng = np.random.default_rng(5)
        boxes = _state_boxes(rng, args.regions)
        ex_t, auto_t, np_t, tiles_in, agree, auto_recall, ann_t, ann_recall = [], [], [], [], [], [], [], []
        for j, bx in enumerate(boxes):
            qi = j % len(qids)
            wkt = (f"POLYGON(({bx[0]} {bx[1]}, {bx[2]} {bx[1]}, {bx[2]} {bx[3]}, {bx[0]} {bx[3]}, "
                   f"{bx[0]} {bx[1]}))")
            t0 = time.perf_counter()
            mask = ((centroids[:, 0] >= bx[0]) & (centroids[:, 0] <= bx[2])
                    & (centroids[:, 1] >= bx[1]) & (centroids[:, 1] <= bx[3]))
            idx = np.flatnonzero(mask)
            d = (mu_sq[idx] - 2.0 * (mu[idx] @ q_mu[qi]).astype(np.float64) + float(q_mu[qi] @ q_mu[qi])
                 + var_sum[idx] + q_vs[qi])
            top = idx[np.argsort(d)[:k]]
            np_t.append(time.perf_counter() - t0)
            want = set(tile_ids[top].tolist())
            tiles_in.append(len(idx))
            t0 = time.perf_counter()
            got = c.execute("SELECT tile_id FROM psm.rank_tiles(%s, psm.region_from_text(%s), 5, 6, NULL,"
                            " NULL, 1, %s, 'exact')", (qids[qi], wkt, k)).fetchall()
            ex_t.append(time.perf_counter() - t0)
            agree.append(len({r[0] for r in got} & want) / k)
            t0 = time.perf_counter()
            got = c.execute("SELECT tile_id FROM psm.rank_tiles(%s, psm.region_from_text(%s), 5, 6, NULL,"
                            " NULL, 1, %s)", (qids[qi], wkt, k)).fetchall()
            auto_t.append(time.perf_counter() - t0)
            auto_recall.append(len({r[0] for r in got} & want) / k)
            if not args.skip_ann:
                t0 = time.perf_counter()
                got = c.execute("SELECT tile_id FROM psm.rank_tiles(%s, psm.region_from_text(%s), 5, 6, NULL,"
                                " NULL, 1, %s, 'ann')", (qids[qi], wkt, k)).fetchall()
                ann_t.append(time.perf_counter() - t0)
                ann_recall.append(len({r[0] for r in got} & want) / k)
        out["state_polygon"] = {
            "tiles_in_polygon_median": int(statistics.median(tiles_in)),
            "pg_exact": {**_ms(ex_t), "recall_vs_numpy": round(statistics.mean(agree), 4)},
            "pg_auto": {**_ms(auto_t), "recall_vs_exact": round(statistics.mean(auto_recall), 4)},
            "pg_ann_forced": ({**_ms(ann_t), "recall_vs_exact": round(statistics.mean(ann_recall), 4)}
                              if ann_t else None),
            "numpy_masked": _ms(np_t),
        }
        print("state", out["state_polygon"], flush=True)

    # FAISS HNSW on the very same augmented vectors [mu, sqrt(var_sum)]
    if not (args.skip_ann or args.skip_faiss):
        _faiss(args, out, mu, var_sum, tile_ids, q_mu, q_vs, truth, truth_kth, k)
    _whole_map(args, out, url, n, qids)
    out["sizes"] = _sizes(url)
    _save("query", out)


def _faiss(args, out, mu, var_sum, tile_ids, q_mu, q_vs, truth, truth_kth, k) -> None:
    import faiss

    n = len(tile_ids)
    faiss.omp_set_num_threads(args.faiss_threads)
    aug = np.empty((n, D + 1), dtype=np.float32)
    aug[:, :D] = mu
    aug[:, D] = np.sqrt(var_sum)
    built = _results().get("index", {})  # the same graph parameters as the PostgreSQL index
    m, efc = int(built.get("m", 16)), int(built.get("ef_construction", 64))
    index = faiss.IndexHNSWFlat(D + 1, m)
    index.hnsw.efConstruction = efc
    t0 = time.perf_counter()
    index.add(aug)
    build = time.perf_counter() - t0
    del aug
    faiss.omp_set_num_threads(1)
    qa = np.concatenate([q_mu, np.zeros((len(q_mu), 1), dtype=np.float32)], axis=1)
    out["faiss_hnsw"] = {"build_seconds": round(build, 1), "build_threads": args.faiss_threads,
                         "m": m, "ef_construction": efc, "sweep": []}
    for ef in (int(x) for x in args.faiss_ef.split(",")):
        index.hnsw.efSearch = ef
        f_times, f_rec, f_err = [], [], []
        for i in range(len(q_mu)):
            t0 = time.perf_counter()
            dist, labels = index.search(qa[i:i + 1], k)
            f_times.append(time.perf_counter() - t0)
            f_rec.append(len(set(tile_ids[labels[0]].tolist()) & set(truth[i].tolist())) / k)
            f_err.append((float(dist[0, -1]) + q_vs[i]) / truth_kth[i] - 1.0)
        out["faiss_hnsw"]["sweep"].append({"ef_search": ef, **_ms(f_times),
                                           "recall_at_100": round(statistics.mean(f_rec), 4),
                                           "kth_distance_rel_error": float(f"{statistics.mean(f_err):.2e}")})
        print("faiss", out["faiss_hnsw"]["sweep"][-1], flush=True)
    del index


def _whole_map(args, out, url, n, qids) -> None:

    # whole map: ~100k tiles from a stored query to numpy arrays through psm_db.ranking.map_scores
    from shapely.geometry import box
    from sqlalchemy.orm import Session

    from psm_db import ranking
    from psm_db.engine import make_engine
    from psm_model.condition import Condition

    rows, cols = grid_shape(n)
    side = math.sqrt(args.map_tiles)
    w, h = side * (LON1 - LON0) / cols, side * (LAT1 - LAT0) / rows
    engine = make_engine(url)
    cold, warm, m_len = [], [], 0
    with Session(engine) as s:
        for i in range(args.map_repeats):
            # a different region each round, so "cold" also finds the tiles cold in the database
            region = box(-100.0 + 0.37 * i, 35.0 - 0.21 * i, -100.0 + 0.37 * i + w, 35.0 - 0.21 * i + h)
            ranking.maps._LAYOUTS.clear()
            for j, times in enumerate((cold, warm, warm)):
                t0 = time.perf_counter()
                m = ranking.map_scores(session=s, query_id=qids[(3 * i + j) % len(qids)], region=region,
                                       condition=Condition(month=5, hour=6))
                times.append(time.perf_counter() - t0)
                m_len = len(m)
                s.rollback()
    engine.dispose()
    out["whole_map"] = {"cold_region": _ms(cold), "cached_region": _ms(warm), "tiles": m_len}
    print("map", out["whole_map"], flush=True)


# --------------------------------------------------------------------------- storage


def cmd_storage(args: argparse.Namespace) -> None:
    """Compare vector (default TOAST), vector with STORAGE PLAIN, and halfvec on a subset."""
    _, url = _urls()
    n = args.rows
    out: dict = {"rows": n}
    with _connect(url, autocommit=True) as c:
        c.execute("SET jit = off")
        q = c.execute("SELECT mu, var_sum FROM psm.queries WHERE name = 'bench' ORDER BY id LIMIT 1").fetchone()
        variants = {
            "vector_toast": ("vector(512)", "", ()),
            "vector_mu_inline": ("vector(512)", " WITH (toast_tuple_target = 4080)",
                                 ("mu SET STORAGE MAIN", "var SET STORAGE EXTERNAL")),
            "vector_plain": ("vector(512)", "", ("mu SET STORAGE PLAIN", "var SET STORAGE PLAIN")),
            "halfvec": ("halfvec(512)", "", ()),
        }
        for name, (vtype, options, alters) in variants.items():
            if args.only and name not in args.only.split(","):
                continue
            table = f"bench_storage_{name}"
            c.execute(f"DROP TABLE IF EXISTS {table}")
            c.execute(f"CREATE UNLOGGED TABLE {table} (tile_id bigint, mu {vtype}, var {vtype},"
                      f" var_sum float8){options}")
            for alter in alters:
                c.execute(f"ALTER TABLE {table} ALTER COLUMN {alter}")
            cast = "::halfvec(512)" if name == "halfvec" else ""
            t0 = time.perf_counter()
            c.execute(f"INSERT INTO {table} SELECT tile_id, mu{cast}, var{cast}, var_sum FROM psm.embeddings"
                      f" ORDER BY tile_id LIMIT %s", (n,))
            load = time.perf_counter() - t0
            c.execute(f"VACUUM ANALYZE {table}")
            size = c.execute(f"SELECT pg_total_relation_size('{table}')").fetchone()[0]
            qv = f"%s::vector{cast}"
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                c.execute(f"SELECT tile_id FROM {table} ORDER BY "
                          f"vector_l2_squared_distance(mu, {qv}) + var_sum LIMIT 100"
                          if name != "halfvec" else
                          f"SELECT tile_id FROM {table} ORDER BY (mu <-> {qv})^2 + var_sum LIMIT 100",
                          (q[0],)).fetchall()
                times.append(time.perf_counter() - t0)
            out[name] = {"mb": round(size / (1 << 20)), "insert_s": round(load, 1),
                         "exact_top100_ms": round(1000 * statistics.median(times), 1)}
            print(name, out[name], flush=True)
            c.execute(f"DROP TABLE {table}")
    _save("storage", {**_results().get("storage", {}), **out})


# --------------------------------------------------------------------------- load test


def cmd_load_test(args: argparse.Namespace) -> None:
    from shapely.geometry import box

    _, url = _urls()
    qids = _store_queries(url, 50)
    with _connect(url) as c:
        if not c.execute("SELECT 1 FROM psm.region_sets WHERE name = 'bench_counties'").fetchone():
            c.execute("INSERT INTO psm.region_sets (name, description) VALUES ('bench_counties', "
                      "'10 x 10 county-sized boxes (0.5 deg)')")
            for i in range(10):
                for j in range(10):
                    g = box(-98 + i * 0.5, 38 + j * 0.5, -97.5 + i * 0.5, 38.5 + j * 0.5)
                    c.execute("INSERT INTO psm.regions (set_name, name, geom) VALUES ('bench_counties', %s,"
                              " ST_Multi(ST_GeomFromText(%s, 4326)))", (f"county {i}-{j}", g.wkt))
            c.commit()
    rng = np.random.default_rng(3)
    city_boxes = [(x, y, x + 0.8, y + 0.6) for x, y in zip(rng.uniform(-120, -70, 64), rng.uniform(28, 46, 64),
                                                            strict=True)]
    state_boxes = _state_boxes(rng, 64)
    stop_at = time.perf_counter() + args.seconds
    lat: dict[str, list[float]] = {"tiles_city": [], "tiles_state": [], "tiles_country": [], "regions": []}
    errors: list[str] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            conn = psycopg.connect(_settings().url_as("psm_reader", url), autocommit=True)
        except psycopg.Error as e:
            with lock:
                errors.append(str(e))
            return
        with conn:
            while time.perf_counter() < stop_at:
                qid = int(r.choice(qids))
                kind = r.choice(["tiles_city", "tiles_state", "tiles_country", "regions"], p=[0.35, 0.2, 0.25, 0.2])
                t0 = time.perf_counter()
                try:
                    if kind == "regions":
                        rows = conn.execute("SELECT * FROM psm.rank_regions(%s, 'bench_counties', 5, 6, NULL, NULL,"
                                            " 1, 20, %s)", (qid, str(r.choice(["mean", "max", "share"])))).fetchall()
                    else:
                        bx = (city_boxes if kind == "tiles_city" else state_boxes)[int(r.integers(64))]
                        region = None if kind == "tiles_country" else box(*bx).wkt
                        rows = conn.execute(
                            "SELECT tile_id, distance FROM psm.rank_tiles(%s, psm.region_from_text(%s), 5, 6,"
                            " NULL, NULL, 1, 100)", (qid, region)).fetchall()
                    if not rows:
                        raise RuntimeError(f"{kind}: empty ranking")
                except Exception as e:  # noqa: BLE001 - every error counts against the run
                    with lock:
                        errors.append(f"{kind}: {e}")
                    continue
                with lock:
                    lat[kind].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    every = [x for xs in lat.values() for x in xs]
    out = {
        "clients": args.clients, "seconds": round(wall, 1), "queries": len(every),
        "throughput_qps": round(len(every) / wall, 1), "errors": len(errors),
        "p50_ms": round(1000 * _pct(every, 50), 1), "p95_ms": round(1000 * _pct(every, 95), 1),
        "p99_ms": round(1000 * _pct(every, 99), 1),
        "by_kind": {k: {"n": len(v), "p50_ms": round(1000 * _pct(v, 50), 1), "p99_ms": round(1000 * _pct(v, 99), 1)}
                    for k, v in lat.items() if v},
        "first_errors": errors[:5],
    }
    _save("load_test", out)


def cmd_report(_args: argparse.Namespace) -> None:
    print(json.dumps(_results(), indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("load")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--source", default="", help="real embeddings (bench/real_embeddings.py) to draw like")
    p.add_argument("--real-only", action="store_true", help="load the real rows themselves (--rows = their number)")
    p = sub.add_parser("index")
    p.add_argument("--m", type=int, default=DEFAULT_M)
    p.add_argument("--ef-construction", type=int, default=DEFAULT_EF_CONSTRUCTION)
    p.add_argument("--mem", default=None, help="maintenance_work_mem (default: sized to the graph)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--key", default="vector", choices=["vector", "halfvec"])
    p = sub.add_parser("query")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--exact-full", type=int, default=5)
    p.add_argument("--regions", type=int, default=30)
    p.add_argument("--map-tiles", type=int, default=100_000)
    p.add_argument("--map-repeats", type=int, default=7)
    p.add_argument("--faiss-threads", type=int, default=2)
    p.add_argument("--faiss-ef", default="100,200,400,1000,2000")
    p.add_argument("--ann-sweep", default="100:100,200:200,400:200,1000:200,1000:500,1000:1000")
    p.add_argument("--sweep-queries", type=int, default=100)
    p.add_argument("--skip-ann", action="store_true", help="exact paths and maps only (no index needed)")
    p.add_argument("--skip-faiss", action="store_true")
    p = sub.add_parser("storage")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", default="", help="comma-separated variants")
    p = sub.add_parser("load-test")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60.0)
    sub.add_parser("report")
    args = parser.parse_args()
    os.environ.setdefault("PSM_HOME", str(ROOT / ".psm"))
    {"load": cmd_load, "index": cmd_index, "query": cmd_query, "storage": cmd_storage,
     "load-test": cmd_load_test, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
