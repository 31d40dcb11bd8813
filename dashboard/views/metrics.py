"""Retrieval metrics page: evaluation runs in the paper's table layout, recall curves and rank histograms."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from matplotlib.figure import Figure

from dashboard import store, widgets
from psm_db.settings import get_settings

DIRECTIONS = {"i2a": "I2A", "a2i": "A2I"}


def paper_table(metrics: pd.DataFrame, scorer: str = "model") -> pd.DataFrame:
    """Rows (zoom, with text, metadata) x columns (I2A, A2I) x (R@10%, median rank), as in the paper.

    The oracle's R@10% sits beside the model's when the run has oracle rows.
    """
    if metrics.empty:
        return pd.DataFrame()
    m = metrics[metrics["scorer"] == scorer].copy()
    if m.empty:
        return pd.DataFrame()
    m["direction"] = m["direction"].map(DIRECTIONS).fillna(m["direction"])
    wide = m.pivot_table(index=["zoom", "with_text", "metadata"], columns="direction",
                         values=["r_at_10", "median_rank"], aggfunc="first")
    wide = wide.rename(columns={"r_at_10": "R@10%", "median_rank": "median rank"}, level=0)
    wide = wide.swaplevel(0, 1, axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    oracle = metrics[metrics["scorer"] == "oracle"]
    if scorer == "model" and not oracle.empty:
        o = oracle.assign(direction=oracle["direction"].map(DIRECTIONS).fillna(oracle["direction"]))
        o = o.pivot_table(index=["zoom", "with_text", "metadata"], columns="direction", values="r_at_10",
                          aggfunc="first")
        for d in o.columns:
            wide[(d, "oracle R@10%")] = o[d]
        wide = wide.sort_index(axis=1, level=0, sort_remaining=False)
    order = [(d, k) for d in ("I2A", "A2I") for k in ("R@10%", "median rank", "oracle R@10%")
             if (d, k) in wide.columns]
    wide = wide[order + [c for c in wide.columns if c not in order]]
    wide.index = wide.index.set_names(["zoom", "with text", "metadata"])
    return wide.reset_index()


def ranks_of(run: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per-query ranks of a run, keyed like ``psm_model.evaluate.rank_key`` (``model/i2a/z1/text/all``).

    They are read from ``results["ranks"]`` (a dict of lists) or from a ``ranks.npz`` that
    ``results["ranks_path"]``, ``results["files"]["ranks"]`` or ``config["ranks_path"]`` names.
    Runs stored by ``psm eval`` keep only the metric rows, so this is often empty.
    """
    results, config = run.get("results") or {}, run.get("config") or {}
    ranks = results.get("ranks")
    if isinstance(ranks, dict) and ranks:
        return {k: np.asarray(v, dtype=np.float64) for k, v in ranks.items() if isinstance(v, list) and v}
    for path in (results.get("ranks_path"), (results.get("files") or {}).get("ranks"), config.get("ranks_path"),
                 run.get("ranks_file")):
        if isinstance(path, str) and Path(path).is_file():
            return load_ranks(path)
    return {}


def load_ranks(path: str) -> dict[str, np.ndarray]:
    """Every array of a ``ranks.npz`` written by ``psm eval``."""
    with np.load(path) as npz:
        return {k: npz[k].astype(np.float64) for k in npz.files}


def find_ranks_file(model_version: str, eval_dir: Path) -> str | None:
    """The newest ``ranks.npz`` under ``eval_dir/*/`` whose ``results.json`` names this model version."""
    import json

    found = []
    for res in eval_dir.glob("*/results.json"):
        try:
            version = json.loads(res.read_text()).get("version")
        except (OSError, ValueError):
            continue
        ranks = res.parent / "ranks.npz"
        if version == model_version and ranks.is_file():
            found.append((ranks.stat().st_mtime, str(ranks)))
    return max(found)[1] if found else None


def pick_ranks(ranks: dict[str, np.ndarray], zoom: int, with_text: bool, metadata: str) -> dict[str, np.ndarray]:
    """The model's I2A and A2I ranks of one setting (or every direction-only key)."""
    text = "text" if with_text else "notext"
    out = {d: ranks[f"model/{d}/z{zoom}/{text}/{metadata}"] for d in DIRECTIONS
           if f"model/{d}/z{zoom}/{text}/{metadata}" in ranks}
    return out or {d: ranks[d] for d in DIRECTIONS if d in ranks}


def recall_curve(ranks: np.ndarray, n: int, ks: np.ndarray) -> np.ndarray:
    """Recall at k% of the gallery: share of queries whose rank < k/100 * n."""
    return np.array([(ranks < k / 100.0 * n).mean() for k in ks])


def _png(fig: Figure) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plots(runs: list[tuple[str, dict[str, Any], pd.DataFrame]]) -> None:
    """Recall against k% and a histogram of ranks, for one setting, for each run that stored ranks."""
    have = [(label, run, ranks_of(run), m) for label, run, m in runs]
    if not any(r for _, _, r, _ in have):
        st.info("These evaluation runs stored no per-query ranks (psm eval keeps them in ranks.npz, not in "
                "the database), so only the tables are shown: recall against k% and the rank histogram "
                "need the ranks.")
        return
    first = next(m for _, _, r, m in have if r)
    c1, c2, c3 = st.columns(3)
    zoom = c1.selectbox("Plot zoom", sorted(first["zoom"].unique().tolist()), key="plot_zoom")
    with_text = c2.selectbox("Plot text", [False, True], index=1, key="plot_text",
                             format_func=lambda t: "with text" if t else "without text")
    metas = sorted(first["metadata"].unique().tolist())
    metadata = c3.selectbox("Plot metadata", metas, index=metas.index("all") if "all" in metas else 0,
                            key="plot_meta")
    ks = np.linspace(0.5, 100, 200)
    fig = Figure(figsize=(6, 3.4), dpi=90)
    ax = fig.add_subplot(1, 1, 1)
    hist = Figure(figsize=(6, 3.4), dpi=90)
    hx = hist.add_subplot(1, 1, 1)
    drawn = 0
    for label, _run, ranks, m in have:
        for d, r in pick_ranks(ranks, zoom, with_text, metadata).items():
            rows = m[(m["direction"] == d) & (m["scorer"] == "model")]
            n = int(rows["n"].iloc[0]) if not rows.empty else int(r.max())
            ax.plot(ks, recall_curve(r, n, ks), label=f"{label} {DIRECTIONS[d]}")
            hx.hist(r, bins=40, alpha=0.5, label=f"{label} {DIRECTIONS[d]}")
            drawn += 1
    if not drawn:
        st.info("No stored ranks for this setting; pick another zoom, text or metadata setting.")
        return
    ax.axvline(10, color="grey", ls=":", lw=1)
    ax.set_xlabel("k (% of the gallery)")
    ax.set_ylabel("recall")
    ax.legend(fontsize=7)
    hx.set_xlabel("rank of the true match")
    hx.set_ylabel("queries")
    hx.legend(fontsize=7)
    c1, c2 = st.columns(2)
    c1.image(_png(fig), caption="Recall against k%")
    c2.image(_png(hist), caption="Histogram of ranks")
    missing = [label for label, _, r, _ in have if not r]
    if missing:
        st.caption(widgets.plain(f"No per-query ranks stored for: {', '.join(missing)}."))


def run_block(model: dict[str, Any], key: str) -> tuple[str, dict[str, Any], pd.DataFrame] | None:
    """Pick one evaluation run of a model and show its tables."""
    runs = store.eval_runs(model["version"])
    if not runs:
        st.info(f"Model {widgets.plain(model['name'])} has no evaluation runs yet (`psm evaluate`).")
        return None
    by_id = {r["id"]: dict(r) for r in runs}
    rid = st.selectbox("Evaluation run", list(by_id), key=f"{key}_run",
                       format_func=lambda i: f"#{i} {by_id[i]['dataset']}/{by_id[i]['split']} "
                                             f"({by_id[i]['created_at']:%Y-%m-%d %H:%M})")
    if not ranks_of(by_id[rid]):  # psm eval keeps per-query ranks on disk: find them, or take a path
        found = find_ranks_file(model["version"], get_settings().home / "eval")
        path = st.text_input("Per-query ranks (ranks.npz of psm eval, for the plots)", value=found or "",
                             key=f"{key}_ranks")
        if path.strip():
            if Path(path).is_file():
                by_id[rid]["ranks_file"] = path.strip()
            else:
                st.error(f"No file {widgets.plain(path)}: give the ranks.npz that `psm eval --out DIR` wrote.")
    metrics = store.eval_metrics(rid)
    if metrics.empty:
        st.warning(f"Run #{rid} has no metric rows.")
        return None
    zooms = sorted(metrics["zoom"].unique().tolist())
    zoom = st.multiselect("Zoom", zooms, default=zooms, key=f"{key}_zoom")
    text = st.radio("Text", ["with and without", "with text", "without text"], horizontal=True, key=f"{key}_text")
    m = metrics[metrics["zoom"].isin(zoom)]
    if text != "with and without":
        m = m[m["with_text"] == (text == "with text")]
    table = paper_table(m)
    st.dataframe(table, hide_index=True, key=f"{key}_table")
    ablation = m[(m["scorer"] == "model")].pivot_table(index="metadata", columns="direction", values="r_at_10",
                                                     aggfunc="mean")
    st.caption("Metadata ablation: mean R@10% over the zooms and text settings shown")
    st.dataframe(ablation.rename(columns=DIRECTIONS), key=f"{key}_ablation")
    return widgets.model_label(model), by_id[rid], m


def page() -> None:
    """The page body."""
    st.title("Retrieval metrics")
    models = store.models()
    if not models:
        st.warning("No model version is registered yet.")
        return
    compare = st.toggle("Compare two models side by side", key="compare", value=len(models) > 1)
    blocks = []
    cols = st.columns(2) if compare else [st.container()]
    for i, col in enumerate(cols):
        with col:
            model = widgets.model_picker(key=f"metrics_model_{i}", label=f"Model {i + 1}" if compare else "Model",
                                         index=i)
            if compare and i == 1 and model is not None and len(models) > 1 and model["version"] == blocks_version(blocks):
                st.caption("Both sides show the same model; pick another to compare.")
            if model is not None:
                b = run_block(model, f"m{i}")
                if b is not None:
                    blocks.append(b)
    if blocks:
        plots(blocks)


def blocks_version(blocks: list[tuple[str, dict[str, Any], pd.DataFrame]]) -> str | None:
    """The model version of the first block, if any."""
    return blocks[0][1]["model_version"] if blocks else None


widgets.guard(page)
